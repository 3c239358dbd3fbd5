package testhost

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashEnv = "BBTEST_CRASH_STATEDIR"

// TestCrashHelper is run by TestCrashedTestProcess in a child process: it boots a host, prints its footprint and
// dies by SIGKILL without stopping it.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("only run as TestCrashedTestProcess's child")
	}
	h, err := New(t.Context(), Options{Name: "crash", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("FOOTPRINT %s %s %d %s\n", h.state, h.cgroup, h.Leader(), h.current().started)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func TestCrashedTestProcess(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(ee.String(), "killed") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var fp footprint
	var started string
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "FOOTPRINT "); ok {
			if _, err := fmt.Sscan(rest, &fp.state, &fp.cgroup, &fp.leader, &started); err != nil {
				t.Fatal(err)
			}
		}
	}
	if fp.state == "" {
		t.Fatalf("helper printed no footprint:\n%s", out)
	}
	// The parent-death signal shuts the container down.
	err = eventually(t.Context(), 30*time.Second, func() error {
		if st := startTime(strconv.Itoa(fp.leader)); st != "" && st == started {
			return errors.New("the container outlived its test process")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fp.cgroup); err != nil {
		t.Fatalf("nothing for the sweeper to do (cgroup %s: %v): this test checks nothing", fp.cgroup, err)
	}
	// The next New sweeps what the dead host left (once its systemd-nspawn has been reaped).
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	err = eventually(t.Context(), 30*time.Second, func() error {
		sweep(dir, log)
		if _, err := os.Lstat(fp.state); err == nil {
			return errors.New("state dir still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(fp.cgroup); err == nil {
		t.Errorf("cgroup %s still there after the sweep", fp.cgroup)
	}
}

func TestSweepSparesLiveHosts(t *testing.T) {
	dir := t.TempDir()
	h := Start(t, Options{Name: "live", StateDir: dir})
	sweep(dir, slog.New(slog.DiscardHandler))
	if _, err := os.Stat(h.state); err != nil {
		t.Fatalf("sweep removed a live host's state: %v", err)
	}
	if _, err := os.Stat(h.cgroup); err != nil {
		t.Fatalf("sweep removed a live host's cgroup: %v", err)
	}
	if got := run(t, h, "systemctl", "is-system-running"); got != "running" && got != "degraded" {
		t.Fatalf("host after sweep: %q", got)
	}
}
