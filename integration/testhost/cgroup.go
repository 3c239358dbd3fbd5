package testhost

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup2Root returns where this mount namespace has the cgroup2 hierarchy mounted: /sys/fs/cgroup on a unified
// host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("testhost: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" && pf[3] == "/" {
			return pf[4], nil
		}
	}
	return "", fmt.Errorf("%w: no cgroup2 hierarchy is mounted on this machine", ErrNoRootfs)
}

// killCgroup kills every process in the cgroup tree (cgroup.kill, or SIGKILL to each process of older kernels).
func killCgroup(cg string) error {
	err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
	if err == nil || errors.Is(err, fs.ErrNotExist) && !exists(cg) {
		return nil
	}
	var errs []error
	_ = filepath.WalkDir(cg, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		for _, p := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(p); err == nil {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
					errs = append(errs, fmt.Errorf("testhost: kill %d: %w", pid, err))
				}
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// populated reports whether any process is left in the cgroup tree.
func populated(cg string) bool {
	data, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
	if err != nil {
		return false
	}
	return strings.Contains(string(data), "populated 1")
}

// removeCgroup waits until the cgroup tree is empty (killing what is left after wait) and removes it, deepest
// first.
func removeCgroup(cg string, wait time.Duration) error {
	if !exists(cg) {
		return nil
	}
	deadline := time.Now().Add(wait)
	killed := false
	for populated(cg) {
		if time.Now().After(deadline) {
			if killed {
				return fmt.Errorf("testhost: cgroup %s still has processes", cg)
			}
			_ = killCgroup(cg)
			killed, deadline = true, time.Now().Add(5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var dirs []string
	_ = filepath.WalkDir(cg, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- { // WalkDir lists parents before children
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("testhost: remove cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
