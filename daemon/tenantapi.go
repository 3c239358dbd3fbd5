package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// tenantAPI implements io.bitbuilder.Tenant.
type tenantAPI struct {
	svc   *tenant.Service
	store store.Store
	log   *slog.Logger

	// listCache holds each tenant's reply encoding by the record's revision, so that
	// List, the hot enumeration, does not decode and re-encode unchanged records, and Get
	// does not even read a record while the store did not change.
	mu        sync.Mutex
	listCache map[string]cachedTenant
}

type cachedTenant struct {
	revision uint64 // the record's ModRevision
	// seenAt is a store revision (Store.Revision) read before a read that found this
	// record: every commit acknowledged up to it was visible to that read, so while the
	// store's revision is still seenAt, no write to the record since was acknowledged and
	// the record is current. 0 when not known.
	seenAt uint64
	raw    []byte // {"tenant":{...}}
}

func toAPI(t *tenant.Tenant) vt.Tenant {
	out := vt.Tenant{
		Name:         t.Name,
		NetworkIndex: int64(t.NetworkIndex),
		Resources: vt.Resources{
			Cpus:         t.Resources.CPUs,
			MemoryBytes:  t.Resources.MemoryBytes,
			StorageBytes: t.Resources.StorageBytes,
		},
		Templates:          make([]vt.TemplateUse, 0, len(t.Templates)),
		Parameters:         map[string]string{},
		NetworkFeatures:    append([]string{}, t.NetworkFeatures...),
		DesiredState:       vt.DesiredState(t.DesiredState),
		Phase:              vt.Phase(t.Phase),
		Conditions:         make([]vt.Condition, 0, len(t.Conditions)),
		Generation:         max(t.Generation, 1),
		ObservedGeneration: t.ObservedGeneration,
		Revision:           int64(t.Revision),
		CreateRevision:     int64(t.CreateRevision),
		CreatedAt:          t.CreatedAt.UTC().Format(time.RFC3339Nano),
		UpdatedAt:          t.UpdatedAt.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range t.Parameters {
		out.Parameters[k] = v
	}
	for _, u := range t.Templates {
		tu := vt.TemplateUse{Role: u.Role, Name: u.Name, Template: u.Template}
		if u.Commit != "" {
			c := u.Commit
			tu.Commit = &c
		}
		out.Templates = append(out.Templates, tu)
	}
	out.Machines = make([]vt.Machine, 0, len(t.Machines))
	for _, m := range t.Machines {
		am := vt.Machine{
			Name: m.Name, MachineName: tenant.MachineName(t.Name, m.Name), Kind: vt.MachineKind(m.Kind), Template: m.Template,
			Cpus: m.CPUs, MemoryBytes: m.MemoryBytes, DesiredState: vt.DesiredState(m.DesiredState), RestartGeneration: m.RestartGeneration,
		}
		if st := t.StatusOf(m.Name); st != nil {
			am.Status = machineStatusToAPI(st)
		}
		out.Machines = append(out.Machines, am)
	}
	out.Users = usersToAPI(t)
	for _, c := range t.Conditions {
		out.Conditions = append(out.Conditions, vt.Condition{
			Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message,
			LastTransitionTime: c.LastTransitionTime.UTC().Format(time.RFC3339Nano),
		})
	}
	return out
}

func machineStatusToAPI(st *tenant.MachineStatus) *vt.MachineStatus {
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	out := &vt.MachineStatus{
		State: vt.MachineState(st.State), Class: opt(st.Class), Addresses: append([]string{}, st.Addresses...),
		Unit: st.Unit, UnitState: opt(st.UnitState), Commit: opt(st.Commit), RestartGeneration: st.RestartGeneration,
		Message: opt(st.Message), Since: st.Since.UTC().Format(time.RFC3339Nano),
	}
	if st.Leader != 0 {
		l := int64(st.Leader)
		out.Leader = &l
	}
	if len(st.Extensions) > 0 {
		exts := slices.Clone(st.Extensions)
		out.Extensions = &exts
	}
	return out
}

func fromAPIMachines(ms *[]vt.MachineSpec) *[]tenant.Machine {
	if ms == nil {
		return nil
	}
	out := make([]tenant.Machine, 0, len(*ms))
	for _, m := range *ms {
		tm := tenant.Machine{Name: m.Name, Kind: tenant.MachineKind(m.Kind), Template: m.Template, DesiredState: tenant.Running}
		if m.Cpus != nil {
			tm.CPUs = *m.Cpus
		}
		if m.MemoryBytes != nil {
			tm.MemoryBytes = *m.MemoryBytes
		}
		if m.DesiredState != nil {
			tm.DesiredState = tenant.DesiredState(*m.DesiredState)
		}
		out = append(out, tm)
	}
	return &out
}

func fromAPIResources(r *vt.Resources) *tenant.Resources {
	if r == nil {
		return nil
	}
	return &tenant.Resources{CPUs: r.Cpus, MemoryBytes: r.MemoryBytes, StorageBytes: r.StorageBytes}
}

func fromAPITemplates(ts *[]vt.TemplateUse) *[]tenant.TemplateUse {
	if ts == nil {
		return nil
	}
	out := make([]tenant.TemplateUse, 0, len(*ts))
	for _, u := range *ts {
		tu := tenant.TemplateUse{Role: u.Role, Name: u.Name, Template: u.Template}
		if u.Commit != nil {
			tu.Commit = *u.Commit
		}
		out = append(out, tu)
	}
	return &out
}

// revisionArg turns an optional revision parameter into the service's "0 = any".
func revisionArg(c vt.VarlinkCall, ctx context.Context, r *int64) (uint64, bool, error) {
	if r == nil {
		return 0, true, nil
	}
	if *r <= 0 {
		return 0, false, c.ReplyInvalidField(ctx, "revision", "must be a positive store revision")
	}
	return uint64(*r), true, nil
}

func (a *tenantAPI) Create(ctx context.Context, c vt.VarlinkCall, name string, networkIndex *int64, resources *vt.Resources, templates *[]vt.TemplateUse, parameters *map[string]string, networkFeatures *[]string, machines *[]vt.MachineSpec, desiredState *vt.DesiredState) error {
	spec := tenant.Spec{Name: name, Resources: fromAPIResources(resources)}
	if networkIndex != nil {
		if *networkIndex <= 0 || *networkIndex > 1<<16 {
			return c.ReplyInvalidField(ctx, "networkIndex", "must be a positive index within the configured range")
		}
		spec.NetworkIndex = int(*networkIndex)
	}
	if ts := fromAPITemplates(templates); ts != nil {
		spec.Templates = *ts
	}
	if parameters != nil {
		spec.Parameters = *parameters
	}
	if networkFeatures != nil {
		spec.NetworkFeatures = *networkFeatures
	}
	if desiredState != nil {
		spec.DesiredState = tenant.DesiredState(*desiredState)
	}
	if ms := fromAPIMachines(machines); ms != nil {
		spec.Machines = *ms
	}
	t, err := a.svc.Create(ctx, spec)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "tenant created", "tenant", t.Name, "networkIndex", t.NetworkIndex, "revision", t.Revision)
	return c.ReplyCreate(ctx, toAPI(t))
}

