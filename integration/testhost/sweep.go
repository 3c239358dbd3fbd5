package testhost

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A test process killed before it could call Stop (go test's timeout, SIGKILL) takes its hosts down with it:
// systemd-nspawn gets SIGTERM as its parent-death signal and shuts the container down. What it cannot remove is
// the host's cgroup and temporary directory. Every host therefore records its owner, the test process that made
// it, in STATE/owner, and New sweeps the state directories whose owner is gone (and whose cgroup is empty: the
// container may still be shutting down).

const ownerFile = "owner"

// orphanAge is how old a state directory without an owner file must be before it counts as abandoned (its
// creator died between making it and writing the owner file).
const orphanAge = 10 * time.Minute

// writeOwner records in the state directory which process owns it and which cgroup goes with it.
func writeOwner(state string, pid int, cgroup string) error {
	data := fmt.Sprintf("%d %s %s\n", pid, startTime(strconv.Itoa(pid)), cgroup)
	if err := os.WriteFile(filepath.Join(state, ownerFile), []byte(data), 0o644); err != nil {
		return fmt.Errorf("testhost: state dir: %w", err)
	}
	return nil
}

// sweep removes the state directories (and cgroups) of hosts whose systemd-nspawn has died without Stop.
func sweep(stateDir string, log *slog.Logger) {
	if stateDir == "" {
		stateDir = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(stateDir, "bbtest-*"))
	for _, dir := range dirs {
		if !abandoned(dir) {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, ownerFile))
		f := strings.Fields(string(data))
		if len(f) == 3 && strings.HasPrefix(filepath.Base(f[2]), "nspawn-") {
			if populated(f[2]) {
				continue // something still runs in it: leave it to its owner
			}
			if err := removeCgroup(f[2], 0); err != nil {
				log.Warn("sweep: cgroup of a dead host", "cgroup", f[2], "error", err)
				continue
			}
		}
		if err := removeState(dir); err != nil {
			log.Warn("sweep: state dir of a dead host", "dir", dir, "error", err)
			continue
		}
		log.Info("swept the leftovers of a dead host", "dir", dir)
	}
}

// abandoned reports whether the host of a state directory is dead.
func abandoned(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		// Only a directory laid out as New lays it out, and old.
		for _, sub := range []string{"upper", "work", "root"} {
			if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
				return false
			}
		}
		fi, err := os.Stat(dir)
		return err == nil && time.Since(fi.ModTime()) > orphanAge
	}
	f := strings.Fields(string(data))
	if len(f) != 3 {
		return false
	}
	st := startTime(f[0])
	return st == "" || st != f[1]
}
