package validate

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  Release  // nil: values not checked
		rules []string // rule:severity of every finding, sorted
	}{
		{name: "plain", in: "ID=debian\nVERSION_ID=11.04\n", want: Release{"ID": "debian", "VERSION_ID": "11.04"}},
		{name: "quotes", in: "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME='a b'\n", want: Release{"NAME": "Debian GNU/Linux", "PRETTY_NAME": "a b"}},
		{name: "comments and blanks", in: "# comment\n\n   \nID=x\n  # indented comment\n", want: Release{"ID": "x"}},
		{name: "unquoted safe specials", in: "A=a.b_c-d/e:f,g+h@i%j=k\n", want: Release{"A": "a.b_c-d/e:f,g+h@i%j=k"}},
		{name: "empty values", in: "A=\nB=\"\"\nC=''\n", want: Release{"A": "", "B": "", "C": ""}},
		{name: "double quote escapes", in: `A="\$ \` + "`" + ` \\ \" \n"` + "\n", want: Release{"A": "$ ` \\ \" \\n"}},
		{name: "single quotes keep backslashes", in: `A='a\b'` + "\n", want: Release{"A": `a\b`}},
		{name: "trailing whitespace stripped", in: "ID=the-id  \nNAME=the-name", want: Release{"ID": "the-id", "NAME": "the-name"}},
		{name: "leading whitespace before key", in: "  ID=x\n", want: Release{"ID": "x"}},
		{name: "utf-8 values", in: "NAME=\"ąęół śćńźżμ\"\n", want: Release{"NAME": "ąęół śćńźżμ"}},
		{name: "no final newline", in: "ID=x", want: Release{"ID": "x"}},
		// test-os-util.c style: a repeated key, the later value wins.
		{name: "repeated key", in: "ID=\"ignored\"  \nID=\"the-id\"  \nNAME='the-name'", want: Release{"ID": "the-id", "NAME": "the-name"}, rules: []string{"B15:error"}},
		// test-env-file.c env_file_1 inputs.
		{name: "continuation", in: "a=a\nb=b\\\nc\n", want: Release{"a": "a", "b": "bc"}, rules: []string{"B16:warning"}},
		{name: "escaped space unquoted", in: "g=g\\ \nh=h\n", want: Release{"g": "g ", "h": "h"}, rules: []string{"B13:error"}},
		{name: "trailing backslash at EOF", in: "i=i\\", want: Release{"i": "i"}, rules: []string{"B13:error"}},
		{name: "space after equals", in: "d= d\n", rules: []string{"B13:error"}},
		{name: "comment ending in backslash does not continue", in: "#a comment \\\nnormal1=line\n", want: Release{"normal1": "line"}},
		{name: "semicolon line", in: ";normal=ignored\nID=x\n", want: Release{"ID": "x"}, rules: []string{"B12:error"}},
		// CPython test_platform rejected lines.
		{name: "=invalid", in: "=invalid\nID=x\n", want: Release{"ID": "x"}, rules: []string{"B12:error"}},
		{name: "=", in: "=\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "INVALID", in: "INVALID\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "IN-VALID=value", in: "IN-VALID=value\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "IN VALID=value", in: "IN VALID=value\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "digit first key", in: "1A=x\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "space before equals", in: "ID =x\n", want: Release{}, rules: []string{"B12:error"}},
		{name: "invalid utf-8", in: "NAME=\"\xff\xfe\"\n", rules: []string{"B11:error"}},
		{name: "unquoted whitespace", in: "NAME=Debian GNU\n", want: Release{"NAME": "Debian GNU"}, rules: []string{"B13:error"}},
		{name: "unquoted dollar", in: "A=$HOME\n", rules: []string{"B13:error"}},
		{name: "unquoted semicolon", in: "A=a;b\n", rules: []string{"B13:error"}},
		{name: "unquoted hash inside", in: "A=a#b\n", rules: []string{"B13:error"}},
		{name: "unquoted braces", in: "A={x}\n", rules: []string{"B13:error"}},
		{name: "unterminated double", in: "A=\"abc\n", rules: []string{"B14:error", "B16:warning"}},
		{name: "unterminated single", in: "A='abc", rules: []string{"B14:error"}},
		{name: "concatenated quotes", in: "A=\"a\"\"b\"\n", want: Release{"A": "ab"}, rules: []string{"B14:error"}},
		{name: "quote then text", in: "A=\"a\"b\n", want: Release{"A": "ab"}, rules: []string{"B14:error"}},
		{name: "text then quote", in: "A=a\"b\"\n", want: Release{"A": "ab"}, rules: []string{"B14:error"}},
		{name: "CR line endings", in: "ID=x\r\nVERSION_ID=1\r\n", want: Release{"ID": "x", "VERSION_ID": "1"}, rules: []string{"B16:warning"}},
		{name: "continuation in quotes", in: "A=\"a\\\nb\"\n", want: Release{"A": "ab"}, rules: []string{"B16:warning"}},
		{name: "multi-line quoted value", in: "A=\"a\nb\"\nID=x\n", want: Release{"A": "a\nb", "ID": "x"}, rules: []string{"B16:warning"}},
		{name: "control character", in: "A=\"a\x01b\"\n", rules: []string{"B16:warning"}},
		{name: "control character unquoted", in: "A=a\x7fb\n", rules: []string{"B16:warning"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rel, fs := ParseRelease([]byte(tc.in))
			if tc.want != nil && !maps.Equal(rel, tc.want) {
				t.Errorf("values = %q, want %q", rel, tc.want)
			}
			var got []string
			for _, f := range fs {
				got = append(got, f.Rule+":"+string(f.Severity))
				if f.Message == "" {
					t.Errorf("finding %s without message", f.Rule)
				}
			}
			slices.Sort(got)
			got = slices.Compact(got)
			if !slices.Equal(got, tc.rules) {
				t.Errorf("findings = %v, want %v\n%v", got, tc.rules, fs)
			}
		})
	}
}

func TestParseReleaseLineNumbers(t *testing.T) {
	_, fs := ParseRelease([]byte("ID=x\n\n# c\nA=\"multi\nline\"\nB=a b\n"))
	if len(fs) != 2 {
		t.Fatalf("findings: %v", fs)
	}
	var b13 Finding
	for _, f := range fs {
		if f.Rule == "B13" {
			b13 = f
		}
	}
	if !strings.HasPrefix(b13.Message, "line 6:") {
		t.Errorf("B13 message %q does not name line 6", b13.Message)
	}
}
