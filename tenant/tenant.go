// Package tenant holds BitBuilder's tenant records and their rules: names, network index
// allocation, resources, templates, desired state, and the observed phase and conditions
// that the reconciler reports. It stores records through store.Store and knows nothing of
// Varlink or the host.
//
// Records live under kind "tenant"; each tenant's network index is claimed under kind
// "netindex" in the same atomic commit, so two tenants can never hold one index, even when
// their creates race. Delete only marks a tenant; the reconciler removes everything the
// tenant had on the host and then calls Finalize, which drops the record and frees the index.
package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
)

// Store kinds used by this package.
const (
	KindTenant   = "tenant"
	KindNetIndex = "netindex"
)

// DesiredState is what the daemon should make of a tenant.
type DesiredState string

// Desired states.
const (
	Running DesiredState = "running"
	Stopped DesiredState = "stopped"
)

// Phase is where the daemon is with a tenant.
type Phase string

// Phases.
const (
	PhasePending      Phase = "pending"
	PhaseProvisioning Phase = "provisioning"
	PhaseReady        Phase = "ready"
	PhaseDegraded     Phase = "degraded"
	PhaseFailed       Phase = "failed"
	PhaseStopping     Phase = "stopping"
	PhaseStopped      Phase = "stopped"
	PhaseDeleting     Phase = "deleting"
)

// Resources are a tenant's limits.
type Resources struct {
	CPUs         float64 `json:"cpus"`
	MemoryBytes  int64   `json:"memoryBytes"`
	StorageBytes int64   `json:"storageBytes"`
}

// TemplateUse is one template a tenant is built from.
type TemplateUse struct {
	Role     string `json:"role"`
	Name     string `json:"name"`
	Template string `json:"template"`
	Commit   string `json:"commit,omitempty"`
}

// Peer is a WireGuard peer of a tenant. Its syntax is checked by the network package
// before it is stored.
type Peer struct {
	PublicKey           string   `json:"publicKey"`
	Endpoint            string   `json:"endpoint,omitempty"`
	AllowedIPs          []string `json:"allowedIPs"`
	PersistentKeepalive int      `json:"persistentKeepalive,omitempty"`
}

// Network features a tenant can enable besides its bridge.
const (
	FeatureWireGuard = "wireguard"
	FeatureVXLAN     = "vxlan"
	FeatureVLAN      = "vlan"
)

// HasFeature reports whether the tenant enabled a network feature; WireGuard is also on
// when the tenant has peers.
func (t *Tenant) HasFeature(f string) bool {
	if f == FeatureWireGuard && len(t.Peers) > 0 {
		return true
	}
	return slices.Contains(t.NetworkFeatures, f)
}

// Condition is one aspect of observed state.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"` // "true", "false" or "unknown"
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Tenant is a tenant record.
type Tenant struct {
	Name            string            `json:"name"`
	NetworkIndex    int               `json:"networkIndex"`
	Resources       Resources         `json:"resources"`
	Templates       []TemplateUse     `json:"templates"`
	Parameters      map[string]string `json:"parameters"`
	NetworkFeatures []string          `json:"networkFeatures,omitempty"`
	Peers           []Peer            `json:"peers,omitempty"`
	Machines        []Machine         `json:"machines,omitempty"`
	Users           []User            `json:"users,omitempty"`
	DesiredState    DesiredState      `json:"desiredState"`
	Phase           Phase             `json:"phase"`
	Conditions      []Condition       `json:"conditions"`
	MachineStatus   []MachineStatus   `json:"machineStatus,omitempty"`
	// Generation counts the changes of what the tenant should be (everything but its
	// observed state); ObservedGeneration is the generation the reconciler's last recorded
	// status was derived from. A client that changed a tenant waits for ObservedGeneration
	// to reach its change's Generation before it trusts the phase (Kubernetes' metadata.generation).
	Generation          int64      `json:"generation,omitempty"`
	ObservedGeneration  int64      `json:"observedGeneration,omitempty"`
	CreatedAt           time.Time  `json:"createdAt"`
	UpdatedAt           time.Time  `json:"updatedAt"`
	DeletionRequestedAt *time.Time `json:"deletionRequestedAt,omitempty"`

	// Revision and CreateRevision come from the store, not the stored value.
	Revision       uint64 `json:"-"`
	CreateRevision uint64 `json:"-"`
}

