package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/cli"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// bbctlOutput runs bbctl in-process and returns its standard output.
func bbctlOutput(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), args, bytes.NewReader(stdin), &out, &errb); code != 0 {
		t.Fatalf("bbctl %q: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

func compareCommitted(t *testing.T, path, got string) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go generate ./cmd/bbctl writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s is not what the help text gives: run go generate ./cmd/bbctl and commit it", path)
	}
}

// TestGeneratedFilesCurrent checks that the committed man pages and completion scripts are
// what the help text gives now: bbctl.1 from bbctl's commands, bitbuilderd.8 from what a
// freshly built bitbuilderd prints for -h (which must exit 0), the completions from bbctl's.
func TestGeneratedFilesCurrent(t *testing.T) {
	compareCommitted(t, "../../packaging/man/bbctl.1", bbctlOutput(t, nil, "__man", "bbctl"))
	for shell, file := range map[string]string{"bash": "bbctl.bash", "zsh": "_bbctl", "fish": "bbctl.fish"} {
		compareCommitted(t, filepath.Join("../../packaging/completions", file), bbctlOutput(t, nil, "completion", shell))
	}

	testpolicy.Short(t, "builds bitbuilderd")
	bin := filepath.Join(t.TempDir(), "bitbuilderd")
	if out, err := exec.Command("go", "build", "-o", bin, "../bitbuilderd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, h := range []string{"-h", "--help"} {
		help, err := exec.Command(bin, h).CombinedOutput()
		if err != nil {
			t.Fatalf("bitbuilderd %s: %v\n%s", h, err, help)
		}
		if !strings.Contains(string(help), "-no-host") || strings.Contains(string(help), "help requested") {
			t.Errorf("bitbuilderd %s printed:\n%s", h, help)
		}
		compareCommitted(t, "../../packaging/man/bitbuilderd.8", bbctlOutput(t, help, "__man", "bitbuilderd"))
	}
	// Every flag of the daemon is in its page.
	page, _ := os.ReadFile("../../packaging/man/bitbuilderd.8")
	for _, f := range []string{`\-\-no\-host`, `\-\-socket`, `\-\-template\-max\-entries`, `\-\-version`} {
		if !strings.Contains(string(page), `\fB`+f+`\fR`) {
			t.Errorf("bitbuilderd.8 lacks %s", f)
		}
	}
}
