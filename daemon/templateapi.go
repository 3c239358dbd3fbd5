package daemon

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vtp "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	"github.com/bitbuilder/bitbuilder/netconf"
	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/template/metadata"
	"github.com/bitbuilder/bitbuilder/template/validate"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// fetchTimeout bounds one Add or Update.
const fetchTimeout = 10 * time.Minute

// templateAPI implements io.bitbuilder.Template over the registry.
type templateAPI struct {
	reg     *template.Registry
	tenants *tenant.Service
	scratch string // where pinned templates are checked out for Validate
	log     *slog.Logger

	// validations bounds Validate: how many run at once, and the verdicts kept for
	// registered templates. Its zero value takes the defaults.
	validations validations
	// checkout checks a registered template's commit out into dir for Validate
	// (nil: the registry's Materialize). Tests count checkouts through it.
	checkout func(ctx context.Context, name, commit, dir string) error
	// artifactSources is the administrator's allow-list of host files (nil: the default).
	artifactSources []string
	// params reads what templates declare (nil: made on first use from reg).
	params     *paramCache
	paramsOnce sync.Once
}

// declared returns the parameters the pinned commit of t declares, for the API; a template
// whose parameters cannot be read is logged and shows none.
func (a *templateAPI) declared(t template.Template) []vtp.Parameter {
	a.paramsOnce.Do(func() {
		if a.params == nil {
			a.params = newParamCache(a.reg)
		}
	})
	ps, err := a.params.paramsOf(t)
	if err != nil {
		a.log.Warn("cannot read the parameters a template declares", "template", t.Name, "commit", t.Commit, "err", err)
	}
	out := make([]vtp.Parameter, 0, len(ps))
	for _, p := range ps {
		out = append(out, vtp.Parameter{Name: p.Name, Type: p.Type, Default: p.Default, Description: p.Description, Required: p.Required, Feature: p.Feature})
	}
	return out
}

// templateUsers maps each template name to the tenants whose records use it, sorted:
// one read of the tenants serves a whole List.
func templateUsers(ctx context.Context, svc *tenant.Service) (map[string][]string, error) {
	ts, _, err := svc.List(ctx)
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	for _, t := range ts { // in name order, so each list comes out sorted
		seen := map[string]bool{}
		for _, u := range t.Templates {
			if !seen[u.Template] {
				seen[u.Template] = true
				users[u.Template] = append(users[u.Template], t.Name)
			}
		}
	}
	return users, nil
}

func toTemplateAPI(t template.Template, users []string, params []vtp.Parameter) vtp.Template {
	prev := t.PreviousCommits
	if prev == nil {
		prev = []string{}
	}
	return vtp.Template{
		Name: t.Name, Url: t.URL, Ref: t.Ref, Commit: t.Commit, Type: string(t.Type), Version: t.Version,
		PreviousCommits: prev, UsedBy: append([]string{}, users...),
		AddedAt: t.AddedAt.UTC().Format(time.RFC3339Nano), UpdatedAt: t.UpdatedAt.UTC().Format(time.RFC3339Nano),
		Parameters: params,
	}
}

// toAPI is the reply of a call that changed the registry: the change is done, so a failed
// read of the tenants is logged and leaves usedBy empty rather than failing the call.
func (a *templateAPI) toAPI(ctx context.Context, t template.Template) vtp.Template {
	users, err := templateUsers(ctx, a.tenants)
	if err != nil {
		a.log.Warn("cannot read the tenants that use a template", "template", t.Name, "err", err)
	}
	return toTemplateAPI(t, users[t.Name], a.declared(t))
}

// progressSender streams progress replies when the caller asked for more.
func progressSender(ctx context.Context, c *vtp.VarlinkCall) (func(template.Progress), *sync.Mutex) {
	var mu sync.Mutex
	if !c.WantsMore() {
		return nil, &mu
	}
	return func(p template.Progress) {
		mu.Lock()
		defer mu.Unlock()
		pr := &vtp.Progress{Phase: string(p.Phase), Message: p.Message}
		if p.Objects > 0 {
			n := int64(p.Objects)
			pr.Objects = &n
		}
		if p.TotalObjects > 0 {
			n := int64(p.TotalObjects)
			pr.TotalObjects = &n
		}
		c.Continues = true
		c.ReplyAdd(ctx, pr, nil) // Add and Update replies have the same shape
		rpc.Flush(c.Conn)
	}, &mu
}

