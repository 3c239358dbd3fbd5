package testhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Environment variables read by the harness.
const (
	// EnvBuild, when set to anything, lets New and Start build the rootfs with prepare.sh (about a minute, needs
	// the network) instead of failing with ErrNoRootfs.
	EnvBuild = "BITBUILDER_TESTHOST_BUILD"
	// EnvRequire, when set to anything, makes Start and Shared.Host fail the test instead of skipping it when the
	// machine cannot run hosts (not root, rootfs not built). CI sets it.
	EnvRequire = "BITBUILDER_TESTHOST_REQUIRE"
	// EnvCache is prepare.sh's cache directory (default /var/cache/bitbuilder-test).
	EnvCache = "BITBUILDER_TEST_CACHE"
)

// LocateRootfs returns the cached rootfs that prepare.sh built for the current recipe. It is shared by every
// host on the machine: read it, never write to it (to run its tools, boot a host: it takes about 1.4 s). When it is missing it
// builds it if build is true (running prepare.sh, which needs root and the network), and returns an error
// wrapping ErrNoRootfs otherwise.
func LocateRootfs(ctx context.Context, build bool) (string, error) {
	out, err := runPrepare(ctx, "--locate")
	if err == nil {
		return out, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		return "", fmt.Errorf("testhost: prepare.sh --locate: %w", err)
	}
	if !build {
		return "", ErrNoRootfs
	}
	if out, err = runPrepare(ctx); err != nil {
		return "", fmt.Errorf("%w: prepare.sh failed: %w", ErrNoRootfs, err)
	}
	return out, nil
}

// runPrepare runs the embedded prepare.sh and returns the last line of its stdout.
func runPrepare(ctx context.Context, args ...string) (string, error) {
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", prepareScript, "prepare.sh"}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		if e.Len() > 0 {
			return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(e.String()))
		}
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(o.String()), "\n")
	return lines[len(lines)-1], nil
}
