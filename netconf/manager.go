package netconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/internal/names"
)

// Owner is a numeric file owner.
type Owner struct{ UID, GID int }

// Config configures a Manager. Zero fields take their documented defaults.
type Config struct {
	// Dir is where rendered files go; default /run/systemd/network (runtime, so nothing survives a reboot that the
	// daemon has not rewritten).
	Dir string
	// TenantsDir holds each tenant's network directory, <TenantsDir>/<tenant>/network, with its WireGuard key;
	// default /var/lib/bitbuilder/tenants.
	TenantsDir string
	// MinIndex and MaxIndex bound the network index; default 1 and 254.
	MinIndex, MaxIndex int
	// Addresses gives the networks of the tenant with a network index, from which the built-in variables
	// ${BRIDGE_ADDRESS}, ${GATEWAY}, ... are set. Required: they are derived in one place, by the network manager
	// (package netns, netns.Manager.Prefixes, from its BasePrefix), so that the files networkd gets and the links
	// and filters the daemon makes can never disagree.
	Addresses func(index int) Addresses
	// Reloader applies the files; default NetworkdBus on the system bus.
	Reloader Reloader
	// KeyOwner owns the key file and directory so that systemd-networkd (user systemd-network) can read them;
	// default: the systemd-network user of this host if it exists, else the files stay root's.
	KeyOwner *Owner
	// Logger; default discards.
	Logger *slog.Logger
}

// Manager renders network templates for tenants, writes the files, and has networkd apply them.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// pending is set while networkd may not have applied the files: a reload failed, or this
	// process has not reloaded yet (a previous one may have written files and died before its
	// reload, which nothing in memory can tell). The next Apply or Remove then reloads even
	// without changes.
	pending bool
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		cfg.Dir = "/run/systemd/network"
	}
	if cfg.TenantsDir == "" {
		cfg.TenantsDir = "/var/lib/bitbuilder/tenants"
	}
	if !filepath.IsAbs(cfg.Dir) || !filepath.IsAbs(cfg.TenantsDir) {
		return nil, fmt.Errorf("netconf config: Dir %q and TenantsDir %q must be absolute paths", cfg.Dir, cfg.TenantsDir)
	}
	if cfg.MinIndex == 0 && cfg.MaxIndex == 0 {
		cfg.MinIndex, cfg.MaxIndex = 1, 254
	}
	if cfg.MinIndex < 0 || cfg.MaxIndex < cfg.MinIndex {
		return nil, fmt.Errorf("netconf config: MinIndex..MaxIndex %d..%d is not a range", cfg.MinIndex, cfg.MaxIndex)
	}
	if cfg.Addresses == nil {
		return nil, errors.New("netconf config: Addresses is required (the tenants' networks, as package netns derives them)")
	}
	if cfg.Reloader == nil {
		cfg.Reloader = NetworkdBus{}
	}
	if cfg.KeyOwner == nil {
		if u, err := user.Lookup("systemd-network"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			cfg.KeyOwner = &Owner{UID: uid, GID: gid}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, pending: true}, nil
}

func checkTenant(name string) error {
	var le *names.LabelError
	if errors.As(names.CheckLabel(name), &le) {
		return &ValueError{Name: "tenant", Value: name, Rule: "not a hostname label: " + le.Reason()}
	}
	return nil
}

func (m *Manager) checkInput(in Input) error {
	if err := checkTenant(in.Tenant); err != nil {
		return err
	}
	if in.Index < m.cfg.MinIndex || in.Index > m.cfg.MaxIndex {
		return &IndexError{Index: in.Index, Min: m.cfg.MinIndex, Max: m.cfg.MaxIndex}
	}
	return nil
}

func (m *Manager) networkDir(tenant string) string {
	return filepath.Join(m.cfg.TenantsDir, tenant, "network")
}

// Render fills t for in without touching anything. Every problem is reported (joined); on error no file is
// returned. Built-in variables: ${TENANT}, ${NETWORK_DIR}, ${WIREGUARD_KEY_FILE}.
func (m *Manager) Render(t *Template, in Input) ([]Rendered, error) {
	if err := m.checkInput(in); err != nil {
		return nil, err
	}
	dir := m.networkDir(in.Tenant)
	vars := map[string]string{
		VarTenant: in.Tenant, VarNetworkDir: dir, VarWireGuardKeyFile: filepath.Join(dir, keyFileName),
	}
	maps.Copy(vars, addressVars(m.cfg.Addresses(in.Index)))
	return render(t, in, vars)
}

// Result says what Apply did.
type Result struct {
	Files   []string // paths of the tenant's files in Config.Dir
	Changed bool     // a file was written or removed (networkd was asked to reload)
	// PublicKey is the tenant's WireGuard public key when the rendered files include a WireGuard netdev.
	PublicKey string
}