func (a *tenantAPI) Get(ctx context.Context, c vt.VarlinkCall, name string) error {
	rev := a.store.Revision()
	a.mu.Lock()
	ct, ok := a.listCache[name]
	a.mu.Unlock()
	if ok && ct.seenAt == rev && rev != 0 {
		// Nothing was committed since the cached record was read: it is current.
		return writeRaw(ctx, c, ct.raw, false)
	}
	r, err := a.svc.Record(ctx, name)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	raw, err := a.encoded(r, rev)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return writeRaw(ctx, c, raw, false)
}

// encoded returns a record's reply encoding ({"tenant":{...}}), from the cache when the
// record did not change since it was encoded. seenAt is the store's revision read before
// the record was (0 if not known). The cache keeps the newest record it was given, so a
// slower reader of an older one does not put it back.
func (a *tenantAPI) encoded(r store.Record, seenAt uint64) ([]byte, error) {
	a.mu.Lock()
	ct, ok := a.listCache[r.Name]
	if ok && ct.revision == r.ModRevision {
		if seenAt > ct.seenAt {
			ct.seenAt = seenAt
			a.listCache[r.Name] = ct
		}
		a.mu.Unlock()
		return ct.raw, nil
	}
	a.mu.Unlock()
	t, err := tenant.Decode(r.Value, r.ModRevision, r.CreateRevision)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(struct {
		Tenant vt.Tenant `json:"tenant"`
	}{toAPI(t)})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.listCache == nil {
		a.listCache = map[string]cachedTenant{}
	}
	if cur, ok := a.listCache[r.Name]; !ok || cur.revision < r.ModRevision {
		a.listCache[r.Name] = cachedTenant{revision: r.ModRevision, seenAt: seenAt, raw: raw}
	}
	a.mu.Unlock()
	return raw, nil
}

