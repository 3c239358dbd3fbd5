package units

import (
	"errors"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// systemdEscape runs the real systemd-escape on inputs and returns its outputs, one per input.
func systemdEscape(t *testing.T, path bool, inputs ...string) []string {
	t.Helper()
	bin := testpolicy.RequireTool(t, "systemd-escape")
	args := []string{}
	if path {
		args = append(args, "--path")
	}
	args = append(args, "--")
	args = append(args, inputs...)
	out, err := exec.CommandContext(t.Context(), bin, args...).Output()
	if err != nil {
		t.Fatalf("systemd-escape %q: %v", inputs, err)
	}
	// Escaped strings never contain white space, so the space-separated output splits unambiguously.
	got := strings.Fields(string(out))
	if len(got) != len(inputs) {
		t.Fatalf("systemd-escape returned %d words for %d inputs: %q", len(got), len(inputs), out)
	}
	return got
}

var escapeCases = []string{
	"acme", "acme-prod", "a.b", ".hidden", "a..b", "-lead", "trail-", "a/b", "/abs/path/", "a b", "tab\there",
	"back\\slash", "colon:ok", "under_score", "ütf-8", "\xff\xfe", "100%", "$HOME", "quote\"'", "semi;colon",
	"new\nline", "@at", "x@y.service", "ALLCAPS", "0123456789", "~tilde", "*?[]", "..", ".", "/", "//",
}

func TestEscapeMatchesSystemdEscape(t *testing.T) {
	want := systemdEscape(t, false, escapeCases...)
	for i, in := range escapeCases {
		if got := Escape(in); got != want[i] {
			t.Errorf("Escape(%q) = %q, systemd-escape says %q", in, got, want[i])
		}
	}
}

var pathCases = []string{
	"/", "//", "/.", "/./", "/var/lib/bitbuilder", "/var/lib/bitbuilder/", "//var//lib", "/var/./lib/.",
	"/.hidden/x", "/a-b/c.d", "/tenants/acme-prod/merged/usr", "/with space/x", "/ü/\\", "relative/path",
	"./rel", "a/.", "/a/b:c", "/50%", "",
}

func TestEscapePathMatchesSystemdEscape(t *testing.T) {
	want := systemdEscape(t, true, pathCases...)
	for i, in := range pathCases {
		got, err := EscapePath(in)
		if err != nil {
			t.Errorf("EscapePath(%q): %v, systemd-escape --path says %q", in, err, want[i])
			continue
		}
		if got != want[i] {
			t.Errorf("EscapePath(%q) = %q, systemd-escape --path says %q", in, got, want[i])
		}
	}
}

// TestEscapePathRefusesWhatSystemdRefuses checks the paths systemd-escape --path fails on, one call each.
func TestEscapePathRefusesWhatSystemdRefuses(t *testing.T) {
	bin := testpolicy.RequireTool(t, "systemd-escape")
	for _, in := range []string{"/a/..", "/../x", "a/../b", ".", "./", "./.", "/a/../../b"} {
		sysErr := exec.CommandContext(t.Context(), bin, "--path", "--", in).Run()
		if sysErr == nil {
			t.Errorf("systemd-escape --path %q succeeded; this case expects it to fail", in)
		}
		if _, err := EscapePath(in); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("EscapePath(%q) error = %v, want ErrInvalidPath", in, err)
		}
	}
}

// TestEscapeRandom compares Escape and EscapePath with systemd-escape on random byte strings.
func TestEscapeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab-/._:\\ %$\"'\x01\x7f\xc3\xbc\xffZ9@"
	var inputs, paths []string
	for range 300 {
		var b strings.Builder
		for range 1 + r.IntN(12) {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
		p := "/" + strings.ReplaceAll(b.String(), "..", "x")
		if strings.HasSuffix(p, "/.") {
			p += "y"
		}
		paths = append(paths, p)
	}
	want := systemdEscape(t, false, inputs...)
	for i, in := range inputs {
		if got := Escape(in); got != want[i] {
			t.Errorf("Escape(%q) = %q, systemd-escape says %q", in, got, want[i])
		}
	}
	want = systemdEscape(t, true, paths...)
	for i, in := range paths {
		if got, err := EscapePath(in); err != nil || got != want[i] {
			t.Errorf("EscapePath(%q) = %q, %v; systemd-escape --path says %q", in, got, err, want[i])
		}
	}
}

func TestQuoteArg(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"--machine=acme-infra", "--machine=acme-infra"},
		{"/var/lib/x:/run/y", "/var/lib/x:/run/y"},
		{"", `""`},
		{"a b", `"a b"`},
		{`{"name":"acme"}`, `"{\"name\":\"acme\"}"`},
		{"50%", `"50%%"`},
		{"$HOME", `"$$HOME"`},
		{`back\slash`, `"back\\slash"`},
		{"new\nline", `"new\x0aline"`},
		{";", `";"`},
		{"it's", `"it's"`},
		{"ü", `"ü"`},
		{"\xff", `"\xff"`},
	}
	for _, tt := range tests {
		if got := quoteArg(tt.in); got != tt.want {
			t.Errorf("quoteArg(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestUnescapeRoundTrip(t *testing.T) {
	for _, s := range []string{"a", "shop-web", "x---y-db", "a.b_c:d", "/x/y"} {
		if got := Unescape(Escape(s)); got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
	}
}
