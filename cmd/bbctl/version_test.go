package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// TestOneVersionForBothBinaries builds bitbuilderd and bbctl exactly as `make build` does
// (its commands, printed by make -n, with the output directory changed) with a version of
// the test's, and checks that both binaries report that version.
func TestOneVersionForBothBinaries(t *testing.T) {
	testpolicy.Short(t, "builds the binaries")
	makePath := testpolicy.RequireTool(t, "make")
	const version = "v9.8.7-versiontest"
	cmd := exec.Command(makePath, "-n", "-s", "build", "VERSION="+version)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	var build string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " build ") && strings.Contains(line, "-o bin/") {
			build = line
		}
	}
	if build == "" {
		t.Fatalf("make -n build printed no go build command:\n%s", out)
	}
	dir := t.TempDir()
	build = strings.Replace(build, "-o bin/", "-o "+dir+"/", 1)
	build = strings.Replace(build, "./cmd/...", "./cmd/bitbuilderd ./cmd/bbctl", 1)
	sh := exec.Command("sh", "-c", build)
	sh.Dir = "../.."
	if b, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	for bin, want := range map[string]string{"bitbuilderd": version, "bbctl": "bbctl " + version} {
		got, err := exec.Command(filepath.Join(dir, bin), "--version").Output()
		if err != nil || strings.TrimSpace(string(got)) != want {
			t.Errorf("%s --version: %q, %v; want %q", bin, got, err, want)
		}
	}
}