// warm fills the reply cache from the records as they are at start-up, so that the first List
// after a start is not the one that decodes and encodes every record. It first takes the
// replies the last clean shutdown kept (kept, from loadReplies), then encodes the records they
// do not cover in reverse name order: a List that comes meanwhile encodes from the front, and
// the two meet without encoding a record twice. An entry is never replaced by an older
// revision's. It stops when ctx ends, and returns how many records it went through.
func (a *tenantAPI) warm(ctx context.Context, kept map[string]cachedTenant) int {
	a.adopt(kept)
	recs, _, err := a.svc.Records(ctx)
	if err != nil {
		return 0
	}
	for i := len(recs) - 1; i >= 0 && ctx.Err() == nil; i-- {
		a.encoded(recs[i], 0)
	}
	return len(recs)
}

// writeRaw frames a reply whose parameters are already encoded by json.Marshal, without
// having the library validate and copy them again. The connection's writer buffers the
// reply's parts, so they are not copied into a message of their own either.
func writeRaw(ctx context.Context, c vt.VarlinkCall, raw []byte, continues bool) error {
	if c.IsOneway() {
		return nil
	}
	end := replyEnd
	if continues {
		end = replyEndContinues
	}
	return rpc.WriteReply(ctx, c.Conn, replyStart, raw, end)
}

var (
	replyStart        = []byte(`{"parameters":`)
	replyEnd          = []byte("}\x00")
	replyEndContinues = []byte(`,"continues":true}` + "\x00")
)

func (a *tenantAPI) List(ctx context.Context, c vt.VarlinkCall) error {
	recs, _, err := a.svc.Records(ctx)
	if err != nil {
		return a.replyError(ctx, c, "", err)
	}
	if len(recs) == 0 {
		return c.ReplyNoSuchTenant(ctx, "")
	}
	for i, r := range recs {
		raw, err := a.encoded(r, 0)
		if err != nil {
			return a.replyError(ctx, c, r.Name, err)
		}
		if err := writeRaw(ctx, c, raw, i < len(recs)-1); err != nil {
			return err
		}
	}
	a.prune(recs)
	return nil
}

// prune drops cached encodings of tenants that no longer exist.
func (a *tenantAPI) prune(recs []store.Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.listCache) <= len(recs) {
		return
	}
	keep := make(map[string]bool, len(recs))
	for _, r := range recs {
		keep[r.Name] = true
	}
	for name := range a.listCache {
		if !keep[name] {
			delete(a.listCache, name)
		}
	}
}

func (a *tenantAPI) Update(ctx context.Context, c vt.VarlinkCall, name string, revision *int64, resources *vt.Resources, templates *[]vt.TemplateUse, parameters *map[string]string, networkFeatures *[]string, machines *[]vt.MachineSpec) error {
	expect, ok, err := revisionArg(c, ctx, revision)
	if !ok {
		return err
	}
	t, err := a.svc.Update(ctx, name, expect, tenant.Changes{
		Resources:       fromAPIResources(resources),
		Templates:       fromAPITemplates(templates),
		Parameters:      parameters,
		NetworkFeatures: networkFeatures,
		Machines:        fromAPIMachines(machines),
	})
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "tenant updated", "tenant", t.Name, "revision", t.Revision, "changed", changedFields(map[string]bool{
		"resources": resources != nil, "templates": templates != nil, "parameters": parameters != nil,
		"networkFeatures": networkFeatures != nil, "machines": machines != nil,
	}))
	return c.ReplyUpdate(ctx, toAPI(t))
}

