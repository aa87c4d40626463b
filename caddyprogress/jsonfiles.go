package caddyprogress

import (
	"strconv"
	"unicode/utf8"
)

// A document's file list is encoded here, not by encoding/json, so that
// its size is known before it is made: it is allocated once, at its
// exact size, and counted toward max_memory first (encoding/json grows
// a buffer by doubling and keeps it in a pool). The output is byte for
// byte what json.Marshal makes of the list (TestFilesEncodeAsJSONDoes).

// The parts of one file's JSON around its names and figures.
const (
	jsonFileOpen      = `{"field":`
	jsonFileName      = `,"filename":`
	jsonFileReceived  = `,"received":`
	jsonFileStatus    = `,"status":"`
	jsonFileClose     = `"}`
	jsonFilesOpen     = `,"files":[`
	jsonFilesClose    = `]`
	jsonNullJSON      = `null`
	maxInt64Len       = 20
	jsonFileFixedLen  = len(jsonFileOpen) + len(jsonFileName) + len(jsonFileReceived) + len(jsonFileStatus) + len(jsonFileClose) + 1 // and a comma
	jsonFileStatusLen = len(partUploading)                                                                                           // the longer of the two
)

// jsonFileStatusBytes is what one entry of a []FileStatus takes.
const jsonFileStatusBytes = 48

// filesJSONLen is the length of the files' JSON as appendFiles writes
// it: `,"files":[...]`.
func filesJSONLen(files []FileStatus) int {
	n := len(jsonFilesOpen) + len(jsonFilesClose)
	for i, f := range files {
		if i > 0 {
			n++
		}
		n += jsonFileFixedLen - 1 + jsonStringLen(f.Field) + len(f.Status)
		if f.Filename != nil {
			n += jsonStringLen(*f.Filename)
		} else {
			n += len(jsonNullJSON)
		}
		n += intLen(f.Received)
	}
	return n
}

// appendFiles appends the files' JSON, `,"files":[...]`, to b.
func appendFiles(b []byte, files []FileStatus) []byte {
	b = append(b, jsonFilesOpen...)
	for i, f := range files {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, jsonFileOpen...)
		b = appendJSONString(b, f.Field)
		b = append(b, jsonFileName...)
		if f.Filename != nil {
			b = appendJSONString(b, *f.Filename)
		} else {
			b = append(b, jsonNullJSON...)
		}
		b = append(b, jsonFileReceived...)
		b = strconv.AppendInt(b, f.Received, 10)
		b = append(b, jsonFileStatus...)
		b = append(b, f.Status...)
		b = append(b, jsonFileClose...)
	}
	return append(b, jsonFilesClose...)
}

// intLen is the length of n in decimal.
func intLen(n int64) int {
	l := 1
	if n < 0 {
		l++
		if n == -1<<63 {
			return maxInt64Len
		}
		n = -n
	}
	for ; n >= 10; n /= 10 {
		l++
	}
	return l
}

// fileJSONBound is the most one part's entry in the file list takes,
// its names' JSON lengths given (see jsonStringLen; nameless: 4, null).
func fileJSONBound(fieldJSON, filenameJSON int) int64 {
	return int64(jsonFileFixedLen + fieldJSON + filenameJSON + maxInt64Len + jsonFileStatusLen)
}

// jsonStringLen is the length of s as a JSON string, quotes included,
// escaped as encoding/json escapes it (HTML characters included).
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			switch {
			case htmlSafe(c):
				n++
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// appendJSONString appends s as a JSON string, as encoding/json writes
// it.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// htmlSafe reports whether encoding/json writes the ASCII byte c as it
// is: printable, and not one of " \ < > &.
func htmlSafe(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}
