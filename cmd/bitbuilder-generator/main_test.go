package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/units"
)

// generatorBin is the generator built once for the tests of this package.
var generatorBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bitbuilder-generator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	generatorBin = filepath.Join(dir, "bitbuilder-generator")
	if out, err := exec.Command("go", "build", "-o", generatorBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runGenerator runs the built generator with the registry at reg and returns its exit code and stderr.
func runGenerator(t *testing.T, reg string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), generatorBin, args...)
	cmd.Env = []string{"BITBUILDER_REGISTRY=" + reg, "SYSTEMD_LOG_TARGET=console", "PATH=/nonexistent"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run generator: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// generatedTenants returns the names of the tenants whose tenant@ unit is in dir, and every entry of dir.
func generatedTenants(t *testing.T, dir string) (tenants, all []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		all = append(all, e.Name())
		if s, ok := strings.CutPrefix(e.Name(), "tenant@"); ok {
			tenants = append(tenants, strings.TrimSuffix(s, ".service"))
		}
	}
	sort.Strings(tenants)
	return tenants, all
}

func TestGeneratorRegistries(t *testing.T) {
	valid3 := `{"version":1,"tenants":[
		{"name":"alpha","networkIndex":1,"infra":true,"running":true},
		{"name":"beta-2","networkIndex":2,"sysext":["tools"],"confext":["net"],"running":true},
		{"name":"gamma","networkIndex":3,"running":false}]}`
	tests := []struct {
		name     string
		registry *string // nil: no file
		tenants  string  // escaped names with a tenant@ unit, space separated
		logs     []string
	}{
		{"valid", &valid3, `alpha beta\x2d2 gamma`, []string{"generated 10 units for 3 tenants", "(0 entries skipped)"}},
		{"missing", nil, "", []string{"no tenants generated: boot registry missing"}},
		{"empty", ptr(""), "", []string{"no tenants generated: boot registry empty"}},
		{"truncated mid-write", ptr(valid3[:len(valid3)-40]), "", []string{"no tenants generated: boot registry truncated"}},
		{"not JSON", ptr("alpha\nbeta\n"), "", []string{"no tenants generated: boot registry malformed"}},
		{"seed format", ptr(`{"tenants":[{"id":"t1"}]}`), "", []string{`boot registry malformed: no "version"`}},
		{"newer version", ptr(`{"version":9,"tenants":[]}`), "", []string{"boot registry version unsupported: version 9"}},
		{"duplicates and hostile names", ptr(`{"version":1,"tenants":[
			{"name":"alpha","networkIndex":1,"running":true},
			{"name":"alpha","networkIndex":2,"running":true},
			{"name":"delta","networkIndex":1},
			{"name":"../../escape","networkIndex":4,"running":true},
			{"name":"/etc/passwd","networkIndex":5},
			{"name":"a/b","networkIndex":6},
			{"name":"..","networkIndex":7},
			{"name":"sp ace","networkIndex":8},
			{"name":"x-y-z","networkIndex":9,"running":true}]}`), `alpha x\x2dy\x2dz`, []string{
			`skipped registry entry 1 ("alpha"): duplicate tenant: name already used by entry 0`,
			`skipped registry entry 2 ("delta"): duplicate tenant: network index 1 already used by tenant "alpha"`,
			`skipped registry entry 3 ("../../escape"): invalid tenant name`,
			`skipped registry entry 4 ("/etc/passwd"): invalid tenant name`,
			`skipped registry entry 5 ("a/b"): invalid tenant name`,
			`skipped registry entry 6 (".."): invalid tenant name`,
			`skipped registry entry 7 ("sp ace"): invalid tenant name`,
			"generated 6 units for 2 tenants", "(7 entries skipped)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			normal, early, late := filepath.Join(root, "normal"), filepath.Join(root, "early"), filepath.Join(root, "late")
			for _, d := range []string{normal, early, late} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			reg := filepath.Join(root, "registry.json")
			if tt.registry != nil {
				if err := os.WriteFile(reg, []byte(*tt.registry), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, log := runGenerator(t, reg, normal, early, late)
			if code != 0 {
				t.Fatalf("exit %d, want 0; log:\n%s", code, log)
			}
			for _, want := range tt.logs {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
				if !strings.HasPrefix(line, "bitbuilder-generator: ") {
					t.Errorf("log line without the prefix: %q", line)
				}
			}
			tenants, _ := generatedTenants(t, normal)
			if got := strings.Join(tenants, " "); got != tt.tenants {
				t.Errorf("generated tenants %q, want %q", got, tt.tenants)
			}
			// Nothing outside the normal directory: early and late stay empty, the root holds only what we made.
			for _, d := range []string{early, late} {
				if entries, _ := os.ReadDir(d); len(entries) != 0 {
					t.Errorf("%s has %d entries, want none", filepath.Base(d), len(entries))
				}
			}
			entries, _ := os.ReadDir(root)
			want := 3
			if tt.registry != nil {
				want = 4
			}
			if len(entries) != want {
				t.Errorf("test root has %d entries, want %d: something was written outside the generator directory", len(entries), want)
			}
		})
	}
}

// TestGeneratorOutputIsRender checks that the binary writes exactly package units' output.
func TestGeneratorOutputIsRender(t *testing.T) {
	root := t.TempDir()
	reg := units.Registry{Version: units.RegistryVersion, Tenants: []units.RegistryTenant{
		{Name: "acme-prod", NetworkIndex: 7, Infra: true, Sysext: []string{"a"}, Confext: []string{"b"}, Running: true},
	}}
	regPath := filepath.Join(root, "r.json")
	if err := units.WriteRegistry(regPath, reg); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, log := runGenerator(t, regPath, out); code != 0 {
		t.Fatalf("exit %d: %s", code, log)
	}
	want, err := units.Render(reg.Tenants[0].Tenant(), units.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, all := generatedTenants(t, out)
	if len(all) != len(want)+1 { // + multi-user.target.wants
		t.Errorf("wrote %q, want %d units and the wants directory", all, len(want))
	}
	for _, u := range want {
		got, err := os.ReadFile(filepath.Join(out, u.Name))
		if err != nil || !bytes.Equal(got, u.Content) {
			t.Errorf("%s: %v, content differs from units.Render", u.Name, err)
		}
	}
}

func TestGeneratorDoesNothingInInitrd(t *testing.T) {
	root := t.TempDir()
	reg := filepath.Join(root, "r.json")
	if err := os.WriteFile(reg, []byte(`{"version":1,"tenants":[{"name":"a","networkIndex":1,"running":true}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), generatorBin, out)
	cmd.Env = []string{"BITBUILDER_REGISTRY=" + reg, "SYSTEMD_LOG_TARGET=console", "SYSTEMD_IN_INITRD=1"}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("in the initrd the generator wrote %d entries, want none", len(entries))
	}
}

// kmsgRecords runs the generator without SYSTEMD_LOG_TARGET (so it logs to /dev/kmsg) on the registry at reg and
// returns the kernel log records it wrote that contain marker. It skips without access to the kernel log.
func kmsgRecords(t *testing.T, reg, marker string) []string {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	testpolicy.RequireNoError(t, err, "cannot read the kernel log (needs root)")
	defer syscall.Close(fd)
	_, err = syscall.Seek(fd, 0, io.SeekEnd)
	testpolicy.RequireNoError(t, err, "cannot seek the kernel log")
	cmd := exec.CommandContext(t.Context(), generatorBin, t.TempDir())
	cmd.Env = []string{"BITBUILDER_REGISTRY=" + reg}
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Errorf("wrote to stderr although /dev/kmsg is writable: %q", stderr.String())
	}
	var records []string
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EPIPE { // records were overwritten while we read: go on with the next
			continue
		}
		if err != nil {
			break
		}
		// A record is "PRIORITY,SEQ,TIME,FLAGS;MESSAGE\n".
		if _, msg, ok := strings.Cut(string(buf[:n]), ";"); ok && strings.Contains(msg, marker) {
			records = append(records, strings.TrimSpace(msg))
		}
	}
	return records
}

// TestGeneratorLogsToKmsg checks that without SYSTEMD_LOG_TARGET=console the log goes to the kernel log, one
// record per line with the prefix, nothing to stderr, and that many skipped entries are summed up so that the
// summary is not lost to the kernel's rate limit of 10 records per burst.
func TestGeneratorLogsToKmsg(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "kmsg-missing-registry.json")
	got := kmsgRecords(t, missing, missing)
	want := "bitbuilder-generator: no tenants generated: boot registry missing: open " + missing + ": no such file or directory"
	if len(got) != 1 || got[0] != want {
		t.Errorf("kernel log records %q, want [%q]", got, want)
	}

	marker := fmt.Sprintf("KMSG%d", time.Now().UnixNano()) // upper case: an invalid tenant name
	var entries []string
	for i := range 20 {
		entries = append(entries, fmt.Sprintf(`{"name":"%s-%d","networkIndex":%d}`, marker, i, i+1))
	}
	entries = append(entries, `{"name":"fine","networkIndex":100}`)
	bad := filepath.Join(dir, marker+".json")
	if err := os.WriteFile(bad, []byte(`{"version":1,"tenants":[`+strings.Join(entries, ",")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	got = kmsgRecords(t, bad, marker)
	if len(got) != kmsgMaxSkipLines+2 {
		t.Fatalf("%d kernel log records, want %d listed entries, the count of the rest and the summary:\n%s", len(got), kmsgMaxSkipLines, strings.Join(got, "\n"))
	}
	for i, r := range got[:kmsgMaxSkipLines] {
		if want := fmt.Sprintf(`bitbuilder-generator: skipped registry entry %d ("%s-%d"): invalid tenant name`, i, marker, i); !strings.HasPrefix(r, want) {
			t.Errorf("record %d = %q, want it to start with %q", i, r, want)
		}
	}
	if want := fmt.Sprintf("bitbuilder-generator: %d more entries of %s skipped", 20-kmsgMaxSkipLines, bad); !strings.HasPrefix(got[kmsgMaxSkipLines], want) {
		t.Errorf("record %q, want it to start with %q", got[kmsgMaxSkipLines], want)
	}
	if want := "bitbuilder-generator: generated 3 units for 1 tenants from " + bad + " (20 entries skipped)"; got[kmsgMaxSkipLines+1] != want {
		t.Errorf("summary %q, want %q", got[kmsgMaxSkipLines+1], want)
	}
}

func TestGeneratorUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"a", "b"}, {"a", "b", "c", "d"}} {
		code, log := runGenerator(t, filepath.Join(t.TempDir(), "r.json"), args...)
		if code != 2 || !strings.Contains(log, "usage: bitbuilder-generator NORMAL-DIR") {
			t.Errorf("args %q: exit %d, log %q; want exit 2 and usage", args, code, log)
		}
	}
	// A generator directory that does not exist is an error systemd should see.
	reg := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(reg, []byte(`{"version":1,"tenants":[{"name":"a","networkIndex":1}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, log := runGenerator(t, reg, filepath.Join(t.TempDir(), "missing")); code != 1 {
		t.Errorf("missing directory: exit %d, want 1; log %q", code, log)
	}
}

func ptr(s string) *string { return &s }
