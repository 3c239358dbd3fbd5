// Package daemon wires bitbuilderd together: it opens the store, builds the tenant service
// and the host components, serves the io.bitbuilder.* Varlink interfaces through package
// rpc, runs the reconciler, and tells systemd about readiness and shutdown.
//
// Run holds no handler logic of its own beyond the API adapters in this package; every rule
// lives in tenant, store and the host packages.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	"github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	"github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// Version is the daemon's version, reported by GetInfo. Set at build time with
// -ldflags "-X github.com/bitbuilder/bitbuilder/daemon.Version=...".
var Version = "0.1.0-dev"

// Defaults for Config.
const (
	DefaultSocket     = "/run/bitbuilder/io.bitbuilder"
	DefaultStateDir   = "/var/lib/bitbuilder"
	DefaultAdminGroup = "bitbuilder"

	// The Varlink server's limits, as rpc.Config takes them.
	DefaultMaxConnections       = rpc.DefaultMaxConnections
	DefaultMaxConnectionsPerUID = rpc.DefaultMaxConnectionsPerUID
	DefaultRootReserve          = rpc.DefaultRootReserve
	DefaultMaxMessageSize       = rpc.DefaultMaxMessageSize
	DefaultIdleTimeout          = rpc.DefaultIdleTimeout
	DefaultMessageTimeout       = rpc.DefaultMessageTimeout
)

// Config configures the daemon. The zero value of each field takes its default.
type Config struct {
	// SocketPath is where the Varlink socket (0660, root and the admin group) is created
	// when systemd does not pass one.
	SocketPath string
	// ReadOnlySocketPath is where the read-only Varlink socket (0666, any local user; only
	// the Read methods, whoever calls) is created when systemd does not pass one. Default
	// SocketPath + ".ro".
	ReadOnlySocketPath string
	// NoReadOnlySocket serves no read-only socket (one that systemd passes is closed).
	NoReadOnlySocket bool
	// StateDir holds the database and the tenants' trees.
	StateDir string
	// AdminGroup names the group whose members may change things, besides root.
	AdminGroup string
	// IndexMin and IndexMax bound tenant network indexes (default 1..254).
	IndexMin, IndexMax int
	// MaxConnections, MaxConnectionsPerUID, RootReserve, MaxMessageSize, MaxBufferedBytes,
	// IdleTimeout and MessageTimeout limit the Varlink server over both sockets; zero takes
	// rpc's default (see rpc.Config).
	MaxConnections, MaxConnectionsPerUID, RootReserve int
	MaxMessageSize, MaxBufferedBytes                  int
	IdleTimeout, MessageTimeout                       time.Duration
	// StoreTimeout is how long to wait for the database lock (default 2 s).
	StoreTimeout time.Duration
	// NoSync disables fsync in the store. Only for tests and benchmarks: a crash loses data.
	NoSync bool
	// Logger receives the daemon's logs (default slog.Default()).
	Logger *slog.Logger
	// Listener, when set, is served instead of socket activation or SocketPath, and
	// ReadOnlyListener, when set, as the read-only socket; with Listener set and
	// ReadOnlyListener not, there is no read-only socket (tests).
	Listener, ReadOnlyListener net.Listener
	// Ready, when set, is closed once the daemon serves.
	Ready chan<- struct{}
	// Host, when set, makes the daemon change the host: tenants' networks, template trees,
	// units and the boot registry. Without it the daemon only keeps records (tests).
	Host *HostConfig
	// RecordsOnly says the administrator asked for records only (bitbuilderd --no-host, Host
	// nil): the daemon says so at start and each tenant shows the condition HostApplied=false,
	// reason RecordsOnly, instead of looking applied.
	RecordsOnly bool
	// Steps are extra reconciler steps, after the host steps (tests).
	Steps []reconcile.Step
	// Resync is how long a tenant goes at most without being compared with the host when nothing changed (default 10 min).
	Resync time.Duration
	// TemplateLimits bound what a template repository may cost the daemon (template.Limits; zero fields take
	// its defaults): the largest object a fetch may hold, the largest file and the total size of a checkout.
	TemplateLimits template.Limits
	// ArtifactSources are the host files (paths or patterns) a template's artifacts.json may ask
	// for; nil means validate.DefaultArtifactSources. The administrator's list, never a template's.
	ArtifactSources []string
}

