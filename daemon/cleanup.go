package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// Cleanup removes from the host everything a daemon with this configuration made there, while
// no daemon runs (bitbuilderd --cleanup, make clean-host): for every tenant in the state
// database it runs the reconciler's teardown, the very code that deleting the tenant runs
// (machines stopped and their roots removed, units and their manifest, networkd files, the
// namespace and links, the tenant's trees), then it removes the shared template trees, the boot
// registry and the stale sockets. The records stay: a daemon started again sets the tenants up
// anew, and removing the state directory forgets them. Tenants the host has state of but no
// record (the state directory removed first) are found by the daemon's marks (see leftovers)
// and torn down the same way. Every failure is reported, after trying everything.
func Cleanup(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Logger
	if cfg.Host == nil {
		return errors.New("--cleanup removes what the host steps made; with --no-host there is nothing to remove")
	}
	dbPath := filepath.Join(cfg.StateDir, "bitbuilder.db")
	regDir := filepath.Join(cfg.StateDir, "templates")
	if _, err := os.Stat(dbPath); errors.Is(err, fs.ErrNotExist) {
		// The records are gone (the state directory was removed): what the host still has is
		// found by the marks the daemon leaves on it. An empty store and registry of our own
		// stand in, so that nothing is created in the state directory.
		log.Warn("no state database: looking for what tenants left on the host by the daemon's marks", "path", dbPath)
		tmp, err := os.MkdirTemp("", "bitbuilder-cleanup-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dbPath, regDir = filepath.Join(tmp, "bitbuilder.db"), filepath.Join(tmp, "templates")
	}
	st, err := store.Open(dbPath, store.Options{Timeout: cfg.StoreTimeout, Logger: log})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("%s is in use: stop bitbuilderd first (systemctl stop bitbuilderd, or Ctrl-C make run): %w", dbPath, err)
		}
		return fmt.Errorf("open state database: %w", err)
	}
	defer st.Close()
	reg, err := template.New(template.Config{
		Dir: regDir, SSHKeyPath: filepath.Join(cfg.StateDir, "ssh", "id_ed25519"),
		Limits: cfg.TemplateLimits, Logger: log.With("component", "template"),
	})
	if err != nil {
		return fmt.Errorf("template registry: %w", err)
	}
	defer reg.Close()
	svc, err := tenant.New(tenant.Config{Store: st, IndexMin: cfg.IndexMin, IndexMax: cfg.IndexMax})
	if err != nil {
		return err
	}
	hc := *cfg.Host
	hc.setDefaults(cfg.StateDir)
	lo, hi := svc.IndexRange()
	hn, steps, observer, err := setUpHost(hc, cfg.StateDir, lo, hi, reg, log)
	if err != nil {
		return err
	}
	defer hn.machines.Close()
	ts, _, err := svc.List(ctx)
	if err != nil {
		return err
	}
	log.Info("cleaning up the host", "tenants", len(ts), "stateDir", cfg.StateDir)
	var errs []error
	for _, t := range ts {
		if err := reconcile.TeardownSteps(ctx, steps, t, 5*time.Minute); err != nil {
			log.Error("tenant's host state not fully removed", "tenant", t.Name, "err", reconcile.OneLine(err))
			errs = append(errs, fmt.Errorf("tenant %s: %w", t.Name, err))
			continue
		}
		log.Info("tenant's host state removed; its record is kept", "tenant", t.Name, "networkIndex", t.NetworkIndex)
	}
	// What tenants without a record left (their records removed with the state directory, or
	// state made by another state directory), found by the daemon's marks.
	recorded := map[string]bool{}
	for _, t := range ts {
		recorded[t.Name] = true
	}
	for name, index := range leftovers(hc, recorded, lo, hi) {
		t := &tenant.Tenant{Name: name, NetworkIndex: index,
			NetworkFeatures: []string{tenant.FeatureWireGuard, tenant.FeatureVXLAN, tenant.FeatureVLAN}}
		use := steps
		if index == 0 {
			// Without its index the network's files and links cannot be told from another tenant's.
			use = slices.DeleteFunc(slices.Clone(steps), func(s reconcile.Step) bool { _, ok := s.(*reconcile.NetworkStep); return ok })
		}
		if err := reconcile.TeardownSteps(ctx, use, t, 5*time.Minute); err != nil {
			log.Error("host state of a tenant without a record not fully removed", "tenant", name, "err", reconcile.OneLine(err))
			errs = append(errs, fmt.Errorf("tenant %s (no record): %w", name, err))
			continue
		}
		log.Info("host state of a tenant without a record removed", "tenant", name, "networkIndex", index)
	}
	// No tenant is left on the host: the shared trees go, and so does the boot registry (an
	// empty one would still be read at every boot).
	if err := observer(ctx, nil); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(hc.BootRegistry); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, dir := range []string{filepath.Join(hc.UnitDir, reconcile.ManifestDir), filepath.Dir(hc.BootRegistry),
		filepath.Join(cfg.StateDir, "tenants"), filepath.Join(cfg.StateDir, "trees"), filepath.Join(cfg.StateDir, "validate")} {
		_ = os.Remove(dir) // only when empty
	}
	for _, sock := range []string{cfg.SocketPath, cfg.ReadOnlySocketPath} {
		if listening(sock) {
			continue // systemd's (socket activation) or another daemon's: never connected to, which would start one
		}
		if err := os.Remove(sock); err == nil {
			log.Info("removed stale socket", "socket", sock)
		}
	}
	_ = os.Remove(filepath.Dir(cfg.SocketPath))
	_ = os.Remove(cfg.StateDir) // only when empty: made by setUpHost when there were no records
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("host cleaned up", "tenants", len(ts))
	return nil
}