// Apply renders t for in, and only if that succeeds: generates the tenant's WireGuard key when a rendered .netdev
// is of Kind=wireguard, writes each changed file atomically (temporary file, fsync, rename) as
// 50-bitbuilder-<index>-<file>, removes the tenant's files that are no longer rendered, and asks networkd to
// reload when anything changed. Bad input changes nothing.
func (m *Manager) Apply(ctx context.Context, t *Template, in Input) (Result, error) {
	files, err := m.Render(t, in)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, f := range files {
		if isWireGuard(f.Source, string(f.Content)) {
			if res.PublicKey, err = m.EnsureKey(in.Tenant); err != nil {
				return res, err
			}
		}
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return res, fmt.Errorf("%w: %v", ErrWrite, err)
	}
	keep := map[string]bool{}
	for _, f := range files {
		path := filepath.Join(m.cfg.Dir, f.Name)
		keep[f.Name] = true
		res.Files = append(res.Files, path)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.Content) {
			continue
		}
		if err := writeAtomic(path, f.Content, 0o644, nil); err != nil {
			return res, err
		}
		res.Changed = true
		m.log.Info("wrote network file", "tenant", in.Tenant, "file", path)
	}
	removed, err := m.removeFiles(in.Index, keep)
	res.Changed = res.Changed || removed
	if err != nil {
		return res, err
	}
	return res, m.reload(ctx, res.Changed)
}

// Remove deletes the tenant's rendered files and its network directory (WireGuard key included), and asks networkd
// to reload. What is already gone is not an error.
func (m *Manager) Remove(ctx context.Context, tenant string, index int) error {
	if err := m.checkInput(Input{Tenant: tenant, Index: index}); err != nil {
		return err
	}
	removed, err := m.removeFiles(index, nil)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(m.networkDir(tenant)); err != nil {
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	_ = os.Remove(filepath.Join(m.cfg.TenantsDir, tenant)) // only when empty: other parts of the daemon own the rest
	return m.reload(ctx, removed)
}

// Describe returns the tenant's files as they are in Config.Dir, sorted by name.
func (m *Manager) Describe(index int) ([]Rendered, error) {
	names, err := m.tenantFiles(index)
	if err != nil {
		return nil, err
	}
	var out []Rendered
	for _, name := range names {
		content, err := os.ReadFile(filepath.Join(m.cfg.Dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrWrite, err)
		}
		out = append(out, Rendered{Source: strings.TrimPrefix(name, filePrefix(index)), Name: name, Content: content})
	}
	return out, nil
}

func (m *Manager) tenantFiles(index int) ([]string, error) {
	entries, err := os.ReadDir(m.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrite, err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), filePrefix(index)) && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

func (m *Manager) removeFiles(index int, keep map[string]bool) (bool, error) {
	names, err := m.tenantFiles(index)
	if err != nil {
		return false, err
	}
	removed := false
	for _, name := range names {
		if keep[name] {
			continue
		}
		if err := os.Remove(filepath.Join(m.cfg.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("%w: %v", ErrWrite, err)
		}
		removed = true
		m.log.Info("removed network file", "index", index, "file", name)
	}
	return removed, nil
}

func (m *Manager) reload(ctx context.Context, changed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !changed && !m.pending {
		return nil
	}
	if err := m.cfg.Reloader.Reload(ctx); err != nil {
		m.pending = true
		return err
	}
	m.pending = false
	return nil
}

// writeAtomic writes content to path through a temporary file in the same directory: write, fsync, chmod, rename,
// fsync the directory. Readers see the old file or the new one, never a part. chown, when not nil, is applied to the
// temporary file before the rename.
func writeAtomic(path string, content []byte, mode os.FileMode, chown func(string) error) error {
	if err := atomicfile.WriteFile(path, content, atomicfile.Options{Mode: mode, Chown: chown}); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrWrite, path, err)
	}
	return nil
}

// Addresses are a tenant's networks, as package netns derives them (netns.Prefixes).
type Addresses struct {
	Gateway   netip.Prefix // the bridge's address with its network's length (10.N.0.1/24)
	Bridge    netip.Prefix // the bridge's network (10.N.0.0/24)
	WireGuard netip.Prefix // the WireGuard link's address with its network's length (10.N.100.1/24)
}

// addressVars are the built-in address variables of a tenant with these networks.
func addressVars(a Addresses) map[string]string {
	return map[string]string{
		VarGateway:          a.Gateway.Addr().String(),
		VarBridgeAddress:    a.Gateway.String(),
		VarBridgeNetwork:    a.Bridge.Masked().String(),
		VarWireGuardAddress: a.WireGuard.String(),
		VarWireGuardNetwork: a.WireGuard.Masked().String(),
	}
}
