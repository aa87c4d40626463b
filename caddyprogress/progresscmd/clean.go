package progresscmd

import (
	"strings"
	"unicode"
)

// printable replaces the control characters of s (escape sequences
// among them) with '?', keeping newlines and tabs when multiline: file
// names, errors and answers come from clients and backends, and must not
// drive the terminal that shows them.
func printable(s string, multiline bool) string {
	return strings.Map(func(r rune) rune {
		switch {
		case multiline && (r == '\n' || r == '\t'):
			return r
		case unicode.IsControl(r):
			return '?'
		}
		return r
	}, s)
}
