package main

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestInstallLayout runs packaging/install.mk into a staging root for two prefixes and compares the installed
// tree (paths and modes) with testdata/install-PREFIX.golden; the programs are placeholders, install.mk only
// copies them. It also checks that the daemon unit names the daemon where it was installed.
func TestInstallLayout(t *testing.T) {
	testpolicy.RequireTool(t, "make")
	bin := t.TempDir()
	for _, p := range []string{"bitbuilderd", "bbctl", "bitbuilder-generator"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, prefix := range []string{"/usr", "/usr/local"} {
		t.Run(prefix, func(t *testing.T) {
			stage := t.TempDir()
			out, err := exec.CommandContext(t.Context(), "make", "-s", "-f", "../../packaging/install.mk", "install",
				"DESTDIR="+stage, "PREFIX="+prefix, "BB_BIN="+bin).CombinedOutput()
			if err != nil {
				t.Fatalf("make install: %v\n%s", err, out)
			}
			var b bytes.Buffer
			err = filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
				if err != nil || p == stage {
					return err
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				fmt.Fprintf(&b, "%v %s\n", info.Mode(), strings.TrimPrefix(p, stage))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "install-"+strings.ReplaceAll(strings.Trim(prefix, "/"), "/", "-")+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update creates it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("installed tree differs from %s:\n--- got\n%s--- want\n%s", golden, b.Bytes(), want)
			}
			unit, err := os.ReadFile(filepath.Join(stage, prefix, "lib/systemd/system/bitbuilderd.service"))
			if err != nil {
				t.Fatal(err)
			}
			if want := "\nExecStart=" + prefix + "/lib/bitbuilder/bitbuilderd "; !strings.Contains(string(unit), want) {
				t.Errorf("bitbuilderd.service lacks %q", strings.TrimSpace(want))
			}
		})
	}
	// Without the built programs, install refuses and says why.
	out, err := exec.CommandContext(t.Context(), "make", "-s", "-f", "../../packaging/install.mk", "install",
		"DESTDIR="+t.TempDir(), "BB_BIN="+t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is missing (run make build first)") {
		t.Errorf("install without binaries: %v\n%s", err, out)
	}
}
