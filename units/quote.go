package units

import (
	"strings"
	"unicode/utf8"
)

// quoteArg renders one argument of an Exec*= line so that systemd hands exactly s to the program
// (systemd.service(5), "Command lines"): a word made only of plain characters is written as it is; anything else is
// put in double quotes, where "\" and `"` are backslash-escaped, control characters (and the bytes of invalid UTF-8)
// become \xNN C escapes, "%" is doubled against specifier expansion and "$" is doubled against environment
// variable substitution.
func quoteArg(s string) string {
	var b strings.Builder
	writeArg(&b, s)
	return b.String()
}

// argWriter is what writeArg writes to (a strings.Builder or a bytes.Buffer).
type argWriter interface {
	WriteByte(byte) error
	WriteString(string) (int, error)
}

// writeArg writes quoteArg(s) to b.
func writeArg(b argWriter, s string) {
	if s != "" && plainWord(s) {
		b.WriteString(s)
		return
	}
	const hex = "0123456789abcdef"
	valid := utf8.ValidString(s)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '%':
			b.WriteString("%%")
		case c == '$':
			b.WriteString("$$")
		case c < 0x20 || c == 0x7f || c >= 0x80 && !valid:
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// plainWord reports whether s needs no quoting: only characters that have no meaning to systemd's command line
// parser, its specifier expansion or its variable substitution.
func plainWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./:=,+@-", c) >= 0) {
			return false
		}
	}
	return true
}

// writeExec writes argv as the value of an Exec*= setting. argv[0] must be an absolute path (checked by Config).
func writeExec(b argWriter, argv ...string) {
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeArg(b, a)
	}
}