func (c *Config) defaults() {
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocket
	}
	if c.ReadOnlySocketPath == "" {
		c.ReadOnlySocketPath = c.SocketPath + ".ro"
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.AdminGroup == "" {
		c.AdminGroup = DefaultAdminGroup
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Run serves until ctx ends; then it stops accepting, finishes, and returns nil.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Logger

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	dbPath := filepath.Join(cfg.StateDir, "bitbuilder.db")
	// Callers come back through the socket and the request path: a longer round trip than in
	// process, so the committer waits a little longer for them (store.Options.GatherWait).
	st, err := store.Open(dbPath, store.Options{Timeout: cfg.StoreTimeout, NoSync: cfg.NoSync, Logger: log, GatherWait: 2 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("open state database: %w", err)
	}
	defer st.Close()
	// The reply cache the last clean shutdown kept is read beside the rest of the start-up. It
	// is for this store only if nothing was committed since it was written (the revision at
	// open), and no larger than the store's file could account for.
	keptReplies := make(chan map[string]cachedTenant, 1)
	openRev := st.Revision()
	go func() {
		limit := int64(1 << 20)
		if fi, err := os.Stat(dbPath); err == nil {
			limit += 2 * fi.Size()
		}
		kept, err := loadReplies(cfg.StateDir, openRev, limit)
		if err != nil {
			log.Info("the reply cache of the last stop is not used; filling it from the records", "err", err)
		}
		keptReplies <- kept
	}()
	var (
		tapi  *tenantAPI
		clean bool // the daemon stopped as asked: the reply cache is kept for the next start
	)
	defer func() {
		if !clean {
			return
		}
		// Everything else has stopped: the store is closed first (its deferred writes flushed),
		// so the cache is written for the store's final revision.
		if err := st.Close(); err != nil {
			return
		}
		if err := tapi.saveReplies(cfg.StateDir, st.Revision()); err != nil {
			log.Warn("keeping the reply cache for the next start failed", "err", err)
		}
	}()

	reg, err := template.New(template.Config{
		Dir:        filepath.Join(cfg.StateDir, "templates"),
		SSHKeyPath: filepath.Join(cfg.StateDir, "ssh", "id_ed25519"),
		Validate:   registryValidator(cfg.ArtifactSources),
		Limits:     cfg.TemplateLimits,
		Logger:     log.With("component", "template"),
	})
	if err != nil {
		return fmt.Errorf("template registry: %w", err)
	}
	defer reg.Close()

	params := newParamCache(reg)
	svc, err := tenant.New(tenant.Config{Store: st, IndexMin: cfg.IndexMin, IndexMax: cfg.IndexMax,
		Templates: newUserResolver(templateResolver{reg: reg, params: params}, cfg.StateDir)})
	if err != nil {
		return err
	}

	logSettings(log, cfg, svc)

	netAPI := &networkAPI{tenants: svc, log: log, net: networkConfig(cfg.Host)}
	gid := rpc.LookupGroup(cfg.AdminGroup)
	if gid < 0 {
		log.Warn("admin group does not exist; only root may change things", "group", cfg.AdminGroup)
	}
	tapi = &tenantAPI{svc: svc, store: st, log: log}
	srv, err := rpc.New(rpc.Config{
		Vendor:               "BitBuilder",
		Product:              "bitbuilderd",
		Version:              Version,
		URL:                  "https://github.com/bitbuilder/bitbuilder",
		AdminGroup:           gid,
		MaxConnections:       cfg.MaxConnections,
		MaxConnectionsPerUID: cfg.MaxConnectionsPerUID,
		RootReserve:          cfg.RootReserve,
		MaxMessageSize:       cfg.MaxMessageSize,
		MaxBufferedBytes:     cfg.MaxBufferedBytes,
		IdleTimeout:          cfg.IdleTimeout,
		MessageTimeout:       cfg.MessageTimeout,
		Logger:               log,
		Interfaces: []rpc.Interface{
			{
				Dispatcher: iobitbuildertenant.VarlinkNew(tapi),
				Methods: map[string]rpc.Method{
					"Create": {Access: rpc.Write},
					"Get":    {Access: rpc.Read, Quick: true}, // a cached encoding or one store read
					"List":   {Access: rpc.Read, RequiresMore: true},
					"Update": {Access: rpc.Write},
					"Delete": {Access: rpc.Write},
					"Start":  {Access: rpc.Write},
					"Stop":   {Access: rpc.Write},
					"Watch":  {Access: rpc.Read, RequiresMore: true},

					"StartMachine":   {Access: rpc.Write},
					"StopMachine":    {Access: rpc.Write},
					"RestartMachine": {Access: rpc.Write},

					"AddUser":    {Access: rpc.Write},
					"RemoveUser": {Access: rpc.Write},
				},
			},
			{
				Dispatcher: iobitbuildertemplate.VarlinkNew(&templateAPI{
					artifactSources: cfg.ArtifactSources, params: params,
					reg: reg, tenants: svc, scratch: filepath.Join(cfg.StateDir, "validate"), log: log,
				}),
				Methods: map[string]rpc.Method{
					"Add":    {Access: rpc.Write},
					"Update": {Access: rpc.Write},
					"Pin":    {Access: rpc.Write},
					"Get":    {Access: rpc.Read},
					"List":   {Access: rpc.Read, RequiresMore: true},
					"Remove": {Access: rpc.Write},
					"Rules":  {Access: rpc.Read},
					// Validating a registered template only reads; validating a host path
					// would let a caller probe paths it cannot read itself.
					"Validate": {AccessFor: func(p json.RawMessage) rpc.Access {
						var in struct {
							Path *string `json:"path"`
							Base *string `json:"base"`
						}
						if json.Unmarshal(p, &in) != nil || in.Path != nil || in.Base != nil {
							return rpc.Write
						}
						return rpc.Read
					}},
				},
			},
			{
				Dispatcher: iobitbuildernetwork.VarlinkNew(netAPI),
				Methods: map[string]rpc.Method{
					"Get":        {Access: rpc.Read},
					"List":       {Access: rpc.Read, RequiresMore: true},
					"AddPeer":    {Access: rpc.Write},
					"RemovePeer": {Access: rpc.Write},
					"Describe":   {Access: rpc.Read},
					"Apply":      {Access: rpc.Write},
				},
			},
		},
	})
	if err != nil {
		return err
	}

	// Everything is set up before the first call can arrive: after Serve starts, READY=1
	// follows at once, so a client answered by the daemon finds the unit active.
	svcMin, svcMax := svc.IndexRange()
	var steps []reconcile.Step
	var observer reconcile.Observer
	if cfg.Host != nil {
		hc := *cfg.Host
		hc.ArtifactSources = cfg.ArtifactSources
		netAPI.host, steps, observer, err = setUpHost(hc, cfg.StateDir, svcMin, svcMax, reg, log)
		if err != nil {
			return err
		}
	}
	if cfg.Host == nil && cfg.RecordsOnly {
		steps = append(steps, recordsOnlyStep{})
	}
	steps = append(steps, cfg.Steps...)

	l, lro, err := listeners(cfg, gid)
	if err != nil {
		return err
	}

	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(serveCtx, l)
	}()
	if lro != nil {
		// The same server, so its limits hold over both sockets together.
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveErr <- srv.ServeReadOnly(serveCtx, lro)
		}()
	}

	ctl := reconcile.New(reconcile.Config{
		Tenants: svc, Store: st, Steps: steps, Observer: observer,
		Resync: cfg.Resync, Logger: log.With("component", "reconcile"),
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The reply cache is filled behind the listener first, so that the first List after a
		// start does not decode and encode every record; then the reconciler starts, with a
		// pass over every tenant. Run the other way round, or together, the start-up passes
		// (a decode each, on both cores) make that first List wait for them. The warm-up is
		// short (about 10 ms per 1,000 tenants here) and host events that come meanwhile are
		// queued for the reconciler (Enqueue), not lost.
		t0 := time.Now()
		kept := <-keptReplies
		n := tapi.warm(serveCtx, kept)
		log.Debug("reply cache filled", "tenants", n, "keptFromLastStop", len(kept), "took", time.Since(t0))
		if err := ctl.Run(serveCtx); err != nil && serveCtx.Err() == nil {
			log.Error("reconciler stopped", "err", err)
		}
	}()
	if netAPI.host != nil {
		// Host events wake the tenant they concern at once: a machine's unit changed state,
		// or machined registered or removed a machine (drift is repaired without waiting
		// for the resync).
		defer netAPI.host.machines.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			netns.Watch(serveCtx, ctl.Enqueue)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			netAPI.host.machines.Watch(serveCtx, machineUnitPrefix, func(ev machines.Event) {
				name := ev.Machine
				if ev.Unit != "" {
					name = machineOfUnit(ev.Unit)
				}
				if name == "" {
					return
				}
				if r, err := st.Get(serveCtx, tenant.KindMachineName, name); err == nil {
					ctl.Enqueue(string(r.Value))
				}
			})
		}()
	}

	notify(log, "READY=1\nSTATUS=Serving")
	if cfg.Ready != nil {
		close(cfg.Ready)
	}
	// Counted after serving, and without decoding a record: start-up does not wait on the
	// number of tenants.
	if n, err := st.Count(ctx, tenant.KindTenant); err == nil {
		notify(log, fmt.Sprintf("STATUS=Serving %d tenants", n))
		log.Info("ready", "tenants", n, "revision", st.Revision())
	} else {
		log.Warn("counting tenants failed", "err", err)
	}

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if err != nil {
			notify(log, "STOPPING=1\nSTATUS=Listener failed")
			return fmt.Errorf("serve: %w", err)
		}
	}
	notify(log, "STOPPING=1\nSTATUS=Shutting down")
	log.Info("shutting down")
	stopServing()
	wg.Wait()
	clean = true
	return nil
}

