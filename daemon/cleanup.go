package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

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
// anew, and removing the state directory forgets them. Every failure is reported, after
// trying everything.
func Cleanup(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Logger
	if cfg.Host == nil {
		return errors.New("--cleanup removes what the host steps made; with --no-host there is nothing to remove")
	}
	dbPath := filepath.Join(cfg.StateDir, "bitbuilder.db")
	if _, err := os.Stat(dbPath); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no state database at %s: nothing was made with this --state-dir", dbPath)
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
		Dir: filepath.Join(cfg.StateDir, "templates"), SSHKeyPath: filepath.Join(cfg.StateDir, "ssh", "id_ed25519"),
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