// Deleting reports whether deletion was requested.
func (t *Tenant) Deleting() bool { return t.DeletionRequestedAt != nil }

// Spec is what a caller asks for when creating a tenant; zero values take defaults.
type Spec struct {
	Name            string
	NetworkIndex    int // 0: the lowest free index
	Resources       *Resources
	Templates       []TemplateUse
	Parameters      map[string]string
	NetworkFeatures []string
	Machines        []Machine
	DesiredState    DesiredState
}

// Changes are the fields an Update replaces; nil fields are kept.
type Changes struct {
	Resources       *Resources
	Templates       *[]TemplateUse
	Parameters      *map[string]string
	NetworkFeatures *[]string
	// Peers replaces the WireGuard peers (the network API adds and removes them).
	Peers *[]Peer
	// Machines replaces the machine list. Machines that keep their name keep their
	// restart generation.
	Machines *[]Machine
}

// TemplateResolver pins template uses to commits: it returns the commit the registry has
// pinned for a template, or an error wrapping ErrNoSuchTemplate-like causes.
type TemplateResolver interface {
	Resolve(ctx context.Context, template, role string) (commit string, err error)
}

// Config configures a Service.
type Config struct {
	// Store holds the records.
	Store store.Store
	// IndexMin and IndexMax bound network indexes (default 1 and 254).
	IndexMin, IndexMax int
	// DefaultResources are used when a create names none (default 1 CPU, 1 GiB, 10 GiB).
	DefaultResources Resources
	// Templates pins template uses; nil leaves commits as the caller gave them.
	Templates TemplateResolver
	// Now returns the time (default time.Now).
	Now func() time.Time
}