// logSettings logs, at start, the version and the settings the daemon runs with, and what it
// will do to the host.
func logSettings(log *slog.Logger, cfg Config, svc *tenant.Service) {
	lo, hi := svc.IndexRange()
	ro := cfg.ReadOnlySocketPath
	if cfg.NoReadOnlySocket {
		ro = "none"
	}
	resync := cfg.Resync
	if resync <= 0 {
		resync = 10 * time.Minute
	}
	host := "applied"
	if cfg.Host == nil {
		host = "records only"
	}
	log.Info("starting bitbuilderd", "version", Version, "host", host, "stateDir", cfg.StateDir,
		"socket", cfg.SocketPath, "roSocket", ro, "adminGroup", cfg.AdminGroup,
		"indexRange", fmt.Sprintf("%d-%d", lo, hi), "resync", resync,
		"maxConnections", orDefault(cfg.MaxConnections, DefaultMaxConnections),
		"maxMessageSize", orDefault(cfg.MaxMessageSize, DefaultMaxMessageSize))
	switch {
	case cfg.Host != nil:
		logHostChanges(log, *cfg.Host, cfg.StateDir)
	case cfg.RecordsOnly:
		log.Warn("records only (--no-host): nothing is applied to the host; each tenant shows the condition HostApplied=false, reason " + reconcile.ReasonRecordsOnly)
	}
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// listeners returns the sockets to serve: the main one (0660, root and the admin group) and
// the read-only one (0666); both from systemd when it activated the daemon, else made at
// their paths.
func listeners(cfg Config, gid int) (l, lro net.Listener, err error) {
	log := cfg.Logger
	if cfg.Listener != nil {
		return cfg.Listener, cfg.ReadOnlyListener, nil
	}
	if l, lro, err = rpc.ActivationListeners(); err != nil {
		return nil, nil, err
	}
	// With socket activation the sockets are systemd's: the read-only one is served when
	// systemd passes it (bitbuilderd-ro.socket) and never made here.
	activated := l != nil
	if activated {
		log.Info("serving the socket passed by systemd", "name", rpc.ActivationName)
	} else {
		if l, err = rpc.Listen(cfg.SocketPath, 0o660, gid); err != nil {
			if lro != nil {
				lro.Close()
			}
			return nil, nil, err
		}
		log.Info("serving", "socket", cfg.SocketPath)
	}
	switch {
	case cfg.NoReadOnlySocket:
		if lro != nil {
			log.Info("closing the read-only socket passed by systemd: no read-only socket is configured")
			lro.Close()
			lro = nil
		}
	case lro != nil:
		log.Info("serving the read-only socket passed by systemd", "name", rpc.ActivationNameReadOnly)
	case activated:
		log.Info("systemd passed no read-only socket: unprivileged users cannot read (enable bitbuilderd-ro.socket)")
	default:
		// Any local user may connect; what it may call is limited by the server
		// (ServeReadOnly), not by the socket's mode. Owned by root, so only root can
		// remove or replace it.
		if lro, err = rpc.Listen(cfg.ReadOnlySocketPath, 0o666, -1); err != nil {
			l.Close()
			return nil, nil, err
		}
		log.Info("serving read-only", "socket", cfg.ReadOnlySocketPath)
	}
	return l, lro, nil
}

// machineUnitPrefix starts the name of every machine unit (units.MachineUnit).
const machineUnitPrefix = "tenant-machine@"

// machineOfUnit returns the machine name a machine unit runs, "" for other units.
func machineOfUnit(unit string) string {
	inst, ok := strings.CutPrefix(unit, machineUnitPrefix)
	if !ok {
		return ""
	}
	inst, ok = strings.CutSuffix(inst, ".service")
	if !ok {
		return ""
	}
	return units.Unescape(inst)
}

func notify(log *slog.Logger, state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
}
