package testhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed prepare.sh
var prepareScript string

//go:embed boot.sh
var bootScript string

// Defaults of Options.
const (
	DefaultName        = "bbtest"
	DefaultBootTimeout = 60 * time.Second
	DefaultStopTimeout = 10 * time.Second
)

// guestEnv is the whole environment of commands run inside a host.
var guestEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LANG=C.UTF-8",
	"TERM=dumb",
	"SYSTEMD_PAGER=",
	"SYSTEMD_COLORS=0",
	"SYSTEMD_LOG_COLOR=0",
}

// reservedNspawnArgs are set by boot.sh; Options.NspawnArgs may not change them.
var reservedNspawnArgs = []string{"--boot", "--directory", "--machine", "--register", "--keep-unit",
	"--private-network", "--console", "--image", "--ephemeral", "--template", "--as-pid2", "--quiet"}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// Bind is a host directory or file made visible inside the test host (systemd-nspawn --bind / --bind-ro).
type Bind struct {
	Host     string // absolute path on the machine running the test; must exist
	Guest    string // absolute path inside the test host; created when missing
	ReadOnly bool
}

// Options configure one test host. The zero value is usable.
type Options struct {
	// Name is the prefix of the machine name and hostname; a random suffix makes each host unique, see
	// Host.Name. Lower-case letters, digits and '-', at most 40 characters. Default "bbtest".
	Name string
	// Binds are bind-mounted into the host before it boots.
	Binds []Bind
	// NspawnArgs are extra systemd-nspawn long options (e.g. "--setenv=FOO=bar"). Those the harness sets
	// (--boot, --directory, --machine, --private-network, --register, --keep-unit, --console, ...) are refused.
	NspawnArgs []string
	// Rootfs is the read-only lower directory of the host's root. Default: the tree prepare.sh cached, or the
	// one of Variant. When set, Variant is not used.
	Rootfs string
	// Variant selects the cached rootfs: VariantDefault ("", prepare.sh's tree) or VariantVM ("vm",
	// prepare-vm.sh's tree, which can boot VMs with systemd-vmspawn). Without that tree, Start skips (or fails
	// under BITBUILDER_TESTHOST_REQUIRE, or builds it under BITBUILDER_TESTHOST_BUILD) as for the default one.
	Variant string
	// StateDir is where the host's temporary directory (overlay upper dir, console log) is made. Default
	// os.TempDir(). It must not be on overlayfs.
	StateDir string
	// BootTimeout bounds the wait for `systemctl is-system-running`. Default DefaultBootTimeout.
	BootTimeout time.Duration
	// StopTimeout bounds the orderly shutdown in Stop before everything left is killed. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Logger receives progress messages. Default: discarded (Start logs to the test log).
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if o.Name != "" && !namePattern.MatchString(o.Name) {
		return invalid("name %q: want 1-40 of [a-z0-9-], starting with a letter or digit", o.Name)
	}
	for i, b := range o.Binds {
		if !filepath.IsAbs(b.Host) || !filepath.IsAbs(b.Guest) {
			return invalid("bind %d (%q -> %q): both paths must be absolute", i, b.Host, b.Guest)
		}
		if strings.ContainsAny(b.Host+b.Guest, ":\n") {
			return invalid("bind %d (%q -> %q): paths must not contain ':' or newlines", i, b.Host, b.Guest)
		}
		if filepath.Clean(b.Guest) == "/" {
			return invalid("bind %d: cannot bind over the guest's /", i)
		}
		if _, err := os.Stat(b.Host); err != nil {
			return invalid("bind %d: host path: %v", i, err)
		}
	}
	for _, a := range o.NspawnArgs {
		if !strings.HasPrefix(a, "--") {
			return invalid("nspawn argument %q: only long options (--name=value) are accepted", a)
		}
		name, _, _ := strings.Cut(a, "=")
		if slices.Contains(reservedNspawnArgs, name) {
			return invalid("nspawn argument %q: the harness sets %s itself", a, name)
		}
	}
	if o.Variant != VariantDefault && o.Variant != VariantVM {
		return invalid("variant %q: want %q or %q", o.Variant, VariantDefault, VariantVM)
	}
	if o.BootTimeout < 0 || o.StopTimeout < 0 {
		return invalid("negative timeout")
	}
	if o.Rootfs != "" {
		if !filepath.IsAbs(o.Rootfs) {
			return invalid("rootfs %q: must be absolute", o.Rootfs)
		}
		if _, err := os.Stat(filepath.Join(o.Rootfs, "usr/lib/systemd/systemd")); err != nil {
			return invalid("rootfs %q: no systemd in it: %v", o.Rootfs, err)
		}
	}
	return nil
}

