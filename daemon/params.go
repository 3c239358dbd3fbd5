package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"testing/fstest"

	"github.com/bitbuilder/bitbuilder/examples/templates"
	"github.com/bitbuilder/bitbuilder/netconf"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/template/metadata"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// builtinNetwork names the built-in network template in errors: the one a tenant without a
// network template of its own gets.
const builtinNetwork = "the built-in network template"

// declaredParam is one parameter a template declares in its parameters.json.
type declaredParam struct {
	netconf.Parameter
	// uses are the network template files that use the parameter (${NAME}); nil for other
	// templates, whose parameters apply to every tenant.
	uses []string
	// feature is the network feature whose files alone use the parameter ("" when a file
	// every tenant gets uses it, or for other templates).
	feature string
}

// templateParams is what one commit of a template declares.
type templateParams struct {
	template string // the template's name, or builtinNetwork
	network  bool
	params   map[string]declaredParam
}

// label names the template in messages.
func (tp *templateParams) label() string {
	if tp.template == builtinNetwork {
		return builtinNetwork
	}
	return "template " + tp.template
}

// requiredFor reports whether a tenant must give the parameter: it has no default, and it is
// not only used by files the tenant does not get (those of a network feature it lacks).
func (tp *templateParams) requiredFor(name string, t *tenant.Tenant) bool {
	p := tp.params[name]
	if p.Default != nil {
		return false
	}
	if !tp.network {
		return true
	}
	for _, f := range p.uses {
		if ft := reconcile.FileFeature(f); ft == "" || t.HasFeature(ft) {
			return true
		}
	}
	return false
}

// paramCache reads and keeps what template commits declare: a commit never changes, so each is
// read once (at most maxCachedParams are kept).
type paramCache struct {
	reg *template.Registry

	mu      sync.Mutex
	m       map[string]*templateParams // by name + "@" + commit
	builtin *templateParams
}

const maxCachedParams = 1024

func newParamCache(reg *template.Registry) *paramCache {
	return &paramCache{reg: reg, m: map[string]*templateParams{}}
}

// declared returns what a commit of a registered template declares.
func (pc *paramCache) declared(name, commit string) (*templateParams, error) {
	key := name + "@" + commit
	pc.mu.Lock()
	tp := pc.m[key]
	pc.mu.Unlock()
	if tp != nil {
		return tp, nil
	}
	tp, err := pc.load(name, commit)
	if err != nil {
		return nil, err
	}
	pc.mu.Lock()
	if len(pc.m) >= maxCachedParams {
		clear(pc.m)
	}
	pc.m[key] = tp
	pc.mu.Unlock()
	return tp, nil
}