func (a *templateAPI) Add(ctx context.Context, c vtp.VarlinkCall, name string, url string, ref *string) error {
	r := ""
	if ref != nil {
		r = *ref
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	progress, mu := progressSender(ctx, &c)
	t, err := a.reg.Add(fctx, name, url, r, progress)
	mu.Lock()
	defer mu.Unlock()
	c.Continues = false
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "template added", "template", name, "url", url, "commit", t.Commit)
	api := a.toAPI(ctx, t)
	return c.ReplyAdd(ctx, nil, &api)
}

func (a *templateAPI) Update(ctx context.Context, c vtp.VarlinkCall, name string) error {
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	progress, mu := progressSender(ctx, &c)
	t, err := a.reg.Update(fctx, name, progress)
	mu.Lock()
	defer mu.Unlock()
	c.Continues = false
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "template updated", "template", name, "commit", t.Commit)
	api := a.toAPI(ctx, t)
	return c.ReplyUpdate(ctx, nil, &api)
}

func (a *templateAPI) Pin(ctx context.Context, c vtp.VarlinkCall, name string, commit string) error {
	t, err := a.reg.Pin(ctx, name, commit)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "template pinned", "template", name, "commit", t.Commit)
	return c.ReplyPin(ctx, a.toAPI(ctx, t))
}

func (a *templateAPI) Get(ctx context.Context, c vtp.VarlinkCall, name string) error {
	t, err := a.reg.Get(name)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	users, err := templateUsers(ctx, a.tenants)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return c.ReplyGet(ctx, toTemplateAPI(t, users[t.Name], a.declared(t)))
}

func (a *templateAPI) List(ctx context.Context, c vtp.VarlinkCall) error {
	ts := a.reg.List()
	if len(ts) == 0 {
		return c.ReplyNoSuchTemplate(ctx, "")
	}
	users, err := templateUsers(ctx, a.tenants)
	if err != nil {
		return a.replyError(ctx, c, "", err)
	}
	for i, t := range ts {
		c.Continues = i < len(ts)-1
		if err := c.ReplyList(ctx, toTemplateAPI(t, users[t.Name], a.declared(t))); err != nil {
			return err
		}
	}
	return nil
}

// Remove removes a template that no tenant uses. The guard fails closed: when the tenants
// cannot be read, nothing is removed and the call fails with StorageFailure.
func (a *templateAPI) Remove(ctx context.Context, c vtp.VarlinkCall, name string) error {
	var readErr error
	err := a.reg.Remove(ctx, name, func(n string) []string {
		users, err := templateUsers(ctx, a.tenants)
		if err != nil {
			readErr = err
			return []string{"(unknown: the tenants could not be read)"} // refuses the removal
		}
		return users[n]
	})
	if readErr != nil {
		return a.replyError(ctx, c, name, fmt.Errorf("template %s was not removed: cannot tell whether tenants use it: %w", name, readErr))
	}
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "template removed", "template", name)
	return c.ReplyRemove(ctx)
}