// Host is one booted systemd 257 test host: a systemd-nspawn container with its own mount namespace, cgroup,
// network namespace and copy-on-write root. Its methods are safe for concurrent use; Reboot and Stop wait for each
// other, and commands running during a Reboot fail.
type Host struct {
	name    string
	rootfs  string
	opts    Options // validated, defaults filled in
	state   string  // temporary directory: upper, work, root, console.log, owner
	cgroup  string  // host path of the cgroup nspawn-<name>
	log     *slog.Logger
	console *os.File

	life sync.Mutex // serialises Reboot and Stop

	mu      sync.Mutex // guards what follows
	cur     *instance  // the current (or last) boot
	stopped bool
	stopErr error
}

// instance is one boot of a host: one systemd-nspawn process and its container. Its fields do not change once
// the boot has been published in Host.cur.
type instance struct {
	cmd     *exec.Cmd     // unshare -> bash boot.sh -> systemd-nspawn (same pid)
	exited  chan struct{} // closed when systemd-nspawn has exited
	leader  int           // the container's PID 1, 0 until found
	pidNS   string        // the container's PID namespace, as readlink /proc/LEADER/ns/pid says
	started string        // the leader's start time (/proc/LEADER/stat field 22), to tell it from a reused PID
}

func (in *instance) isExited() bool {
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

// New boots a test host and returns when systemd inside reports `running` or `degraded`. The caller must call
// Stop. ctx bounds the boot only, not the host's life. It returns an error wrapping ErrNotRoot or ErrNoRootfs
// when the machine cannot run hosts, ErrInvalidOptions for bad options, or a *BootError. A failed New leaves
// nothing behind.
func New(ctx context.Context, opts Options) (*Host, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	for _, tool := range []string{"unshare", "nsenter", "systemd-nspawn", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s is missing on this machine (run prepare.sh): %v", ErrNoRootfs, tool, err)
		}
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = DefaultBootTimeout
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rootfs := opts.Rootfs
	if rootfs == "" {
		var err error
		if rootfs, err = LocateVariant(ctx, opts.Variant, os.Getenv(EnvBuild) != ""); err != nil {
			return nil, err
		}
	}
	cgroupRoot, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	sweep(opts.StateDir, opts.Logger)

	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	h := &Host{name: opts.Name + "-" + hex.EncodeToString(suffix), rootfs: rootfs, opts: opts}
	h.cgroup = filepath.Join(cgroupRoot, "nspawn-"+h.name)
	h.log = opts.Logger.With("host", h.name)
	err = h.makeState()
	var in *instance
	if err == nil {
		in, err = h.boot(ctx)
	}
	if err != nil {
		h.log.Warn("boot failed", "error", err)
		if rerr := h.removeState(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	h.cur = in
	return h, nil
}

// makeState makes the host's temporary directory: the overlay's upper and work dirs, the mount point of its root,
// the console log and the per-host files of the upper dir.
func (h *Host) makeState() error {
	var err error
	if h.state, err = os.MkdirTemp(h.opts.StateDir, "bbtest-"+h.name+"-"); err != nil {
		return fmt.Errorf("testhost: state dir: %w", err)
	}
	for _, d := range []string{"upper", "upper/etc", "work", "root"} {
		if err := os.Mkdir(filepath.Join(h.state, d), 0o755); err != nil {
			return fmt.Errorf("testhost: state dir: %w", err)
		}
	}
	// Per-host files go straight into the overlay's upper dir: the hostname is the machine name.
	if err := os.WriteFile(filepath.Join(h.state, "upper/etc/hostname"), []byte(h.name+"\n"), 0o644); err != nil {
		return fmt.Errorf("testhost: state dir: %w", err)
	}
	// The owner is this test process: while it lives, nobody else sweeps the host's leftovers.
	if err := writeOwner(h.state, os.Getpid(), h.cgroup); err != nil {
		return err
	}
	if h.console, err = os.Create(filepath.Join(h.state, "console.log")); err != nil {
		return fmt.Errorf("testhost: console log: %w", err)
	}
	return nil
}

// removeState closes the console log and removes the state directory.
func (h *Host) removeState() error {
	if h.console != nil {
		_ = h.console.Close()
	}
	if h.state == "" {
		return nil
	}
	return removeState(h.state)
}

// boot creates the host's cgroup, starts systemd-nspawn on the state dir and waits until systemd runs. On failure
// it kills what it started, removes the cgroup and returns a *BootError.
func (h *Host) boot(ctx context.Context) (*instance, error) {
	start := time.Now()
	if err := os.Mkdir(h.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("testhost: cgroup: %w", err)
	}
	args := []string{"-m", "--propagation", "private", "bash", "-c", bootScript, "boot.sh", h.name, h.rootfs, h.state}
	for _, b := range h.opts.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		args = append(args, flag+b.Host+":"+b.Guest)
	}
	args = append(args, h.opts.NspawnArgs...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdout, cmd.Stderr = h.console, h.console
	// A minimal environment: the test's (NOTIFY_SOCKET, SYSTEMD_*, ...) must not steer systemd-nspawn.
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	cmd.Env = []string{"PATH=" + path, "LANG=C.UTF-8", "SYSTEMD_LOG_COLOR=0"}
	// SIGTERM makes systemd-nspawn shut the container down in order: it reaches the container even when this
	// test process dies without running Stop. Setpgid keeps a terminal's ^C from hitting nspawn directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	in := &instance{cmd: cmd, exited: make(chan struct{})}
	// The parent-death signal fires when the OS *thread* that forked exits, and Go ends a thread whose goroutine
	// exits locked to it (netns code does that on purpose). So fork from a goroutine locked to its thread that
	// lives, waiting, as long as systemd-nspawn does: no other goroutine can end that thread.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(in.exited)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(in.exited)
	}()
	if err := <-started; err != nil {
		_ = removeCgroup(h.cgroup, time.Second)
		return nil, fmt.Errorf("testhost: start systemd-nspawn: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, h.opts.BootTimeout)
	defer cancel()
	fail := func(reason string) (*instance, error) {
		err := h.bootError(in, reason)
		if errs := h.shutdown(in, false); len(errs) > 0 {
			err = errors.Join(append([]error{err}, errs...)...)
		}
		if cerr := removeCgroup(h.cgroup, 10*time.Second); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	if err := h.findLeader(ctx, in); err != nil {
		return fail(err.Error())
	}
	state, err := h.waitRunning(ctx, in)
	if err != nil {
		return fail(err.Error())
	}
	h.log.Info("host booted", "leader", in.leader, "state", state, "duration", time.Since(start).Round(time.Millisecond))
	if state == "degraded" {
		failed, _, _ := h.runIn(ctx, in, nil, "systemctl", "--failed", "--no-legend", "--plain")
		h.log.Warn("host is degraded", "failed", strings.TrimSpace(string(failed)))
	}
	return in, nil
}

// findLeader finds the container's PID 1 as seen from here: the child of systemd-nspawn in a new PID namespace.
func (h *Host) findLeader(ctx context.Context, in *instance) error {
	pid := in.cmd.Process.Pid
	for {
		if own, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil {
			children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for _, f := range strings.Fields(string(children)) {
				ns, err := os.Readlink("/proc/" + f + "/ns/pid")
				if err == nil && ns != own {
					in.pidNS, in.started = ns, startTime(f)
					in.leader, err = strconv.Atoi(f)
					return err
				}
			}
		}
		select {
		case <-in.exited:
			return fmt.Errorf("systemd-nspawn exited before the container started (%s)", in.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("no container leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitRunning polls `systemctl is-system-running --wait` until the manager reports running or degraded.
func (h *Host) waitRunning(ctx context.Context, in *instance) (string, error) {
	last := ""
	for {
		out, _, _ := h.runIn(ctx, in, nil, "systemctl", "is-system-running", "--wait")
		last = strings.TrimSpace(string(out))
		switch last {
		case "running", "degraded":
			return last, nil
		case "maintenance", "stopping":
			return "", fmt.Errorf("system state %q", last)
		}
		select {
		case <-in.exited:
			return "", fmt.Errorf("systemd-nspawn exited during boot (%s)", in.cmd.ProcessState)
		case <-ctx.Done():
			return "", fmt.Errorf("system state %q after waiting: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (h *Host) bootError(in *instance, reason string) error {
	e := &BootError{Name: h.name, Reason: reason, Console: tailFile(filepath.Join(h.state, "console.log"), 40)}
	if in.leader != 0 && !in.isExited() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Journal = journalTail(ctx, h, in, 60)
		if jobs, _, err := h.runIn(ctx, in, nil, "systemctl", "list-jobs", "--no-legend"); err == nil && len(jobs) > 0 {
			e.Journal += "\n--- jobs still queued ---\n" + string(jobs)
		}
	}
	return e
}

// current returns the current boot of the host.
func (h *Host) current() *instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// ConsoleTail returns the last n lines the host wrote to its console (systemd-nspawn's output) over all its boots:
// boot and shutdown messages, and anything units log to the console. After Stop it returns "".
func (h *Host) ConsoleTail(n int) string {
	return tailFile(filepath.Join(h.state, "console.log"), n)
}

// Done is closed when the current boot's systemd-nspawn has exited: after Stop, when the container died on its
// own, or during Reboot (call Done again after it).
func (h *Host) Done() <-chan struct{} { return h.current().exited }

// Name returns the host's machine name and hostname: Options.Name plus a random suffix.
func (h *Host) Name() string { return h.name }

// Leader returns the PID, in this process's PID namespace, of the host's PID 1 (systemd). It changes with Reboot.
func (h *Host) Leader() int { return h.current().leader }

// Command returns a command that runs args inside the host (nsenter into all of the leader's namespaces) with a
// clean environment (PATH, HOME=/root, LANG=C.UTF-8, no pager, no colours). Set Stdin, Stdout, Env... as usual;
// append to Env rather than replacing it. The command runs in its own process group (nsenter plus the command it
// forks inside); ctx's end kills the whole group, and so does syscall.Kill(-cmd.Process.Pid, SIGKILL). The
// command is in the host's namespaces but not in its cgroup tree (it stays in the test's cgroup): code that asks
// systemd which unit it belongs to must run under RunUnit or `systemd-run --scope`.
func (h *Host) Command(ctx context.Context, args ...string) *exec.Cmd {
	return command(ctx, h.current(), args...)
}

func command(ctx context.Context, in *instance, args ...string) *exec.Cmd {
	full := append([]string{"-t", strconv.Itoa(in.leader), "-a", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = append([]string(nil), guestEnv...)
	// nsenter forks the command into the host's PID namespace: killing nsenter alone would leave it running, so
	// a cancelled ctx kills the whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // no-op if the caller replaced SysProcAttr
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 5 * time.Second
	if in.isExited() || in.leader == 0 {
		cmd.Err = ErrStopped // the leader's PID may belong to another process by now
	}
	return cmd
}

// Run runs args inside the host and returns its output. A command that fails gives an *ExitError carrying the
// exit code and stderr; its Err also matches ctx's error when ctx ended it, and ErrStopped when the host was
// already gone by the time the command failed. On a stopped host Run returns ErrStopped and runs nothing.
func (h *Host) Run(ctx context.Context, args ...string) (stdout, stderr []byte, err error) {
	return h.runIn(ctx, h.current(), nil, args...)
}

// RunInput is Run with stdin.
func (h *Host) RunInput(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr []byte, err error) {
	return h.runIn(ctx, h.current(), stdin, args...)
}

func (h *Host) runIn(ctx context.Context, in *instance, stdin io.Reader, args ...string) (stdout, stderr []byte, err error) {
	if len(args) == 0 {
		return nil, nil, invalid("Run: no command")
	}
	var o, e bytes.Buffer
	cmd := command(ctx, in, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &o, &e
	if err := cmd.Run(); err != nil {
		if errors.Is(err, ErrStopped) {
			return nil, nil, err
		}
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		} else if in.isExited() {
			err = fmt.Errorf("%w (%w)", ErrStopped, err) // the host went down under the command
		}
		return o.Bytes(), e.Bytes(), &ExitError{Args: args, ExitCode: code, Stderr: e.Bytes(), Err: err}
	}
	return o.Bytes(), e.Bytes(), nil
}

// Shell runs script with `/bin/sh -ec` inside the host and returns its stdout.
func (h *Host) Shell(ctx context.Context, script string) ([]byte, error) {
	out, _, err := h.Run(ctx, "/bin/sh", "-ec", script)
	return out, err
}

// RunUnit starts args as a transient service UNIT inside the host, in the background, with
// `systemd-run --unit=UNIT --collect --service-type=exec`: it returns once the command has been executed, and the
// process then lives (in the host's cgroup tree, with the host's journal) until it exits, StopUnit, or Stop.
// Read its output with JournalTail(ctx, n, "-u", UNIT).
func (h *Host) RunUnit(ctx context.Context, unit string, args ...string) error {
	if unit == "" || strings.ContainsAny(unit, "/ \n") || len(args) == 0 {
		return invalid("RunUnit: unit %q, args %q: want a unit name and a command", unit, args)
	}
	_, _, err := h.Run(ctx, append([]string{"systemd-run", "--quiet", "--collect", "--service-type=exec", "--unit=" + unit, "--"}, args...)...)
	return err
}

// StopUnit stops a unit inside the host.
func (h *Host) StopUnit(ctx context.Context, unit string) error {
	_, _, err := h.Run(ctx, "systemctl", "stop", "--", unit)
	return err
}

// JournalTail returns the last n lines of the host's journal of this boot, or the error text when it cannot be
// read. Extra journalctl arguments (e.g. "-u", "foo.service") narrow it.
func (h *Host) JournalTail(ctx context.Context, n int, args ...string) string {
	return journalTail(ctx, h, h.current(), n, args...)
}

func journalTail(ctx context.Context, h *Host, in *instance, n int, args ...string) string {
	out, stderr, err := h.runIn(ctx, in, nil, append([]string{"journalctl", "-b", "--no-pager", "-q", "-o", "short-monotonic", "-n", strconv.Itoa(n)}, args...)...)
	if err != nil {
		return fmt.Sprintf("(journal unavailable: %v)\n%s%s", err, out, stderr)
	}
	return string(out)
}

// Reboot shuts the host down in order (as Stop does, killing it after StopTimeout) and boots it again on the same
// root, with the same name and binds, and returns when systemd runs again. What was written to the host's files
// survives (the journal too: `journalctl -b -1`); /run, processes and transient units do not, and enabled units
// start at boot as on a real machine. A failed Reboot leaves the host down (Run gives ErrStopped); Stop still
// cleans up.
func (h *Host) Reboot(ctx context.Context) error {
	h.life.Lock()
	defer h.life.Unlock()
	h.mu.Lock()
	stopped, old := h.stopped, h.cur
	h.mu.Unlock()
	if stopped || old.isExited() {
		return ErrStopped
	}
	start := time.Now()
	if errs := h.shutdown(old, true); len(errs) > 0 {
		return fmt.Errorf("testhost: reboot %s: %w", h.name, errors.Join(errs...))
	}
	if err := removeCgroup(h.cgroup, 10*time.Second); err != nil {
		return fmt.Errorf("testhost: reboot %s: %w", h.name, err)
	}
	in, err := h.boot(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.cur = in
	h.mu.Unlock()
	h.log.Info("host rebooted", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// Stop shuts the host down (orderly, then by force after StopTimeout) and removes everything it made: its
// processes, mounts, network namespace, cgroups and temporary directory. It is idempotent.
func (h *Host) Stop() error {
	h.life.Lock()
	defer h.life.Unlock()
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return h.stopErr
	}
	in := h.cur
	h.mu.Unlock()

	start := time.Now()
	errs := h.shutdown(in, true)
	if err := removeCgroup(h.cgroup, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := h.removeState(); err != nil {
		errs = append(errs, err)
	}
	h.log.Info("host stopped", "duration", time.Since(start).Round(time.Millisecond))
	h.mu.Lock()
	h.stopped, h.stopErr = true, errors.Join(errs...)
	h.mu.Unlock()
	return h.stopErr
}

// shutdown ends one boot: SIGTERM to systemd-nspawn (an orderly shutdown of the container) when orderly, then
// SIGKILL to the container's PID 1, then to everything in the cgroup. It returns once the leader is reaped.
func (h *Host) shutdown(in *instance, orderly bool) []error {
	var errs []error
	if !in.isExited() {
		if orderly {
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-in.exited:
			case <-time.After(h.opts.StopTimeout):
				h.log.Warn("orderly shutdown timed out, killing", "timeout", h.opts.StopTimeout)
			}
		}
		if !in.isExited() && in.leader != 0 {
			// Killing the container's PID 1 kills its PID namespace; systemd-nspawn reaps it and exits.
			_ = syscall.Kill(in.leader, syscall.SIGKILL)
			select {
			case <-in.exited:
			case <-time.After(5 * time.Second):
			}
		}
		if !in.isExited() {
			if err := killCgroup(h.cgroup); err != nil {
				errs = append(errs, err)
			}
			_ = in.cmd.Process.Kill()
			select {
			case <-in.exited:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("testhost: systemd-nspawn (pid %d) did not exit after SIGKILL", in.cmd.Process.Pid))
			}
		}
	}
	if in.started != "" && !waitGone(in.leader, in.started, 10*time.Second) {
		errs = append(errs, fmt.Errorf("testhost: the container's PID 1 (%d) is still there", in.leader))
	}
	return errs
}

// waitGone waits until process pid, started at start, has been reaped (a killed process whose parent died is
// reaped by this machine's init, some time later).
func waitGone(pid int, start string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if st := startTime(strconv.Itoa(pid)); st == "" || st != start {
			return true // reaped (a zombie still has its stat)
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTime returns field 22 of /proc/PID/stat, or "" when there is no such process.
func startTime(pid string) string {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	// pid (comm) state ppid ...: comm may contain spaces and parentheses, so split after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// removeState removes the host's temporary directory, refusing if the overlay is still mounted on it here.
func removeState(state string) error {
	root := filepath.Join(state, "root")
	var st, pst syscall.Stat_t
	if err := syscall.Stat(root, &st); err == nil {
		if err := syscall.Stat(state, &pst); err == nil && st.Dev != pst.Dev {
			return fmt.Errorf("testhost: %s is still a mount point here; not removing it", root)
		}
	}
	if err := os.RemoveAll(state); err != nil {
		return fmt.Errorf("testhost: remove state dir: %w", err)
	}
	return nil
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
