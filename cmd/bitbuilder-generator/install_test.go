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
			// The man pages and completions are the committed ones, where man and the shells look.
			for src, dst := range map[string]string{
				"man/bbctl.1":            "share/man/man1/bbctl.1",
				"man/bitbuilderd.8":      "share/man/man8/bitbuilderd.8",
				"completions/bbctl.bash": "share/bash-completion/completions/bbctl",
				"completions/_bbctl":     "share/zsh/vendor-completions/_bbctl",
				"completions/bbctl.fish": "share/fish/vendor_completions.d/bbctl.fish",
			} {
				want, err := os.ReadFile(filepath.Join("../../packaging", src))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(stage, prefix, dst))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s%s is not packaging/%s: %v", prefix, dst, src, err)
				}
			}
			// bash-completion loads the installed file by the command's name; it registers bbctl.
			bash := testpolicy.RequireTool(t, "bash")
			out, err = exec.CommandContext(t.Context(), bash, "-c", `source "$1" && complete -p bbctl`, "bash",
				filepath.Join(stage, prefix, "share/bash-completion/completions/bbctl")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "complete -F _bbctl bbctl") {
				t.Errorf("the installed bash completion does not register bbctl: %v\n%s", err, out)
			}
			// zsh finds _bbctl on its $fpath, fish completes bbctl from its vendor directory, and
			// man finds both pages under the prefix.
			zsh := testpolicy.RequireTool(t, "zsh")
			out, err = exec.CommandContext(t.Context(), zsh, "-fc", `fpath=($1 $fpath); autoload -Uz compinit; compinit -u -d "$2"; print -r -- $_comps[bbctl]`, "zsh",
				filepath.Join(stage, prefix, "share/zsh/vendor-completions"), filepath.Join(t.TempDir(), "zcompdump")).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "_bbctl" {
				t.Errorf("zsh does not load the installed completion for bbctl: %v\n%s", err, out)
			}
			fish := testpolicy.RequireTool(t, "fish")
			cmd := exec.CommandContext(t.Context(), fish, "--no-config", "-c", `set fish_complete_path $argv[1] $fish_complete_path; complete -C"bbctl ten"`,
				filepath.Join(stage, prefix, "share/fish/vendor_completions.d"))
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			if out, err = cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "tenant\t") {
				t.Errorf("fish does not complete bbctl from the installed file: %v\n%s", err, out)
			}
			man := testpolicy.RequireTool(t, "man")
			out, err = exec.CommandContext(t.Context(), man, "-M", filepath.Join(stage, prefix, "share/man"), "-w", "bbctl", "bitbuilderd").CombinedOutput()
			if err != nil || strings.Count(string(out), "\n") != 2 {
				t.Errorf("man does not find the installed pages: %v\n%s", err, out)
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
