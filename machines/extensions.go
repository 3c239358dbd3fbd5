package machines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Extension classes as systemd names its tools: systemd-sysext and systemd-confext.
const (
	ClassSysext  = "sysext"
	ClassConfext = "confext"
)

// ExtensionHierarchies are the top directories of an extension of class that its systemd tool merges: usr/ and
// opt/ for a sysext, etc/ for a confext. Nothing else of a template's checkout reaches a machine.
func ExtensionHierarchies(class string) []string {
	if class == ClassConfext {
		return []string{"etc"}
	}
	return []string{"usr", "opt"}
}

// LinkExtension makes dst (which must not exist) a copy of the hierarchies of class that the extension tree src
// has, as hard links (cp -al: no data copied, a few milliseconds for thousands of files), or as a copy where src
// and dst are on different file systems. The machine gets dst read-only, and the daemon never changes a checkout
// in place (a new pin is a new tree), so sharing the inodes is safe.
func LinkExtension(ctx context.Context, src, dst, class string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, top := range ExtensionHierarchies(class) {
		fi, err := os.Lstat(filepath.Join(src, top))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			continue // the validator warns (D34); systemd merges only directories
		}
		s, d := filepath.Join(src, top), filepath.Join(dst, top)
		out, err := exec.CommandContext(ctx, "cp", "-a", "-l", "--no-target-directory", s, d).CombinedOutput()
		if err != nil {
			RemoveTree(d)
			out2, err2 := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", "--no-target-directory", s, d).CombinedOutput()
			if err2 != nil {
				return fmt.Errorf("copy %s: %w: %s (hard links: %s)", s, err2, bytes.TrimSpace(out2), bytes.TrimSpace(out))
			}
		}
	}
	return nil
}

// Nsenter is the default path of nsenter(1).
const Nsenter = "/usr/bin/nsenter"

// ErrNoExtensionTool: the machine has no systemd-sysext or systemd-confext to merge its extensions with.
var ErrNoExtensionTool = errors.New("the machine has no systemd-sysext/systemd-confext")

// RefreshExtensions has the container whose leader is pid merge its extensions of class anew: it runs the
// container's own `systemd-<class> refresh` inside all of its namespaces (nsenter --all), which unmerges what was
// merged and merges what its /run/extensions (or /run/confexts) holds now, and reloads the container's service
// manager when an extension's release asks for it (EXTENSION_RELOAD_MANAGER=1). The mounts it makes live in the
// container's mount namespace and go with it. nsenter is the path of nsenter(1) ("" for Nsenter).
func RefreshExtensions(ctx context.Context, nsenter string, pid int, class string) error {
	if nsenter == "" {
		nsenter = Nsenter
	}
	if class != ClassSysext && class != ClassConfext {
		return fmt.Errorf("unknown extension class %q", class)
	}
	cmd := exec.CommandContext(ctx, nsenter, "--target", strconv.Itoa(pid), "--all", "--", "systemd-"+class, "refresh")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		// nsenter exits 127 when it cannot execute the command in the container (no such file).
		if errors.As(err, &ee) && ee.ExitCode() == 127 {
			return fmt.Errorf("%w: systemd-%s: %s", ErrNoExtensionTool, class, bytes.TrimSpace(out))
		}
		return fmt.Errorf("systemd-%s refresh in the machine (leader %d): %w: %s", class, pid, err, bytes.TrimSpace(out))
	}
	return nil
}
