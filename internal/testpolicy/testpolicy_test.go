package testpolicy

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Each case runs in a child process, so that its skip or failure is observed from outside.
func TestRequire(t *testing.T) {
	if c := os.Getenv("TESTPOLICY_CASE"); c != "" {
		switch c {
		case "missing":
			Require(t, false, "the thing is missing")
		case "present":
			Require(t, true, "the thing is missing")
		case "tool":
			RequireTool(t, "no-such-tool-bitbuilder")
		}
		t.Log("ran past the requirement")
		return
	}
	for _, c := range []struct {
		name, env string
		fail      bool
		want      string
	}{
		{"missing", "", false, "--- SKIP"},
		{"missing", "1", true, "the thing is missing (and BITBUILDER_TESTHOST_REQUIRE=1 requires it)"},
		{"present", "1", false, "ran past the requirement"},
		{"present", "", false, "ran past the requirement"},
		{"tool", "", false, "no-such-tool-bitbuilder is not installed"},
		{"tool", "1", true, "no-such-tool-bitbuilder is not installed"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequire$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTPOLICY_CASE="+c.name, EnvRequire+"="+c.env)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != c.fail {
			t.Errorf("%s with %s=%q: failed %v, want %v\n%s", c.name, EnvRequire, c.env, failed, c.fail, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%s with %s=%q: output lacks %q:\n%s", c.name, EnvRequire, c.env, c.want, out)
		}
	}
}