// Service implements tenant operations on the store.
type Service struct {
	cfg Config

	// reserved holds the network indexes that creates in flight in this process have
	// picked, so that concurrent creates pick different ones instead of colliding in the
	// store and retrying (each retry costs a durable commit).
	mu       sync.Mutex
	reserved map[int]bool
	used     map[int]bool // nil until first needed
	// low is at most the lowest free index: the scan for a free one starts there.
	low int
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("tenant: no store")
	}
	if cfg.IndexMin == 0 {
		cfg.IndexMin = 1
	}
	if cfg.IndexMax == 0 {
		cfg.IndexMax = 254
	}
	if cfg.IndexMin < 1 || cfg.IndexMax < cfg.IndexMin || cfg.IndexMax > 65535 {
		return nil, fmt.Errorf("tenant: invalid network index range %d..%d", cfg.IndexMin, cfg.IndexMax)
	}
	if cfg.DefaultResources == (Resources{}) {
		cfg.DefaultResources = Resources{CPUs: 1, MemoryBytes: 1 << 30, StorageBytes: 10 << 30}
	}
	if err := validateResources(cfg.DefaultResources); err != nil {
		return nil, fmt.Errorf("tenant: default resources: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, reserved: map[int]bool{}}, nil
}

// IndexRange returns the configured network index range.
func (s *Service) IndexRange() (int, int) { return s.cfg.IndexMin, s.cfg.IndexMax }

func indexKey(i int) string { return fmt.Sprintf("%05d", i) }

func decode(r store.Record) (*Tenant, error) {
	var t Tenant
	if err := json.Unmarshal(r.Value, &t); err != nil {
		return nil, fmt.Errorf("tenant: decode record %q: %w", r.Name, err)
	}
	t.Revision, t.CreateRevision = r.ModRevision, r.CreateRevision
	if t.Templates == nil {
		t.Templates = []TemplateUse{}
	}
	if t.Parameters == nil {
		t.Parameters = map[string]string{}
	}
	if t.Conditions == nil {
		t.Conditions = []Condition{}
	}
	return &t, nil
}

// Decode turns a stored value (for example from a watch event) into a Tenant.
func Decode(value []byte, modRevision, createRevision uint64) (*Tenant, error) {
	return decode(store.Record{Kind: KindTenant, Value: value, ModRevision: modRevision, CreateRevision: createRevision})
}

func encode(t *Tenant) []byte {
	b, err := json.Marshal(t)
	if err != nil {
		panic(err) // only plain data: cannot fail
	}
	return b
}

func (s *Service) pin(ctx context.Context, ts []TemplateUse) ([]TemplateUse, error) {
	out := slices.Clone(ts)
	if out == nil {
		out = []TemplateUse{}
	}
	if s.cfg.Templates == nil {
		return out, nil
	}
	for i := range out {
		if out[i].Commit != "" {
			continue
		}
		commit, err := s.cfg.Templates.Resolve(ctx, out[i].Template, out[i].Role)
		if errors.Is(err, ErrTemplateRole) {
			return nil, &FieldError{Field: fmt.Sprintf("templates[%d].template", i), Reason: err.Error()}
		}
		if err != nil {
			return nil, &TemplateError{Template: out[i].Template, Err: err}
		}
		out[i].Commit = commit
	}
	return out, nil
}

// Create validates spec, allocates a network index and stores the tenant durably.
func (s *Service) Create(ctx context.Context, spec Spec) (*Tenant, error) {
	if err := ValidateName(spec.Name); err != nil {
		return nil, err
	}
	res := s.cfg.DefaultResources
	if spec.Resources != nil {
		res = *spec.Resources
	}
	if err := validateResources(res); err != nil {
		return nil, err
	}
	if err := validateTemplates(spec.Templates); err != nil {
		return nil, err
	}
	if err := validateParameters(spec.Parameters); err != nil {
		return nil, err
	}
	if err := validateFeatures(spec.NetworkFeatures); err != nil {
		return nil, err
	}
	desired := spec.DesiredState
	if desired == "" {
		desired = Running
	}
	if desired != Running && desired != Stopped {
		return nil, &FieldError{Field: "desiredState", Reason: fmt.Sprintf("%q is not running or stopped", desired)}
	}
	if spec.NetworkIndex != 0 && (spec.NetworkIndex < s.cfg.IndexMin || spec.NetworkIndex > s.cfg.IndexMax) {
		return nil, &FieldError{Field: "networkIndex", Reason: fmt.Sprintf("%d is outside the range %d..%d", spec.NetworkIndex, s.cfg.IndexMin, s.cfg.IndexMax)}
	}
	templates, err := s.pin(ctx, spec.Templates)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	t := &Tenant{
		Name:            spec.Name,
		Resources:       res,
		Templates:       templates,
		Parameters:      maps.Clone(spec.Parameters),
		NetworkFeatures: normalizeFeatures(spec.NetworkFeatures),
		DesiredState:    desired,
		Phase:           PhasePending,
		Conditions:      []Condition{},
		Generation:      1,
		CreatedAt:       now,
		UpdatedAt:       now,
	}
	if t.Parameters == nil {
		t.Parameters = map[string]string{}
	}
	t.Machines = slices.Clone(spec.Machines)
	if err := validateMachines(ctx, t, s.inspector()); err != nil {
		return nil, err
	}
	if pc := s.parameterChecker(); pc != nil {
		if err := pc.CheckParameters(ctx, t); err != nil {
			return nil, err
		}
	}
	claims, claimNames := s.claimOps(ctx, nil, t)

	// Claim an index and the name in one commit. When the index was picked automatically
	// and a concurrent create took it first, pick again.
	for attempt := 0; ; attempt++ {
		idx := spec.NetworkIndex
		if idx == 0 {
			idx, err = s.freeIndex(ctx, attempt)
			if err != nil {
				return nil, err
			}
		}
		t.NetworkIndex = idx
		ops := append([]store.Op{
			{Type: store.OpCreate, Kind: KindTenant, Name: t.Name, Value: encode(t)},
			{Type: store.OpCreate, Kind: KindNetIndex, Name: indexKey(idx), Value: []byte(t.Name)},
		}, claims...)
		rev, err := s.cfg.Store.Commit(ctx, ops...)
		var opErr *store.OpError
		indexTaken := err == nil || errors.As(err, &opErr) && opErr.Index == 1 && errors.Is(err, store.ErrExists)
		if spec.NetworkIndex == 0 || indexTaken {
			s.release(idx, indexTaken)
		}
		if cerr := s.claimError(ctx, t, err, 2, claimNames); cerr != nil {
			return nil, cerr
		}
		switch {
		case err == nil:
			t.Revision, t.CreateRevision = rev, rev
			return t, nil
		case errors.As(err, &opErr) && opErr.Index == 0 && errors.Is(err, store.ErrExists):
			return nil, fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
		case errors.As(err, &opErr) && opErr.Index == 1 && errors.Is(err, store.ErrExists):
			if spec.NetworkIndex != 0 || attempt >= 64 {
				holder := "another tenant"
				if r, gerr := s.cfg.Store.Get(ctx, KindNetIndex, indexKey(idx)); gerr == nil {
					holder = string(r.Value)
				}
				return nil, &IndexInUseError{Index: idx, Tenant: holder}
			}
		default:
			return nil, err
		}
	}
}

// freeIndex returns the lowest free network index and reserves it until release. After
// attempt lost races for it (possible only with another writer on the same store), it
// picks at random among the lowest 2^attempt free ones, so that racers spread out.
//
// The set of used indexes is read from the store once and then kept in memory: this
// process is the store's only writer, so every change to it passes through Create,
// Finalize or a lost race, which all update the set.
func (s *Service) freeIndex(ctx context.Context, attempt int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used == nil {
		recs, _, err := s.cfg.Store.List(ctx, KindNetIndex)
		if err != nil {
			return 0, err
		}
		s.used = make(map[int]bool, len(recs))
		for _, r := range recs {
			if n, err := strconv.Atoi(r.Name); err == nil {
				s.used[n] = true
			}
		}
		s.low = s.cfg.IndexMin
	}
	window := 1 << min(attempt, 10)
	var free []int
	for s.low <= s.cfg.IndexMax && s.used[s.low] {
		s.low++
	}
	for i := s.low; i <= s.cfg.IndexMax && len(free) < window; i++ {
		if !s.used[i] && !s.reserved[i] {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return 0, &NoFreeIndexError{Min: s.cfg.IndexMin, Max: s.cfg.IndexMax}
	}
	idx := free[rand.IntN(len(free))]
	s.reserved[idx] = true
	return idx, nil
}

// release ends the reservation of idx; taken says whether the index is now used.
func (s *Service) release(idx int, taken bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, idx)
	if s.used != nil {
		if taken {
			s.used[idx] = true
		} else {
			delete(s.used, idx)
			s.low = min(s.low, idx)
		}
	}
}

// Get returns one tenant (see Record for the errors).
func (s *Service) Get(ctx context.Context, name string) (*Tenant, error) {
	r, err := s.Record(ctx, name)
	if err != nil {
		return nil, err
	}
	return decode(r)
}

// List returns all tenants in name order and the store revision they were read at.
func (s *Service) List(ctx context.Context) ([]*Tenant, uint64, error) {
	recs, rev, err := s.cfg.Store.List(ctx, KindTenant)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*Tenant, 0, len(recs))
	for _, r := range recs {
		t, err := decode(r)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, t)
	}
	return out, rev, nil
}