// load reads parameters.json of a commit (and, for a network template, its unit files, to tell
// which feature uses each parameter), every read bounded as netconf.Load bounds it.
func (pc *paramCache) load(name, commit string) (*templateParams, error) {
	md, err := pc.reg.Metadata(name, commit)
	if err != nil {
		return nil, err
	}
	names, err := pc.reg.ReadDir(name, commit, "")
	if err != nil {
		return nil, err
	}
	if md.Template.Type != metadata.TypeNetwork {
		tp := &templateParams{template: name, params: map[string]declaredParam{}}
		if !slices.Contains(names, "parameters.json") {
			return tp, nil
		}
		raw, err := pc.reg.ReadFile(name, commit, "parameters.json", netconf.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		ps, err := netconf.ParseParameters(raw)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		for n, p := range ps {
			tp.params[n] = declaredParam{Parameter: p}
		}
		return tp, nil
	}
	// A network template: load it as the reconciler will, from the files netconf reads.
	fsys := fstest.MapFS{}
	for _, n := range names {
		switch path.Ext(n) {
		case ".netdev", ".network", ".link":
		default:
			if n != "metadata.json" && n != "parameters.json" {
				continue
			}
		}
		if len(fsys) > netconf.MaxFiles+2 {
			return nil, fmt.Errorf("template %s: more than %d .netdev, .network and .link files", name, netconf.MaxFiles)
		}
		data, err := pc.reg.ReadFile(name, commit, n, netconf.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		fsys[n] = &fstest.MapFile{Data: data, Mode: 0o644}
	}
	tm, err := netconf.Load(fsys)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return networkParams(name, tm), nil
}

// builtinParams returns what the built-in network template declares.
func (pc *paramCache) builtinParams() (*templateParams, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.builtin != nil {
		return pc.builtin, nil
	}
	tm, err := netconf.Load(templates.Network())
	if err != nil {
		return nil, fmt.Errorf("built-in network template: %w", err)
	}
	pc.builtin = networkParams(builtinNetwork, tm)
	return pc.builtin, nil
}

// networkParams is what a loaded network template declares, with the files using each parameter.
func networkParams(name string, tm *netconf.Template) *templateParams {
	tp := &templateParams{template: name, network: true, params: map[string]declaredParam{}}
	for n, p := range tm.Params {
		dp := declaredParam{Parameter: p}
		features := map[string]bool{}
		for _, f := range tm.Files {
			if strings.Contains(string(f.Content), "${"+n+"}") {
				dp.uses = append(dp.uses, f.Name)
				features[reconcile.FileFeature(f.Name)] = true
			}
		}
		if len(features) == 1 {
			for ft := range features {
				dp.feature = ft
			}
		}
		tp.params[n] = dp
	}
	return tp
}

// forTenant returns what the templates of t declare (its pinned commits), the built-in network
// template's included when t names no network template of its own.
func (pc *paramCache) forTenant(t *tenant.Tenant) ([]*templateParams, error) {
	var out []*templateParams
	seen := map[string]bool{}
	hasNetwork := false
	for i, u := range t.Templates {
		if u.Role == string(metadata.TypeNetwork) {
			hasNetwork = true
		}
		key := u.Template + "@" + u.Commit
		if seen[key] {
			continue
		}
		seen[key] = true
		tp, err := pc.declared(u.Template, u.Commit)
		var fe *template.FieldError
		switch {
		case errors.Is(err, template.ErrNotFound):
			return nil, &tenant.TemplateError{Template: u.Template, Err: err}
		case errors.Is(err, template.ErrNoSuchRef) || errors.As(err, &fe):
			return nil, &tenant.FieldError{Field: fmt.Sprintf("templates[%d].commit", i),
				Reason: fmt.Sprintf("%q is not a commit the registry has of template %s: pin it first (template pin) or leave commit out", u.Commit, u.Template)}
		case err != nil:
			return nil, err
		}
		out = append(out, tp)
	}
	if !hasNetwork {
		tp, err := pc.builtinParams()
		if err != nil {
			return nil, err
		}
		out = append(out, tp)
	}
	return out, nil
}

// CheckParameters implements tenant.ParameterChecker: each parameter of t must be declared by one
// of its templates and have a value of the declared type, and each parameter a template requires
// of t (no default, used by a file t gets) must be given. The first problem, in name order, is a
// *tenant.FieldError of field parameters.NAME.
func (r templateResolver) CheckParameters(_ context.Context, t *tenant.Tenant) error {
	sets, err := r.params.forTenant(t)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(t.Parameters)) {
		var owner *templateParams
		for _, tp := range sets {
			if _, ok := tp.params[name]; ok {
				owner = tp
				break
			}
		}
		if owner == nil {
			return &tenant.FieldError{Field: "parameters." + name, Reason: "not a parameter of the tenant's templates: " + takes(sets)}
		}
		if err := owner.params[name].Check(name, t.Parameters[name]); err != nil {
			reason := err.Error()
			var ve *netconf.ValueError
			if errors.As(err, &ve) {
				reason = fmt.Sprintf("%q: %s (%s declares it of type %s)", ve.Value, ve.Rule, owner.label(), owner.params[name].TypeName())
			}
			return &tenant.FieldError{Field: "parameters." + name, Reason: reason}
		}
	}
	for _, tp := range sets {
		for _, name := range slices.Sorted(maps.Keys(tp.params)) {
			if _, given := t.Parameters[name]; given || !tp.requiredFor(name, t) {
				continue
			}
			why := "required: " + tp.label() + " has no default for it"
			if ft := tp.params[name].feature; ft != "" {
				why += " and uses it for network feature " + ft
			}
			if d := tp.params[name].Description; d != "" {
				why += " (" + d + ")"
			}
			return &tenant.FieldError{Field: "parameters." + name, Reason: why}
		}
	}
	return nil
}

// takes says which parameters the templates sets declare, for an error message.
func takes(sets []*templateParams) string {
	var parts []string
	for _, tp := range sets {
		if len(tp.params) == 0 {
			continue
		}
		parts = append(parts, tp.label()+" takes "+strings.Join(slices.Sorted(maps.Keys(tp.params)), ", "))
	}
	if len(parts) == 0 {
		return "they declare none"
	}
	return strings.Join(parts, "; ")
}

// paramsOf returns what the pinned commit of a registered template declares, in name order,
// for the Template API.
func (pc *paramCache) paramsOf(t template.Template) ([]apiParam, error) {
	tp, err := pc.declared(t.Name, t.Commit)
	if err != nil {
		return nil, err
	}
	out := make([]apiParam, 0, len(tp.params))
	for _, name := range slices.Sorted(maps.Keys(tp.params)) {
		p := tp.params[name]
		ap := apiParam{Name: name, Type: p.TypeName(), Default: p.Default, Description: p.Description, Required: p.Default == nil}
		if p.feature != "" {
			f := p.feature
			ap.Feature = &f
		}
		if tp.network && len(p.uses) == 0 {
			ap.Required = false // no file uses it: it changes nothing
		}
		out = append(out, ap)
	}
	return out, nil
}

// apiParam is a declared parameter as the Template API shows it.
type apiParam struct {
	Name, Type, Description string
	Default                 *string
	Required                bool
	Feature                 *string
}