// Validate checks a pinned template (checked out into a scratch directory) or a directory on
// the host. It reads only; a hostile tree cannot make it write or follow links out.
//
// Any local user may validate a registered template, so what that costs is bounded: a
// registered template's commit is immutable, so its verdict (for one type and architecture)
// is kept and served again without a checkout, and concurrent calls for one verdict share one
// run; at most validations.limit validations (by name or by path) run at once, and a caller
// over the limit waits as long as its context allows.
func (a *templateAPI) Validate(ctx context.Context, c vtp.VarlinkCall, name *string, path *string, typ *string, base *string, architecture *string) error {
	if (name == nil) == (path == nil) {
		return c.ReplyInvalidField(ctx, "name", "give exactly one of name and path")
	}
	opts := validate.Options{ArtifactSources: a.artifactSources}
	if architecture != nil {
		if !validate.IsArchitecture(*architecture) {
			return c.ReplyInvalidField(ctx, "architecture", fmt.Sprintf("%q is not a systemd architecture id (e.g. x86-64, arm64)", *architecture))
		}
		opts.Architecture = *architecture
	}
	if base != nil {
		if !filepath.IsAbs(*base) {
			return c.ReplyInvalidField(ctx, "base", "must be an absolute path")
		}
		if fi, err := os.Stat(*base); err != nil || !fi.IsDir() {
			return c.ReplyInvalidField(ctx, "base", fmt.Sprintf("%s is not a directory", *base))
		}
		opts.BaseRoot = *base
	}
	if typ != nil && !slices.Contains(validate.Kinds(), validate.Kind(*typ)) {
		return c.ReplyInvalidField(ctx, "type", fmt.Sprintf("%q is not a template type", *typ))
	}

	var (
		v        verdict
		err      error
		metaPath = "metadata.json" // where an InvalidMetadata reply says metadata.json is
	)
	if path != nil {
		if !filepath.IsAbs(*path) {
			return c.ReplyInvalidField(ctx, "path", "must be an absolute path")
		}
		if fi, err := os.Stat(*path); err != nil || !fi.IsDir() {
			return c.ReplyInvalidField(ctx, "path", fmt.Sprintf("%s is not a directory", *path))
		}
		metaPath = filepath.Join(*path, "metadata.json")
		v, err = a.validations.run(ctx, nil, func() (verdict, error) { return validateDir(ctx, *path, typ, opts) })
	} else {
		t, gerr := a.reg.Get(*name)
		if gerr != nil {
			return a.replyError(ctx, c, *name, gerr)
		}
		// With a base the verdict depends on the host's base tree, which can change: not kept.
		var key *verdictKey
		if base == nil {
			key = &verdictKey{template: t.Name, commit: t.Commit, typ: deref(typ), architecture: opts.Architecture}
		}
		v, err = a.validations.run(ctx, key, func() (verdict, error) { return a.validateCommit(ctx, t, typ, opts) })
	}
	if err != nil {
		if ctx.Err() != nil {
			return c.ReplyStorageFailure(ctx, "validation did not run: "+ctx.Err().Error())
		}
		return a.replyError(ctx, c, deref(name), err)
	}
	if v.badMetadata != nil {
		return c.ReplyInvalidMetadata(ctx, metaPath, v.badMetadata.Error()+" (pass type to validate a tree without metadata.json)")
	}

	findings := make([]vtp.Finding, 0, len(v.report.Findings))
	var nerr, nwarn int64
	var compatible *bool
	var reason *string
	for _, f := range v.report.Findings {
		findings = append(findings, vtp.Finding{Rule: f.Rule, Severity: string(f.Severity), Path: f.Path, Message: f.Message})
		switch f.Severity {
		case validate.SeverityError:
			nerr++
		case validate.SeverityWarning:
			nwarn++
		}
	}
	// What the template requires of the host (metadata.json's requirements), as warnings:
	// the tree is valid, but this host may not run it.
	if v.meta != nil {
		for _, p := range metadata.CheckHost(v.meta, metadata.ProbeHost(ctx)) {
			findings = append(findings, vtp.Finding{Rule: "requirements." + p.Requirement, Severity: "warning", Path: "metadata.json", Message: p.Message})
			nwarn++
		}
	}
	// With a base, an extension gets the verdict: every refusal of systemd counts, not only an incompatible
	// release (no release file, a misnamed one, ...). Other kinds have no extension to merge: no verdict.
	kind := validate.Kind(deref(typ))
	if typ == nil && v.meta != nil {
		kind = validate.Kind(v.meta.Template.Type)
	}
	if base != nil && (kind == validate.KindSysext || kind == validate.KindConfext) {
		ok, msg := validate.Compatibility(v.report, validate.Class(kind))
		compatible, reason = &ok, &msg
	}
	return c.ReplyValidate(ctx, findings, nerr, nwarn, compatible, reason)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// validateCommit checks a registered template's commit out into a scratch directory and
// validates it there.
func (a *templateAPI) validateCommit(ctx context.Context, t template.Template, typ *string, opts validate.Options) (verdict, error) {
	if err := os.MkdirAll(a.scratch, 0o700); err != nil {
		return verdict{}, err
	}
	tmp, err := os.MkdirTemp(a.scratch, "validate-")
	if err != nil {
		return verdict{}, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, t.Name)
	checkout := a.checkout
	if checkout == nil {
		checkout = func(ctx context.Context, name, commit, dir string) error {
			return a.reg.Materialize(ctx, name, commit, "", dir, nil)
		}
	}
	if err := checkout(ctx, t.Name, t.Commit, dir); err != nil {
		return verdict{}, err
	}
	return validateDir(ctx, dir, typ, opts)
}

// verdict is the outcome of one validation.
type verdict struct {
	report validate.Report
	meta   *metadata.Metadata // nil when validated by type
	// badMetadata is set when the tree's metadata.json cannot be used (InvalidMetadata).
	badMetadata error
}

// validateDir validates the tree in dir as typ, or as its metadata.json says when typ is nil.
// A tree whose metadata cannot be used is a verdict (badMetadata), not an error: errors are
// failures to read that may pass.
func validateDir(ctx context.Context, dir string, typ *string, opts validate.Options) (verdict, error) {
	var (
		v   verdict
		err error
	)
	if typ != nil {
		v.report, err = validate.Tree(ctx, dir, validate.Kind(*typ), opts)
	} else {
		v.report, v.meta, err = validate.Template(ctx, dir, opts)
	}
	if err != nil {
		var me *metadata.Error
		if errors.As(err, &me) || errors.Is(err, validate.ErrUnknownKind) || os.IsNotExist(errors.Unwrap(err)) {
			return verdict{badMetadata: err}, nil
		}
		return verdict{}, err
	}
	v.report = withParameterFindings(dir, v.report)
	return v, nil
}

// withParameterFindings adds to rep an X2 error when the template in dir has a parameters.json that
// tenants could not use (the daemon reads it on every Create and Update of a tenant using the template).
func withParameterFindings(dir string, rep validate.Report) validate.Report {
	if _, err := netconf.LoadParameters(dir); err != nil {
		msg := err.Error()
		var te *netconf.TemplateError
		if errors.As(err, &te) {
			msg = te.Msg
		}
		return rep.With(validate.Finding{Rule: "X2", Severity: validate.SeverityError, Path: "parameters.json",
			Message: "the declared parameters cannot be read: " + msg})
	}
	return rep
}

// Defaults of validations.
const (
	// defaultMaxValidations is how many validations run at once.
	defaultMaxValidations = 4
	// defaultVerdicts is how many verdicts of registered templates are kept.
	defaultVerdicts = 256
	// defaultVerdictTTL is how long a kept verdict is served: a verdict depends on the clock
	// as well as on the commit (rule A8: SUPPORT_END in the past).
	defaultVerdictTTL = time.Hour
)

// verdictKey names what a kept verdict is of: a registered template's commit, validated as a
// type ("" for its metadata's) for an architecture ("" for the host's), without a base.
type verdictKey struct {
	template, commit, typ, architecture string
}

// validations limits how many validations run at once and keeps the verdicts of registered
// templates, least recently used first out. Concurrent calls for one verdict run once. The
// zero value is ready to use, with the defaults above.
type validations struct {
	limit int           // validations at once (0: defaultMaxValidations)
	size  int           // verdicts kept (0: defaultVerdicts)
	ttl   time.Duration // how long a verdict is served (0: defaultVerdictTTL)
	now   func() time.Time

	once     sync.Once
	slots    chan struct{}
	mu       sync.Mutex
	kept     map[verdictKey]*list.Element // of *keptVerdict
	lru      *list.List                   // most recently used first
	inflight map[verdictKey]chan struct{} // closed when that validation ends
}

type keptVerdict struct {
	key verdictKey
	v   verdict
	at  time.Time
}

func (vs *validations) init() {
	vs.once.Do(func() {
		if vs.limit <= 0 {
			vs.limit = defaultMaxValidations
		}
		if vs.size <= 0 {
			vs.size = defaultVerdicts
		}
		if vs.ttl <= 0 {
			vs.ttl = defaultVerdictTTL
		}
		if vs.now == nil {
			vs.now = time.Now
		}
		vs.slots = make(chan struct{}, vs.limit)
		vs.kept = map[verdictKey]*list.Element{}
		vs.lru = list.New()
		vs.inflight = map[verdictKey]chan struct{}{}
	})
}

// run returns the kept verdict of key, or waits for the validation of key that is running,
// or runs fn in a slot (waiting for one while ctx allows) and keeps its verdict. A nil key is
// never kept: fn runs in a slot every time. Errors are not kept.
func (vs *validations) run(ctx context.Context, key *verdictKey, fn func() (verdict, error)) (verdict, error) {
	vs.init()
	if key == nil {
		return vs.inSlot(ctx, fn)
	}
	for {
		vs.mu.Lock()
		if v, ok := vs.lookup(*key); ok {
			vs.mu.Unlock()
			return v, nil
		}
		if done, ok := vs.inflight[*key]; ok {
			vs.mu.Unlock()
			select {
			case <-done:
				continue // kept now, or failed: then this caller tries itself
			case <-ctx.Done():
				return verdict{}, ctx.Err()
			}
		}
		done := make(chan struct{})
		vs.inflight[*key] = done
		vs.mu.Unlock()
		return vs.runKept(ctx, *key, done, fn)
	}
}

// runKept runs fn for key in a slot, keeps its verdict unless it failed, and then (even if
// fn panics) ends the in-flight validation of key.
func (vs *validations) runKept(ctx context.Context, key verdictKey, done chan struct{}, fn func() (verdict, error)) (v verdict, err error) {
	ok := false
	defer func() {
		vs.mu.Lock()
		if ok {
			vs.keep(key, v)
		}
		delete(vs.inflight, key)
		close(done)
		vs.mu.Unlock()
	}()
	v, err = vs.inSlot(ctx, fn)
	ok = err == nil
	return v, err
}

// inSlot runs fn once a slot is free.
func (vs *validations) inSlot(ctx context.Context, fn func() (verdict, error)) (verdict, error) {
	select {
	case vs.slots <- struct{}{}:
	case <-ctx.Done():
		return verdict{}, ctx.Err()
	}
	defer func() { <-vs.slots }()
	return fn()
}

// lookup returns a kept verdict that is still fresh. vs.mu is held.
func (vs *validations) lookup(key verdictKey) (verdict, bool) {
	e, ok := vs.kept[key]
	if !ok {
		return verdict{}, false
	}
	kv := e.Value.(*keptVerdict)
	if vs.now().Sub(kv.at) >= vs.ttl {
		vs.lru.Remove(e)
		delete(vs.kept, key)
		return verdict{}, false
	}
	vs.lru.MoveToFront(e)
	return kv.v, true
}

// keep keeps a verdict, dropping the least recently used beyond the size. vs.mu is held.
func (vs *validations) keep(key verdictKey, v verdict) {
	if e, ok := vs.kept[key]; ok {
		vs.lru.Remove(e)
	}
	vs.kept[key] = vs.lru.PushFront(&keptVerdict{key: key, v: v, at: vs.now()})
	for vs.lru.Len() > vs.size {
		old := vs.lru.Back()
		vs.lru.Remove(old)
		delete(vs.kept, old.Value.(*keptVerdict).key)
	}
}

// replyError maps registry errors to io.bitbuilder.Template errors, in one place.
func (a *templateAPI) replyError(ctx context.Context, c vtp.VarlinkCall, name string, err error) error {
	var (
		nameErr  *template.NameError
		fieldErr *template.FieldError
		fetchErr *template.FetchError
		refErr   *template.RefError
		metaErr  *template.MetadataError
		valErr   *template.ValidationError
		inUse    *template.InUseError
	)
	switch {
	case errors.As(err, &nameErr):
		return c.ReplyInvalidName(ctx, nameErr.Name, nameErr.Reason)
	case errors.As(err, &fieldErr):
		return c.ReplyInvalidField(ctx, fieldErr.Field, fieldErr.Reason)
	case errors.Is(err, template.ErrNotFound):
		return c.ReplyNoSuchTemplate(ctx, name)
	case errors.Is(err, template.ErrExists):
		return c.ReplyTemplateExists(ctx, name)
	case errors.As(err, &refErr):
		return c.ReplyNoSuchRef(ctx, template.RedactURL(refErr.URL), refErr.Ref)
	case errors.As(err, &fetchErr):
		return c.ReplyFetchFailed(ctx, template.RedactURL(fetchErr.URL), fetchErr.Reason())
	case errors.As(err, &metaErr):
		return c.ReplyInvalidMetadata(ctx, metaErr.Path, metaErr.Error())
	case errors.As(err, &valErr):
		fs := make([]vtp.Finding, 0, len(valErr.Errors))
		for _, e := range valErr.Errors {
			fs = append(fs, parseFinding(e))
		}
		return c.ReplyValidationFailed(ctx, valErr.Name, valErr.Commit, fs)
	case errors.As(err, &inUse):
		return c.ReplyTemplateInUse(ctx, inUse.Name, inUse.Tenants)
	case errors.Is(err, template.ErrUnsafeTree):
		return c.ReplyInvalidField(ctx, "commit", err.Error())
	case errors.Is(err, template.ErrBusy):
		return c.ReplyStorageFailure(ctx, err.Error()+"; try again")
	default:
		a.log.Error("template call failed", "template", name, "err", err)
		return c.ReplyStorageFailure(ctx, err.Error())
	}
}

// registryValidator adapts the UAPI validator to the registry's hook: a commit is refused
// when validation finds errors. The registry carries findings as strings; each is written by
// formatFinding so that replyError reads its rule and path back (parseFinding).
func registryValidator(artifactSources []string) func(ctx context.Context, dir, kind string) ([]string, error) {
	return func(ctx context.Context, dir, kind string) ([]string, error) {
		rep, err := validate.Tree(ctx, dir, validate.Kind(kind), validate.Options{ArtifactSources: artifactSources})
		if err != nil {
			return nil, err
		}
		rep = withParameterFindings(dir, rep)
		var out []string
		for _, f := range rep.Errors() {
			out = append(out, formatFinding(f))
		}
		return out, nil
	}
}

// formatFinding writes a finding as validate.Finding.String does ("path: severity RULE:
// message"), but with the path quoted, so that any path (one holding ": " too) reads back.
func formatFinding(f validate.Finding) string {
	return fmt.Sprintf("%s: %s %s: %s", strconv.Quote(f.Path), f.Severity, f.Rule, f.Message)
}

// parseFinding reads a finding written by formatFinding. A string in another form is a
// finding of rule "validation" with the string as its message.
func parseFinding(s string) vtp.Finding {
	other := vtp.Finding{Rule: "validation", Severity: string(validate.SeverityError), Message: s}
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return other
	}
	path, err := strconv.Unquote(q)
	if err != nil {
		return other
	}
	rest, ok := strings.CutPrefix(s[len(q):], ": ")
	if !ok {
		return other
	}
	sev, rest, ok := strings.Cut(rest, " ")
	if !ok {
		return other
	}
	rule, msg, ok := strings.Cut(rest, ": ")
	if !ok || rule == "" || strings.ContainsAny(rule, " \t\n") {
		return other
	}
	return vtp.Finding{Rule: rule, Severity: sev, Path: path, Message: msg}
}