// listening reports whether some process listens on the unix socket at path, as the kernel lists
// it (/proc/net/unix, flag __SO_ACCEPTCON), without connecting to it: a connection to a socket
// systemd holds for bitbuilderd.socket would start the daemon.
func listening(path string) bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return true // cannot tell: keep it
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) >= 8 && f[7] == path && f[3] == "00010000" {
			return true
		}
	}
	return false
}

// fileHeader is the first line of a networkd file netconf rendered.
var fileHeader = regexp.MustCompile(`^# Generated by BitBuilder from network template .* for tenant ([a-z0-9-]+), index ([0-9]+)\.$`)

// linkName is the name of a link the daemon makes for network index N.
var linkName = regexp.MustCompile(`^(?:br|vh|vx|wg|vlan)-tenant-([0-9]+)$`)

// leftovers returns the tenants not in recorded that the host has state of, with their network
// index (0 when unknown), by the marks the daemon leaves: the alias bitbuilder:<tenant> of the
// host's links named by index, the header of the networkd files it rendered, and its unit
// manifests. Namespaces carry no mark and are only removed for a tenant found by these.
func leftovers(hc HostConfig, recorded map[string]bool, lo, hi int) map[string]int {
	out := map[string]int{}
	add := func(name string, index int) {
		if recorded[name] || tenant.ValidateName(name) != nil {
			return
		}
		if index < lo || index > hi {
			index = 0
		}
		if out[name] == 0 {
			out[name] = index
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			a := l.Attrs()
			m := linkName.FindStringSubmatch(a.Name)
			name, ok := strings.CutPrefix(a.Alias, netns.Mark(""))
			if m == nil || !ok {
				continue
			}
			n, _ := strconv.Atoi(m[1])
			add(name, n)
		}
	}
	if ents, err := os.ReadDir(hc.NetworkDir); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "50-bitbuilder-") || !e.Type().IsRegular() {
				continue
			}
			f, err := os.Open(filepath.Join(hc.NetworkDir, e.Name()))
			if err != nil {
				continue
			}
			first, _ := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
			f.Close()
			if m := fileHeader.FindStringSubmatch(strings.TrimSpace(first)); m != nil {
				n, _ := strconv.Atoi(m[2])
				add(m[1], n)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(hc.UnitDir, reconcile.ManifestDir)); err == nil {
		for _, e := range ents {
			if name, ok := strings.CutSuffix(e.Name(), ".units"); ok {
				add(name, 0)
			}
		}
	}
	return out
}
