package validate

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Release is the parsed content of an os-release or extension-release file: keys to unquoted values.
type Release map[string]string

// shellSpecials are the characters that must be quoted in a value (rule B13).
const shellSpecials = "$`\\\"';&|<>()*?[]#~!{}"

// ParseRelease parses an os-release or extension-release file and checks its syntax (rules B11-B16). The
// returned findings have an empty Path and say the line number in their message. Lines that are not valid
// assignments are reported and skipped; the values of the other lines are unquoted the way a shell (and
// systemd's parse_env_file) would, and a repeated key keeps its last value.
func ParseRelease(data []byte) (Release, []Finding) {
	p := releaseParser{data: data, rel: Release{}, seen: map[string]int{}, once: map[string]bool{}}
	p.parse()
	return p.rel, p.findings
}

type releaseParser struct {
	data     []byte
	i        int
	line     int
	rel      Release
	seen     map[string]int
	once     map[string]bool // rule+line already reported
	findings []Finding
}

func (p *releaseParser) report(rule string, sev Severity, line int, format string, args ...any) {
	k := fmt.Sprintf("%s:%d:%s", rule, line, format)
	if p.once[k] {
		return
	}
	p.once[k] = true
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		msg = fmt.Sprintf("line %d: %s", line, msg)
	}
	p.findings = append(p.findings, Finding{Rule: rule, Severity: sev, Message: msg})
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func (p *releaseParser) parse() {
	p.line = 1
	if !utf8.Valid(p.data) {
		bad, line := 0, 1
		for bad < len(p.data) {
			r, n := utf8.DecodeRune(p.data[bad:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			if p.data[bad] == '\n' {
				line++
			}
			bad += n
		}
		p.report("B11", SeverityError, line, "the file is not valid UTF-8 (byte 0x%02x at offset %d); write it in UTF-8", p.data[bad], bad)
	}
	if strings.IndexByte(string(p.data), '\r') >= 0 {
		p.report("B16", SeverityWarning, 0, "the file has CR (\\r) line endings or characters; use plain LF line endings")
	}
	for p.i < len(p.data) {
		for p.i < len(p.data) && isBlank(p.data[p.i]) {
			p.i++
		}
		if p.i >= len(p.data) {
			break
		}
		switch p.data[p.i] {
		case '\n':
			p.i++
			p.line++
			continue
		case '#':
			p.skipLine()
			continue
		}
		p.assignment()
	}
}

func (p *releaseParser) skipLine() {
	for p.i < len(p.data) && p.data[p.i] != '\n' {
		p.i++
	}
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func (p *releaseParser) assignment() {
	line := p.line
	start := p.i
	for p.i < len(p.data) && p.data[p.i] != '=' && p.data[p.i] != '\n' {
		p.i++
	}
	if p.i >= len(p.data) || p.data[p.i] == '\n' {
		p.report("B12", SeverityError, line, "%q is not a KEY=VALUE assignment; remove it or comment it out with '#'", truncate(string(p.data[start:p.i])))
		return
	}
	key := string(p.data[start:p.i])
	p.i++ // '='
	keyOK := validKey(key)
	if !keyOK {
		p.report("B12", SeverityError, line, "invalid key %q: a key matches [A-Za-z_][A-Za-z0-9_]* with no spaces around '='", truncate(key))
	}
	val := p.value(line)
	if !keyOK {
		return
	}
	if first, ok := p.seen[key]; ok {
		p.report("B15", SeverityError, line, "key %s is repeated (first on line %d); readers take the later value: keep one assignment", key, first)
	}
	p.seen[key] = line
	p.rel[key] = val
}

// value parses the value after '=' up to the end of its logical line.
func (p *releaseParser) value(line int) string {
	var b strings.Builder
	segments := 0 // quoted segments and unquoted runs
	inUnquoted := false
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '\n':
			return b.String()
		case c == '"' || c == '\'':
			if inUnquoted || segments > 0 {
				p.report("B14", SeverityError, line, "quoted strings are concatenated with other text (as in A=\"a\"\"b\" or A=\"a\"b); quote the whole value once")
			}
			inUnquoted = false
			segments++
			p.i++
			p.quoted(&b, c, line)
		case c == '\\':
			if p.i+1 < len(p.data) && p.data[p.i+1] == '\n' {
				p.report("B16", SeverityWarning, line, "backslash-newline continuation; put the value on one line")
				p.i += 2
				p.line++
				continue
			}
			p.report("B13", SeverityError, line, "unquoted backslash in the value; quote the value")
			if !inUnquoted {
				segments++
				inUnquoted = true
			}
			p.i++
			if p.i < len(p.data) {
				b.WriteByte(p.data[p.i])
				p.i++
			}
		case isBlank(c):
			j := p.i
			for j < len(p.data) && isBlank(p.data[j]) {
				j++
			}
			if j >= len(p.data) || p.data[j] == '\n' {
				p.i = j
				continue
			}
			p.report("B13", SeverityError, line, "whitespace in an unquoted value; quote the value (KEY=\"a b\")")
			b.Write(p.data[p.i:j])
			p.i = j
		default:
			if strings.IndexByte(shellSpecials, c) >= 0 {
				p.report("B13", SeverityError, line, "unquoted shell special character %q in the value; quote the value", string(c))
			} else if c < 0x20 || c == 0x7f {
				p.report("B16", SeverityWarning, line, "non-printable character 0x%02x in the value; remove it", c)
			}
			if !inUnquoted {
				segments++
				inUnquoted = true
				if segments > 1 {
					p.report("B14", SeverityError, line, "quoted strings are concatenated with other text (as in A=\"a\"\"b\" or A=\"a\"b); quote the whole value once")
				}
			}
			b.WriteByte(c)
			p.i++
		}
	}
	return b.String()
}

// quoted parses a quoted segment after its opening quote q.
func (p *releaseParser) quoted(b *strings.Builder, q byte, line int) {
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == q:
			p.i++
			return
		case c == '\\' && q == '"' && p.i+1 < len(p.data):
			n := p.data[p.i+1]
			switch {
			case n == '\n':
				p.report("B16", SeverityWarning, line, "backslash-newline continuation; put the value on one line")
				p.line++
			case strings.IndexByte("$`\\\"", n) >= 0:
				b.WriteByte(n)
			default:
				b.WriteByte('\\')
				b.WriteByte(n)
			}
			p.i += 2
		case c == '\n':
			p.report("B16", SeverityWarning, line, "a quoted value spans several lines; keep values on one line")
			p.line++
			b.WriteByte(c)
			p.i++
		default:
			if (c < 0x20 && c != '\t') || c == 0x7f {
				p.report("B16", SeverityWarning, line, "non-printable character 0x%02x in the value; remove it", c)
			}
			b.WriteByte(c)
			p.i++
		}
	}
	p.report("B14", SeverityError, line, "unterminated %c quote; close it on the same line", q)
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
