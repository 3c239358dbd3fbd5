package daemon

import (
	"strings"
	"testing"
)

// TestArtifactSourcesReachTheValidator: the administrator's allow-list (bitbuilderd --artifact-source) decides which
// host files a template may ask for; the example machine template's requests are on the default list only.
func TestArtifactSourcesReachTheValidator(t *testing.T) {
	count := func(sources []string) int {
		found, err := registryValidator(sources)(t.Context(), "../examples/templates/machine", "machine")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range found {
			if strings.Contains(f, " X2: ") {
				n++
			}
		}
		return n
	}
	if n := count(nil); n != 0 {
		t.Errorf("default list: %d artifact findings, want none", n)
	}
	if n := count([]string{"/usr/lib/bitbuilder/*"}); n == 0 {
		t.Error("a list without the kernel and systemd-boot still lets the template ask for them")
	}
}