func (a *tenantAPI) Delete(ctx context.Context, c vt.VarlinkCall, name string, revision *int64) error {
	expect, ok, err := revisionArg(c, ctx, revision)
	if !ok {
		return err
	}
	t, err := a.svc.Delete(ctx, name, expect)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "tenant deletion requested", "tenant", t.Name, "revision", t.Revision)
	return c.ReplyDelete(ctx)
}

func (a *tenantAPI) Start(ctx context.Context, c vt.VarlinkCall, name string) error {
	t, err := a.svc.SetDesiredState(ctx, name, tenant.Running)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "tenant desired state set", "tenant", name, "desiredState", t.DesiredState, "revision", t.Revision)
	return c.ReplyStart(ctx, toAPI(t))
}

func (a *tenantAPI) Stop(ctx context.Context, c vt.VarlinkCall, name string) error {
	t, err := a.svc.SetDesiredState(ctx, name, tenant.Stopped)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "tenant desired state set", "tenant", name, "desiredState", t.DesiredState, "revision", t.Revision)
	return c.ReplyStop(ctx, toAPI(t))
}

func (a *tenantAPI) StartMachine(ctx context.Context, c vt.VarlinkCall, name, machine string) error {
	t, err := a.svc.SetMachineState(ctx, name, machine, tenant.Running)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "machine desired state set", "tenant", name, "machine", machine, "desiredState", tenant.Running, "revision", t.Revision)
	return c.ReplyStartMachine(ctx, toAPI(t))
}

func (a *tenantAPI) StopMachine(ctx context.Context, c vt.VarlinkCall, name, machine string) error {
	t, err := a.svc.SetMachineState(ctx, name, machine, tenant.Stopped)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "machine desired state set", "tenant", name, "machine", machine, "desiredState", tenant.Stopped, "revision", t.Revision)
	return c.ReplyStopMachine(ctx, toAPI(t))
}

func (a *tenantAPI) RestartMachine(ctx context.Context, c vt.VarlinkCall, name, machine string) error {
	t, err := a.svc.RestartMachine(ctx, name, machine)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "machine restart requested", "tenant", name, "machine", machine)
	return c.ReplyRestartMachine(ctx, toAPI(t))
}

// Watch streams tenant changes. Without a revision it first sends the current tenants as
// "added" events stamped with the snapshot revision, so that resuming after any of them
// misses nothing.
func (a *tenantAPI) Watch(ctx context.Context, c vt.VarlinkCall, name *string, revision *int64) error {
	match := func(n string) bool { return name == nil || *name == n }
	if name != nil {
		if err := tenant.ValidateName(*name); err != nil {
			return a.replyError(ctx, c, *name, err)
		}
	}
	var from uint64
	if revision == nil {
		ts, rev, err := a.svc.List(ctx)
		if err != nil {
			return a.replyError(ctx, c, "", err)
		}
		for _, t := range ts {
			if !match(t.Name) {
				continue
			}
			api := toAPI(t)
			c.Continues = true
			if err := c.ReplyWatch(ctx, vt.Event{Type: "added", Revision: int64(rev), Name: t.Name, Tenant: &api}); err != nil {
				return err
			}
		}
		if err := rpc.Flush(c.Conn); err != nil {
			return err
		}
		from = rev
	} else {
		if *revision < 0 {
			return c.ReplyInvalidField(ctx, "revision", "must not be negative")
		}
		from = uint64(*revision)
	}
	ch, err := a.store.Watch(ctx, tenant.KindTenant, from)
	if err != nil {
		return a.replyError(ctx, c, "", err)
	}
	last := from
	for ev := range ch {
		last = ev.Revision
		if !match(ev.Name) {
			continue
		}
		e := vt.Event{Revision: int64(ev.Revision), Name: ev.Name}
		switch {
		case ev.Type == store.EventDelete:
			e.Type = "deleted"
		case ev.CreateRevision == ev.Revision:
			e.Type = "added"
		default:
			e.Type = "modified"
		}
		if t, err := tenant.Decode(ev.Value, ev.Revision, ev.CreateRevision); err == nil {
			api := toAPI(t)
			e.Tenant = &api
		}
		c.Continues = true
		if err := c.ReplyWatch(ctx, e); err != nil {
			return err
		}
		if err := rpc.Flush(c.Conn); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // the client hung up or the daemon is stopping
	}
	c.Continues = false
	werr := a.store.WatchErr(ch)
	var cerr *store.CompactedError
	switch {
	case errors.Is(werr, store.ErrWatchOverflow):
		return c.ReplyWatchOverflow(ctx, int64(last))
	case errors.As(werr, &cerr):
		return c.ReplyRevisionCompacted(ctx, int64(cerr.Requested), int64(cerr.Oldest))
	default:
		return c.ReplyStorageFailure(ctx, "watch ended: "+errString(werr))
	}
}