// Record returns the stored record of one tenant, undecoded. A name no tenant could have
// is an error of its own (a *NameError), the same as Create gives for it.
func (s *Service) Record(ctx context.Context, name string) (store.Record, error) {
	if err := ValidateName(name); err != nil {
		var ne *NameError
		// Reserved names are valid for lookups: no tenant has one, so "not found" is right.
		if !errors.As(err, &ne) || ne.Reason != "reserved" {
			return store.Record{}, err
		}
	}
	r, err := s.cfg.Store.Get(ctx, KindTenant, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Record{}, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	}
	return r, err
}

// Records returns the stored records of all tenants in name order, undecoded, and the store
// revision they were read at: for callers that cache what they derive from a record by its
// ModRevision.
func (s *Service) Records(ctx context.Context) ([]store.Record, uint64, error) {
	return s.cfg.Store.List(ctx, KindTenant)
}

// modify reads a tenant, applies fn and writes it back if the revision did not move.
// expect, when not 0, must be the tenant's current revision.
func (s *Service) modify(ctx context.Context, name string, expect uint64, fn func(t *Tenant) error) (*Tenant, error) {
	return s.change(ctx, name, expect, true, fn)
}

// change is modify; spec says the change is to what the tenant should be (its Generation
// moves), not only to its observed state.
func (s *Service) change(ctx context.Context, name string, expect uint64, spec bool, fn func(t *Tenant) error) (*Tenant, error) {
	for {
		t, err := s.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		if expect != 0 && t.Revision != expect {
			return nil, &RevisionError{Name: name, Expected: expect, Actual: t.Revision}
		}
		old := *t
		old.Machines, old.Templates = slices.Clone(t.Machines), slices.Clone(t.Templates)
		if err := fn(t); err != nil {
			return nil, err
		}
		if spec {
			t.Generation++
		}
		t.UpdatedAt = s.cfg.Now().UTC()
		claims, claimNames := s.claimOps(ctx, &old, t)
		ops := append([]store.Op{{Type: store.OpUpdate, Kind: KindTenant, Name: name, Value: encode(t), ExpectRevision: t.Revision}}, claims...)
		rev, err := s.cfg.Store.Commit(ctx, ops...)
		if cerr := s.claimError(ctx, t, err, 1, claimNames); cerr != nil {
			return nil, cerr
		}
		switch {
		case err == nil:
			t.Revision = rev
			return t, nil
		case errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("tenant %q: %w", name, ErrNotFound)
		case errors.Is(err, store.ErrRevisionMismatch):
			if expect != 0 {
				cur, gerr := s.Get(ctx, name)
				actual := uint64(0)
				if gerr == nil {
					actual = cur.Revision
				}
				return nil, &RevisionError{Name: name, Expected: expect, Actual: actual}
			}
			continue // a concurrent writer won; read again
		default:
			return nil, err
		}
	}
}

