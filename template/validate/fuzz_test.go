package validate

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseRelease checks that any input parses without panicking, that every finding is a syntax rule with
// a message, that valid input without findings round-trips through quoting, and that keys are valid.
func FuzzParseRelease(f *testing.F) {
	for _, s := range []string{
		"ID=debian\nVERSION_ID=11.04\n", "NAME=\"a b\"\n", "A='x'\n", "A=\"a\\\"b\"\n", "=invalid\n", "IN VALID=x\n",
		"A=\"unterminated\n", "A=a\\\nb\n", "A=\"a\"\"b\"\n", "ID=x\r\n", "A=\xff\n", "#c\n\n  B=c",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, fs := ParseRelease(data)
		for _, fd := range fs {
			if !strings.HasPrefix(fd.Rule, "B") || fd.Message == "" || fd.Severity == "" {
				t.Fatalf("bad finding %+v", fd)
			}
		}
		for k, v := range rel {
			if !validKey(k) {
				t.Fatalf("invalid key %q kept", k)
			}
			if len(fs) == 0 && utf8.ValidString(v) {
				// A clean file's values survive a round trip through double quotes.
				quoted := k + "=\"" + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`").Replace(v) + "\"\n"
				again, _ := ParseRelease([]byte(quoted))
				if again[k] != v {
					t.Fatalf("round trip of %q: %q", v, again[k])
				}
			}
		}
	})
}
