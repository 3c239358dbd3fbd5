// Command bitbuilderd is BitBuilder's host daemon: it keeps every tenant's host state
// converged to its templates and records and serves the io.bitbuilder.* Varlink interfaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bitbuilder/bitbuilder/daemon"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		// One line, like every log line: the parts of a joined error are separated by "; ".
		fmt.Fprintln(os.Stderr, "bitbuilderd:", strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bitbuilderd", flag.ContinueOnError)
	var cfg daemon.Config
	fs.StringVar(&cfg.SocketPath, "socket", daemon.DefaultSocket, "path of the Varlink socket, 0660 root and the admin group (unless systemd passes one)")
	fs.StringVar(&cfg.ReadOnlySocketPath, "ro-socket", "", "path of the read-only Varlink socket, 0666, read methods only (unless systemd passes one; default: SOCKET.ro)")
	fs.BoolVar(&cfg.NoReadOnlySocket, "no-ro-socket", false, "serve no read-only socket")
	cfg.MaxMessageSize = daemon.DefaultMaxMessageSize
	fs.IntVar(&cfg.MaxConnections, "max-connections", daemon.DefaultMaxConnections, "Varlink connections served at once over both sockets")
	fs.IntVar(&cfg.MaxConnectionsPerUID, "max-connections-per-uid", daemon.DefaultMaxConnectionsPerUID, "Varlink connections one uid other than root may have open")
	fs.IntVar(&cfg.RootReserve, "root-reserve", daemon.DefaultRootReserve, "of the connections, how many only root may take (0 for none)")
	fs.Func("max-message-size", "largest Varlink request, in bytes (K, M, G suffixes; default 8M)", sizeFlag(&cfg.MaxMessageSize))
	fs.Func("max-buffered", "memory all Varlink requests may cost together, in bytes (K, M, G suffixes; default and least 8 times --max-message-size plus 256K)", sizeFlag(&cfg.MaxBufferedBytes))
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", daemon.DefaultIdleTimeout, "close a Varlink connection idle for this long with no call running (0 for never)")
	fs.DurationVar(&cfg.MessageTimeout, "message-timeout", daemon.DefaultMessageTimeout, "close a Varlink connection that does not finish a message in this time (0 for never)")
	fs.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "directory of the database and the tenants' trees")
	fs.StringVar(&cfg.AdminGroup, "admin-group", daemon.DefaultAdminGroup, "group whose members may change things besides root")
	indexRange := fs.String("index-range", "1-254", "range of tenant network indexes, MIN-MAX")
	noHost := fs.Bool("no-host", false, "keep records only: change nothing on the host (no namespaces, links, units); each tenant shows HostApplied=false")
	cleanup := fs.Bool("cleanup", false, "remove from the host everything the daemon made there for the tenants of --state-dir (machines and their roots, units, networkd files, namespaces, links, trees, the boot registry), as deleting them would, keep their records, and exit; bitbuilderd must not be running")
	var host daemon.HostConfig
	fs.StringVar(&host.NetworkDir, "network-dir", "/run/systemd/network", "where rendered networkd files go")
	fs.StringVar(&host.UnitDir, "unit-dir", "/run/systemd/system", "where tenants' units go")
	fs.StringVar(&host.BootRegistry, "boot-registry", "/etc/bitbuilder/boot-registry.json", "the registry the boot generator reads")
	fs.BoolVar(&host.NetnsViaSystemd, "netns-via-systemd", false, "make and delete tenants' network namespaces with `ip netns` run as transient units of the service manager (systemd-run), in the host's mount namespace: needed when the daemon's unit gives it a mount namespace of its own, as bitbuilderd.service does")
	basePrefix := fs.String("base-prefix", "10.0.0.0/8", "IPv4 network tenant networks are cut from: tenant N gets the /16 at BASE + N<<16")
	fs.StringVar(&host.Units.Nspawn, "nspawn", "/usr/bin/systemd-nspawn", "path of systemd-nspawn, which runs containers")
	fs.StringVar(&host.Units.VMSpawn, "vmspawn", "/usr/bin/systemd-vmspawn", "path of systemd-vmspawn, which runs VMs (not every distribution ships it)")
	fs.Func("vmspawn-arg", "an extra systemd-vmspawn option for every VM, e.g. --kvm=no on a host without usable KVM (repeatable)", func(s string) error {
		if !strings.HasPrefix(s, "--") {
			return fmt.Errorf("%q is not a long option", s)
		}
		host.Units.VMSpawnArgs = append(host.Units.VMSpawnArgs, s)
		return nil
	})
	fs.Func("artifact-source", "a host file (path or glob pattern) templates' artifacts.json may ask for; given at least once, these replace the built-in list (kernel, initrd, systemd-boot, busybox, /usr/lib/bitbuilder/*) (repeatable)", func(s string) error {
		if !strings.HasPrefix(s, "/") {
			return fmt.Errorf("%q is not an absolute path", s)
		}
		cfg.ArtifactSources = append(cfg.ArtifactSources, s)
		return nil
	})
	fs.Func("vm-unit-property", "an extra [Service] setting NAME=VALUE of every VM's unit (repeatable)", func(s string) error {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return fmt.Errorf("%q is not NAME=VALUE", s)
		}
		host.Units.VMUnitProperties = append(host.Units.VMUnitProperties, s)
		return nil
	})
	fs.DurationVar(&cfg.Resync, "resync", 10*time.Minute, "how long a tenant goes at most without being compared with the host when nothing changed (host events and changes act at once)")
	fs.Int64Var(&cfg.TemplateLimits.MaxObjectSize, "template-max-object-size", 256<<20, "largest object (inflated) a template fetch may hold, in bytes")
	fs.Int64Var(&cfg.TemplateLimits.MaxFileSize, "template-max-file-size", 256<<20, "largest file a template checkout writes, in bytes")
	fs.Int64Var(&cfg.TemplateLimits.MaxTotalSize, "template-max-tree-size", 4<<30, "most bytes a template checkout writes, counted before writing (a blob named N times counts N times)")
	fs.Int64Var(&cfg.TemplateLimits.MaxFetchSize, "template-max-fetch-size", 16<<30, "most pack bytes a template repository may hold after a fetch")
	fs.IntVar(&cfg.TemplateLimits.MaxEntries, "template-max-entries", 2_000_000, "most files, symlinks and directories of a template checkout")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	version := fs.Bool("version", false, "print the version and exit")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(os.Stdout, fs)
			return nil
		}
		// The flag package names flags with one dash; bitbuilderd documents them GNU-style.
		return fmt.Errorf("%s (bitbuilderd --help lists the flags)", strings.Replace(err.Error(), " -", " --", 1))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *version {
		fmt.Println(daemon.Version)
		return nil
	}
	lo, hi, ok := strings.Cut(*indexRange, "-")
	var err error
	if cfg.IndexMin, err = strconv.Atoi(lo); !ok || err != nil {
		return fmt.Errorf("--index-range %q: want MIN-MAX", *indexRange)
	}
	if cfg.IndexMax, err = strconv.Atoi(hi); err != nil {
		return fmt.Errorf("--index-range %q: want MIN-MAX", *indexRange)
	}
	if cfg.MaxConnections <= 0 || cfg.MaxConnectionsPerUID <= 0 || cfg.RootReserve < 0 {
		return errors.New("--max-connections and --max-connections-per-uid must be positive, --root-reserve not negative")
	}
	// Limits not given keep the server's defaults, which depend on each other (the root
	// reserve is at most a quarter of the connections). Given as 0, a reserve or a timeout
	// means none, which daemon.Config spells -1.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case !given["root-reserve"]:
		cfg.RootReserve = 0
	case cfg.RootReserve == 0:
		cfg.RootReserve = -1
	}
	for _, d := range []*time.Duration{&cfg.IdleTimeout, &cfg.MessageTimeout} {
		if *d <= 0 {
			*d = -1
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = newLogger(level)
	if host.BasePrefix, err = netip.ParsePrefix(*basePrefix); err != nil {
		return fmt.Errorf("--base-prefix: %w", err)
	}
	if !*noHost {
		cfg.Host = &host
	}
	cfg.RecordsOnly = *noHost

	ctx, stop := signalContext()
	defer stop()
	if *cleanup {
		return daemon.Cleanup(ctx, cfg)
	}
	return daemon.Run(ctx, cfg)
}

// usage prints the flags GNU-style (--name VALUE), as bitbuilderd takes them.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage: bitbuilderd [flags]")
	fmt.Fprintln(w, "\nServes the io.bitbuilder.* Varlink interfaces and keeps every tenant's host state converged to its records.")
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		arg := "--" + f.Name
		if name != "" {
			arg += " " + strings.ToUpper(name)
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "[]" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  %s\n      %s%s\n", arg, help, def)
	})
}

// sizeFlag parses a byte count, with an optional K, M or G suffix (powers of 1024, "KiB"
// and "KB" alike) into *dst.
func sizeFlag(dst *int) func(string) error {
	return func(s string) error {
		num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
		shift := 0
		switch {
		case strings.HasSuffix(num, "K"):
			shift = 10
		case strings.HasSuffix(num, "M"):
			shift = 20
		case strings.HasSuffix(num, "G"):
			shift = 30
		}
		if shift > 0 {
			num = num[:len(num)-1]
		}
		n, err := strconv.Atoi(num)
		if err != nil || n <= 0 || n > math.MaxInt>>shift {
			return fmt.Errorf("%q is not a positive byte count", s)
		}
		*dst = n << shift
		return nil
	}
}

// newLogger logs text to stderr; under journald (JOURNAL_STREAM set) it leaves the
// timestamp out, since the journal records its own.
func newLogger(level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "bitbuilderd: second signal, exiting at once")
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
