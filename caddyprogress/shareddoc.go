package caddyprogress

import (
	"bytes"
	"time"
)

// What goes to Redis of an upload is bounded: a record's document takes
// at most maxSharedDoc bytes (past it, the document goes without its
// files and says so with "files_truncated": true), and a group's hash
// and channel hold each member's document without files (summaryJSON).
// A multipart upload's whole document, files included, is served only
// by the instance that runs it.

// maxSharedDoc is the most an upload's document takes in Redis.
const maxSharedDoc = 64 << 10

// filesTruncated ends a document whose files were left out.
const filesTruncated = `,"files_truncated":true}`

// sharedDocOf is u's document as it goes to Redis, and the document it
// was made from (its state and version are the upload's): whole while
// it takes at most maxSharedDoc bytes, else without its files. A whole
// document is not made for Redis when it cannot fit (its parts' names
// alone are too long), nor when max_memory has no room for it: u's head
// stands in.
func (e *sharedEntry) docOf(u *upload, now time.Time) (*statusDoc, []byte) {
	if d := u.finalDoc.Load(); d != nil {
		return d, e.capped(d)
	}
	l := u.parts.Load()
	bound := int64(0)
	if l != nil {
		bound = l.filesBound()
	}
	if bound <= 2*maxSharedDoc { // the bound counts the list it is made from too
		if d := u.doc(now); d != nil {
			return d, e.capped(d)
		}
	}
	d := u.memberDoc(now)
	if d.summary.state.Final() || bound == 0 {
		return d, e.capped(d)
	}
	e.truncated.Add(1)
	return d, truncatedJSON(d)
}

// capped is d's JSON, whole if it takes at most maxSharedDoc bytes,
// else without its files.
func (e *sharedEntry) capped(d *statusDoc) []byte {
	if d.size() <= maxSharedDoc {
		return docJSON(d)
	}
	e.truncated.Add(1)
	return truncatedJSON(d)
}

// truncatedJSON is d's JSON without files, marked files_truncated.
func truncatedJSON(d *statusDoc) []byte {
	b := make([]byte, 0, len(d.head)+len(filesTruncated))
	b = append(b, d.head...)
	return append(b, filesTruncated...)
}

// summaryJSON is a status JSON without its "files" (what a group's
// hash and channel hold of a member, redistracker.Config.Summary); doc
// itself when it has none.
func summaryJSON(doc []byte) []byte {
	key := []byte(`,"files":[`)
	start := bytes.Index(doc, key) // never inside a string: its quotes would be escaped
	if start < 0 {
		return doc
	}
	end := start + len(key)
	depth, inString, escaped := 1, false, false
	for ; end < len(doc) && depth > 0; end++ {
		c := doc[end]
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
		case c == ']' || c == '}':
			depth--
		}
	}
	out := make([]byte, 0, len(doc)-(end-start))
	out = append(out, doc[:start]...)
	return append(out, doc[end:]...)
}