func errString(err error) string {
	if err == nil {
		return "store closed"
	}
	return err.Error()
}

// replyError maps an error of the tenant service or the store to a declared
// io.bitbuilder.Tenant error. It is the one place where that mapping lives.
func (a *tenantAPI) replyError(ctx context.Context, c vt.VarlinkCall, name string, err error) error {
	var (
		nameErr  *tenant.NameError
		fieldErr *tenant.FieldError
		inUse    *tenant.IndexInUseError
		noFree   *tenant.NoFreeIndexError
		revErr   *tenant.RevisionError
		tmplErr  *tenant.TemplateError
		compErr  *store.CompactedError
		machErr  *tenant.MachineError
		nameUse  *tenant.MachineNameInUseError
		userErr  *tenant.UserError
	)
	switch {
	case errors.As(err, &nameErr):
		return c.ReplyInvalidName(ctx, nameErr.Name, nameErr.Reason)
	case errors.As(err, &fieldErr):
		return c.ReplyInvalidField(ctx, fieldErr.Field, fieldErr.Reason)
	case errors.Is(err, tenant.ErrNotFound):
		return c.ReplyNoSuchTenant(ctx, name)
	case errors.As(err, &machErr):
		return c.ReplyNoSuchMachine(ctx, machErr.Tenant, machErr.Machine)
	case errors.As(err, &userErr):
		return c.ReplyNoSuchUser(ctx, userErr.Tenant, userErr.User)
	case errors.As(err, &nameUse):
		return c.ReplyMachineNameInUse(ctx, nameUse.Field, nameUse.Machine, nameUse.Tenant)
	case errors.Is(err, tenant.ErrExists):
		return c.ReplyTenantExists(ctx, name)
	case errors.As(err, &inUse):
		return c.ReplyNetworkIndexInUse(ctx, int64(inUse.Index), inUse.Tenant)
	case errors.As(err, &noFree):
		return c.ReplyNoFreeNetworkIndex(ctx, int64(noFree.Min), int64(noFree.Max))
	case errors.As(err, &revErr):
		return c.ReplyRevisionMismatch(ctx, revErr.Name, int64(revErr.Expected), int64(revErr.Actual))
	case errors.As(err, &tmplErr):
		return c.ReplyNoSuchTemplate(ctx, tmplErr.Template)
	case errors.As(err, &compErr):
		return c.ReplyRevisionCompacted(ctx, int64(compErr.Requested), int64(compErr.Oldest))
	case errors.Is(err, store.ErrFutureRevision):
		return c.ReplyInvalidField(ctx, "revision", "is newer than the store's revision")
	default:
		a.log.Error("tenant call failed", "tenant", name, "err", err)
		return c.ReplyStorageFailure(ctx, err.Error())
	}
}