// Rules returns the validator's rule catalogue (validate.Rules), or one rule of it.
func (a *templateAPI) Rules(ctx context.Context, c vtp.VarlinkCall, rule *string) error {
	rules := validate.Rules()
	if rule != nil {
		r, ok := validate.Rule(*rule)
		if !ok {
			return c.ReplyNoSuchRule(ctx, *rule)
		}
		rules = []validate.RuleInfo{r}
	}
	out := make([]vtp.Rule, 0, len(rules))
	for _, r := range rules {
		sev := make([]string, 0, len(r.Severities))
		for _, s := range r.Severities {
			sev = append(sev, string(s))
		}
		out = append(out, vtp.Rule{Id: r.ID, Severities: sev, Title: r.Title, Explanation: r.Explanation})
	}
	return c.ReplyRules(ctx, out)
}

// MachineInfo implements tenant.MachineInspector: what a pinned template says about the
// machines made from it (its default memory is what it needs; a VM template needs a kernel
// in disk-image/boot or an EFI loader in disk-image/efi).
func (r templateResolver) MachineInfo(_ context.Context, name, commit string) (tenant.MachineInfo, error) {
	md, err := r.reg.Metadata(name, commit)
	if err != nil {
		return tenant.MachineInfo{}, err
	}
	info := tenant.MachineInfo{MinMemoryBytes: md.Defaults.Resources.MemoryBytes(), DefaultCPUs: md.Defaults.Resources.CPU}
	if md.Template.Type != metadata.TypeMachine {
		return info, nil
	}
	boot, err := r.reg.ReadDir(name, commit, "disk-image/boot")
	if err != nil {
		return info, err
	}
	for _, n := range boot {
		if strings.HasPrefix(n, "vmlinuz") || strings.HasPrefix(n, "vmlinux") || n == "loader" {
			info.HasKernel = true
		}
	}
	if efi, err := r.reg.ReadDir(name, commit, "disk-image/efi"); err == nil && slices.Contains(efi, "EFI") {
		info.HasKernel = true
	}
	// A template may take its kernel from the host's allow-listed files at materialization
	// (artifacts.json); the machines step checks the materialized tree again before it boots.
	if root, err := r.reg.ReadDir(name, commit, ""); err == nil && slices.Contains(root, "artifacts.json") {
		info.HasKernel = true
	}
	return info, nil
}

// templateResolver pins tenants' template uses to the registry's commits.
type templateResolver struct {
	reg    *template.Registry
	params *paramCache
}

func (r templateResolver) Resolve(_ context.Context, name, role string) (string, error) {
	t, err := r.reg.Get(name)
	if err != nil {
		return "", err
	}
	if string(t.Type) != role {
		return "", fmt.Errorf("%w: template %q is a %s template, not %s", tenant.ErrTemplateRole, name, t.Type, role)
	}
	return t.Commit, nil
}
