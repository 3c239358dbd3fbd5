package testhost

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GoBuild builds Go main packages of this module (paths relative to the module root, such as "./cmd/bitbuilderd")
// as static binaries into a new temporary directory and returns it, ready to bind into a host:
//
//	bin := testhost.GoBuild(t, "./cmd/bitbuilderd", "./cmd/bbctl")
//	h := testhost.Start(t, testhost.Options{Binds: []testhost.Bind{{Host: bin, Guest: "/opt/bitbuilder/bin", ReadOnly: true}}})
//
// A build failure fails t.
func GoBuild(t testing.TB, pkgs ...string) string {
	t.Helper()
	if len(pkgs) == 0 {
		t.Fatal("testhost.GoBuild: no packages")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	modFile, err := exec.CommandContext(t.Context(), goTool, "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(modFile)) == 0 || strings.TrimSpace(string(modFile)) == os.DevNull {
		t.Fatalf("testhost.GoBuild: not inside a Go module: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), goTool, append([]string{"build", "-trimpath", "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(modFile)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testhost.GoBuild %v: %v\n%s", pkgs, err, out)
	}
	return dir
}