var errDeleting = &FieldError{Field: "name", Reason: "the tenant is being deleted"}

// Update replaces the given fields. expect, when not 0, must be the current revision.
func (s *Service) Update(ctx context.Context, name string, expect uint64, c Changes) (*Tenant, error) {
	if c.Resources != nil {
		if err := validateResources(*c.Resources); err != nil {
			return nil, err
		}
	}
	var templates []TemplateUse
	if c.Templates != nil {
		if err := validateTemplates(*c.Templates); err != nil {
			return nil, err
		}
		var err error
		if templates, err = s.pin(ctx, *c.Templates); err != nil {
			return nil, err
		}
	}
	if c.Parameters != nil {
		if err := validateParameters(*c.Parameters); err != nil {
			return nil, err
		}
	}
	if c.NetworkFeatures != nil {
		if err := validateFeatures(*c.NetworkFeatures); err != nil {
			return nil, err
		}
	}
	return s.modify(ctx, name, expect, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		if c.Resources != nil {
			t.Resources = *c.Resources
		}
		if c.Templates != nil {
			t.Templates = templates
		}
		if c.Parameters != nil {
			t.Parameters = maps.Clone(*c.Parameters)
			if t.Parameters == nil {
				t.Parameters = map[string]string{}
			}
		}
		if c.NetworkFeatures != nil {
			t.NetworkFeatures = normalizeFeatures(*c.NetworkFeatures)
		}
		if c.Peers != nil {
			t.Peers = slices.Clone(*c.Peers)
		}
		if c.Machines != nil {
			next := slices.Clone(*c.Machines)
			for i := range next {
				if old := t.MachineOf(next[i].Name); old != nil && next[i].RestartGeneration < old.RestartGeneration {
					next[i].RestartGeneration = old.RestartGeneration
				}
			}
			t.Machines = next
		}
		if c.Machines != nil || c.Templates != nil || c.Resources != nil {
			// The machines are checked against the templates and limits they will have.
			if err := validateMachines(ctx, t, s.inspector()); err != nil {
				return err
			}
		}
		if c.Machines != nil || c.Templates != nil {
			// The users need their homed templates, and must not collide with the new bases.
			if err := validateUsers(ctx, t, s.userInspector()); err != nil {
				return err
			}
		}
		if pc := s.parameterChecker(); pc != nil && (c.Parameters != nil || c.Templates != nil || c.NetworkFeatures != nil) {
			// The parameters are checked against what the templates the tenant will have declare
			// (which values are required can depend on its network features).
			if err := pc.CheckParameters(ctx, t); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetDesiredState sets the desired state (Start and Stop).
func (s *Service) SetDesiredState(ctx context.Context, name string, d DesiredState) (*Tenant, error) {
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		t.DesiredState = d
		return nil
	})
}

// Delete marks a tenant for deletion. The reconciler removes what the tenant has on the
// host and then calls Finalize. expect, when not 0, must be the current revision.
func (s *Service) Delete(ctx context.Context, name string, expect uint64) (*Tenant, error) {
	return s.modify(ctx, name, expect, func(t *Tenant) error {
		if t.DeletionRequestedAt == nil {
			now := s.cfg.Now().UTC()
			t.DeletionRequestedAt = &now
			t.Phase = PhaseDeleting
		}
		return nil
	})
}

// Finalize removes a tenant marked for deletion, and frees its network index, if it is
// still at revision rev.
func (s *Service) Finalize(ctx context.Context, t *Tenant) error {
	if !t.Deleting() {
		return fmt.Errorf("tenant %q: finalize without a deletion request", t.Name)
	}
	ops := []store.Op{
		{Type: store.OpDelete, Kind: KindTenant, Name: t.Name, ExpectRevision: t.Revision},
		{Type: store.OpDelete, Kind: KindNetIndex, Name: indexKey(t.NetworkIndex)},
	}
	for _, n := range machineNames(t) {
		if s.claimed(ctx, n, t.Name) {
			ops = append(ops, store.Op{Type: store.OpDelete, Kind: KindMachineName, Name: n})
		}
	}
	_, err := s.cfg.Store.Commit(ctx, ops...)
	if err == nil {
		s.mu.Lock()
		if s.used != nil {
			delete(s.used, t.NetworkIndex)
			s.low = min(s.low, t.NetworkIndex)
		}
		s.mu.Unlock()
	}
	return err
}

// ParameterChecker checks a tenant's parameters against the parameters its templates declare
// (unknown names, values of the wrong type, missing required values). A TemplateResolver may
// implement it; without one parameters are checked only for their form. The error names the
// parameter as a *FieldError of field "parameters.NAME".
type ParameterChecker interface {
	CheckParameters(ctx context.Context, t *Tenant) error
}

// parameterChecker returns the template resolver as a ParameterChecker, if it is one.
func (s *Service) parameterChecker() ParameterChecker {
	pc, _ := s.cfg.Templates.(ParameterChecker)
	return pc
}

// inspector returns the template resolver as a MachineInspector, if it is one.
func (s *Service) inspector() MachineInspector {
	mi, _ := s.cfg.Templates.(MachineInspector)
	return mi
}

// SetStatus records the observed phase and conditions if they differ from what is stored
// (transition times are kept for conditions whose status did not change). It returns the
// tenant as stored afterwards. Machine statuses are kept as they are.
func (s *Service) SetStatus(ctx context.Context, name string, phase Phase, conds []Condition) (*Tenant, error) {
	return s.SetFullStatus(ctx, name, phase, conds, nil, 0)
}

// SetFullStatus is SetStatus that also records the machines' observed state when machines is
// not nil (Since is kept for machines whose state did not change).
//
// observed is the Generation of the tenant the status was derived from (0: leave
// ObservedGeneration as it is); a status of an older generation does not move it back.
func (s *Service) SetFullStatus(ctx context.Context, name string, phase Phase, conds []Condition, machines []MachineStatus, observed int64) (*Tenant, error) {
	t, err := s.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	if probe := *t; !applyStatus(&probe, phase, conds, machines, observed, now) {
		return t, nil
	}
	return s.change(ctx, name, 0, false, func(cur *Tenant) error {
		applyStatus(cur, phase, conds, machines, observed, now)
		return nil
	})
}

// applyStatus records a status in t (see SetFullStatus) and reports whether that changed t.
// It replaces t's slices rather than changing them in place.
func applyStatus(t *Tenant, phase Phase, conds []Condition, machines []MachineStatus, observed int64, now time.Time) bool {
	if t.Deleting() && phase != PhaseDeleting {
		phase = PhaseDeleting
	}
	merged := MergeConditions(t.Conditions, conds, now)
	var ms []MachineStatus
	if machines != nil {
		ms = MergeMachineStatus(t.MachineStatus, machines, now)
	}
	if t.Phase == phase && conditionsEqual(t.Conditions, merged) && (machines == nil || machineStatusEqual(t.MachineStatus, ms)) &&
		observed <= t.ObservedGeneration {
		return false
	}
	if observed > t.ObservedGeneration {
		t.ObservedGeneration = observed
	}
	t.Phase, t.Conditions = phase, merged
	if machines != nil {
		t.MachineStatus = ms
	}
	return true
}

// statusDeferrer is a store that takes writes no caller waits for (store.Bolt).
type statusDeferrer interface {
	Defer(kind, name string, merge store.Merge) error
}

// QueueStatus records the status a reconcile pass of t observed (as SetFullStatus does) without
// waiting for it to be durable, when the store can defer writes: the write is coalesced with
// later ones of the same tenant and rides along with the next transaction of client commits
// (store.Bolt.Defer), so it costs no sync of its own and never holds up a client. Nothing is
// acknowledged by it: a crash may lose it, and the first pass after a start writes the status
// again from the host. A pass that started before the tenant was marked for deletion does not
// write over it (the deletion path records its own status).
//
// t is the record the pass worked from. The new value for the record at t's revision is made
// here, outside the store's transaction; only when the record moved meanwhile is it decoded
// again there and the status merged into it. So a pass decodes its record once.
func (s *Service) QueueStatus(ctx context.Context, t *Tenant, phase Phase, conds []Condition, machines []MachineStatus, observed int64) error {
	d, ok := s.cfg.Store.(statusDeferrer)
	if !ok {
		_, err := s.SetFullStatus(ctx, t.Name, phase, conds, machines, observed)
		return err
	}
	now := s.cfg.Now().UTC()
	conds, machines = slices.Clone(conds), slices.Clone(machines)
	// The value for the record as the pass read it is made here, outside the committer's
	// transaction, which then only hands it over (nil: nothing changed).
	merged := func(next Tenant) []byte {
		if next.Deleting() && phase != PhaseDeleting || !applyStatus(&next, phase, conds, machines, observed, now) {
			return nil
		}
		next.UpdatedAt = now
		return encode(&next)
	}
	ready := merged(*t)
	return d.Defer(KindTenant, t.Name, func(cur []byte, modRev uint64) ([]byte, error) {
		switch {
		case cur == nil:
			return nil, nil // finalized meanwhile
		case modRev == t.Revision:
			return ready, nil
		}
		dec, err := Decode(cur, modRev, 0)
		if err != nil {
			return nil, err
		}
		return merged(*dec), nil
	})
}

// MergeMachineStatus returns next in name order, with Since taken from old for machines whose
// state did not change, and set to now for the others.
func MergeMachineStatus(old, next []MachineStatus, now time.Time) []MachineStatus {
	out := make([]MachineStatus, 0, len(next))
	for _, m := range next {
		m.Since = now
		for _, o := range old {
			if o.Name == m.Name && o.State == m.State {
				m.Since = o.Since
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b MachineStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func machineStatusEqual(a, b []MachineStatus) bool {
	return slices.EqualFunc(a, b, func(x, y MachineStatus) bool {
		return x.Name == y.Name && x.State == y.State && x.Class == y.Class && x.Leader == y.Leader &&
			slices.Equal(x.Addresses, y.Addresses) && x.Unit == y.Unit && x.UnitState == y.UnitState &&
			x.Commit == y.Commit && x.RestartGeneration == y.RestartGeneration && x.Message == y.Message && x.Since.Equal(y.Since) &&
			slices.Equal(x.Extensions, y.Extensions)
	})
}

// MergeConditions returns next, with the transition times of old kept where a condition's
// status did not change, and set to now where it did.
func MergeConditions(old, next []Condition, now time.Time) []Condition {
	out := make([]Condition, 0, len(next))
	for _, c := range next {
		c.LastTransitionTime = now
		for _, o := range old {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Condition) int {
		if a.Type < b.Type {
			return -1
		}
		if a.Type > b.Type {
			return 1
		}
		return 0
	})
	return out
}

func conditionsEqual(a, b []Condition) bool {
	return slices.EqualFunc(a, b, func(x, y Condition) bool {
		return x.Type == y.Type && x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message && x.LastTransitionTime.Equal(y.LastTransitionTime)
	})
}
