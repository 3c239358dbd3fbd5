package testhost

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed prepare-vm.sh
var prepareVMScript string

// Environment variables read by the harness.
const (
	// EnvBuild, when set to anything, lets New and Start build the rootfs with prepare.sh (about a minute, needs
	// the network; prepare-vm.sh for the "vm" variant, a few minutes) instead of failing with ErrNoRootfs.
	EnvBuild = "BITBUILDER_TESTHOST_BUILD"
	// EnvRequire, when set to anything, makes Start and Shared.Host fail the test instead of skipping it when the
	// machine cannot run hosts (not root, rootfs not built). CI sets it.
	EnvRequire = "BITBUILDER_TESTHOST_REQUIRE"
	// EnvCache is prepare.sh's cache directory (default /var/cache/bitbuilder-test).
	EnvCache = "BITBUILDER_TEST_CACHE"
)

// Variants of the test host's rootfs (Options.Variant).
const (
	// VariantDefault is prepare.sh's tree: systemd 257, machined, networkd, nspawn.
	VariantDefault = ""
	// VariantVM is prepare-vm.sh's tree: the default one plus QEMU, virtiofsd, SeaBIOS and systemd-vmspawn (from
	// Debian sid, as /usr/local/bin/systemd-vmspawn), and a small guest at VMGuestDir, to boot real VMs under
	// QEMU's software emulation (no KVM, no vsock).
	VariantVM = "vm"
)

// VMGuestDir is where a VariantVM host holds its guest: a BitBuilder machine template (a Debian trixie minbase
// with systemd-networkd doing DHCP on en*/eth*) laid out as disk-image/boot/vmlinuz, disk-image/boot/initrd.img
// and disk-image/rootfs. Boot it with
//
//	systemd-vmspawn --directory=VMGuestDir/disk-image/rootfs --linux=VMGuestDir/disk-image/boot/vmlinuz \
//		--initrd=VMGuestDir/disk-image/boot/initrd.img --kvm=no --tpm=no --firmware=bios --secure-boot=no \
//		--pass-ssh-key=no --notify-ready=no --console=read-only --network-tap ...
//
// as a unit inside the host (systemd-run -p Type=notify -p TemporaryFileSystem=/run/systemd/machine:ro, so that
// vmspawn 262 registers with machined 257 over D-Bus); see the package doc and TestVMSpawnBoots. Like every file of
// the host, it is a copy-on-write view of the cache: the VM's writes vanish with the host.
const VMGuestDir = "/var/lib/bitbuilder-test/machine"

// LocateRootfs returns the cached rootfs that prepare.sh built for the current recipe. It is shared by every
// host on the machine: read it, never write to it (to run its tools, boot a host: it takes about 1.4 s). When it is missing it
// builds it if build is true (running prepare.sh, which needs root and the network), and returns an error
// wrapping ErrNoRootfs otherwise.
func LocateRootfs(ctx context.Context, build bool) (string, error) {
	return LocateVariant(ctx, VariantDefault, build)
}

// LocateVariant is LocateRootfs for a variant (VariantDefault or VariantVM): the VariantVM tree is built by
// prepare-vm.sh (which runs prepare.sh first).
func LocateVariant(ctx context.Context, variant string, build bool) (string, error) {
	script := "prepare.sh"
	switch variant {
	case VariantDefault:
	case VariantVM:
		script = "prepare-vm.sh"
	default:
		return "", invalid("variant %q: want %q or %q", variant, VariantDefault, VariantVM)
	}
	out, err := runPrepare(ctx, variant, "--locate")
	if err == nil {
		return out, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		return "", fmt.Errorf("testhost: %s --locate: %w", script, err)
	}
	if !build {
		if variant == VariantDefault {
			return "", ErrNoRootfs
		}
		return "", &NoVariantError{Variant: variant, Script: script}
	}
	if out, err = runPrepare(ctx, variant); err != nil {
		return "", fmt.Errorf("%w: %s failed: %w", ErrNoRootfs, script, err)
	}
	return out, nil
}

// runPrepare runs the embedded prepare.sh (or, for VariantVM, prepare-vm.sh next to a copy of prepare.sh in a
// temporary directory) and returns the last line of its stdout.
func runPrepare(ctx context.Context, variant string, args ...string) (string, error) {
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", prepareScript, "prepare.sh"}, args...)...)
	if variant == VariantVM {
		dir, err := os.MkdirTemp("", "bbtest-prepare-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir)
		for name, text := range map[string]string{"prepare.sh": prepareScript, "prepare-vm.sh": prepareVMScript} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				return "", err
			}
		}
		cmd = exec.CommandContext(ctx, "bash", append([]string{filepath.Join(dir, "prepare-vm.sh")}, args...)...)
	}
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
