package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	vtp "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
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
}

// templateUsers maps each template name to the tenants whose records use it, sorted:
// one read of the tenants serves a whole List.
func templateUsers(ctx context.Context, svc *tenant.Service) map[string][]string {
	ts, _, err := svc.List(ctx)
	if err != nil {
		return nil
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
	return users
}

// usedBy returns the tenants whose records use template name, sorted.
func usedBy(ctx context.Context, svc *tenant.Service, name string) []string {
	return append([]string{}, templateUsers(ctx, svc)[name]...)
}

func toTemplateAPI(t template.Template, users []string) vtp.Template {
	prev := t.PreviousCommits
	if prev == nil {
		prev = []string{}
	}
	return vtp.Template{
		Name: t.Name, Url: t.URL, Ref: t.Ref, Commit: t.Commit, Type: string(t.Type), Version: t.Version,
		PreviousCommits: prev, UsedBy: append([]string{}, users...),
		AddedAt: t.AddedAt.UTC().Format(time.RFC3339Nano), UpdatedAt: t.UpdatedAt.UTC().Format(time.RFC3339Nano),
	}
}

func (a *templateAPI) toAPI(ctx context.Context, t template.Template) vtp.Template {
	return toTemplateAPI(t, usedBy(ctx, a.tenants, t.Name))
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
	a.log.Info("template added", "template", name, "url", url, "commit", t.Commit)
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
	a.log.Info("template updated", "template", name, "commit", t.Commit)
	api := a.toAPI(ctx, t)
	return c.ReplyUpdate(ctx, nil, &api)
}

func (a *templateAPI) Pin(ctx context.Context, c vtp.VarlinkCall, name string, commit string) error {
	t, err := a.reg.Pin(ctx, name, commit)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	a.log.Info("template pinned", "template", name, "commit", t.Commit)
	return c.ReplyPin(ctx, a.toAPI(ctx, t))
}

func (a *templateAPI) Get(ctx context.Context, c vtp.VarlinkCall, name string) error {
	t, err := a.reg.Get(name)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return c.ReplyGet(ctx, a.toAPI(ctx, t))
}

func (a *templateAPI) List(ctx context.Context, c vtp.VarlinkCall) error {
	ts := a.reg.List()
	if len(ts) == 0 {
		return c.ReplyNoSuchTemplate(ctx, "")
	}
	users := templateUsers(ctx, a.tenants)
	for i, t := range ts {
		c.Continues = i < len(ts)-1
		if err := c.ReplyList(ctx, toTemplateAPI(t, users[t.Name])); err != nil {
			return err
		}
	}
	return nil
}

func (a *templateAPI) Remove(ctx context.Context, c vtp.VarlinkCall, name string) error {
	err := a.reg.Remove(ctx, name, func(n string) []string { return usedBy(ctx, a.tenants, n) })
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	a.log.Info("template removed", "template", name)
	return c.ReplyRemove(ctx)
}

// Validate checks a pinned template (checked out into a scratch directory) or a directory on
// the host. It reads only; a hostile tree cannot make it write or follow links out.
func (a *templateAPI) Validate(ctx context.Context, c vtp.VarlinkCall, name *string, path *string, typ *string, base *string, architecture *string) error {
	if (name == nil) == (path == nil) {
		return c.ReplyInvalidField(ctx, "name", "give exactly one of name and path")
	}
	opts := validate.Options{}
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
	dir := ""
	if path != nil {
		if !filepath.IsAbs(*path) {
			return c.ReplyInvalidField(ctx, "path", "must be an absolute path")
		}
		if fi, err := os.Stat(*path); err != nil || !fi.IsDir() {
			return c.ReplyInvalidField(ctx, "path", fmt.Sprintf("%s is not a directory", *path))
		}
		dir = *path
	} else {
		t, err := a.reg.Get(*name)
		if err != nil {
			return a.replyError(ctx, c, *name, err)
		}
		if err := os.MkdirAll(a.scratch, 0o700); err != nil {
			return c.ReplyStorageFailure(ctx, err.Error())
		}
		tmp, err := os.MkdirTemp(a.scratch, "validate-")
		if err != nil {
			return c.ReplyStorageFailure(ctx, err.Error())
		}
		defer os.RemoveAll(tmp)
		dir = filepath.Join(tmp, t.Name)
		if err := a.reg.Materialize(ctx, t.Name, t.Commit, "", dir, nil); err != nil {
			return a.replyError(ctx, c, *name, err)
		}
	}

	var rep validate.Report
	var meta *metadata.Metadata
	var err error
	if typ != nil {
		if !slices.Contains(validate.Kinds(), validate.Kind(*typ)) {
			return c.ReplyInvalidField(ctx, "type", fmt.Sprintf("%q is not a template type", *typ))
		}
		rep, err = validate.Tree(ctx, dir, validate.Kind(*typ), opts)
	} else {
		rep, meta, err = validate.Template(ctx, dir, opts)
	}
	if err != nil {
		var me *metadata.Error
		if errors.As(err, &me) || errors.Is(err, validate.ErrUnknownKind) || os.IsNotExist(errors.Unwrap(err)) {
			return c.ReplyInvalidMetadata(ctx, filepath.Join(dir, "metadata.json"), err.Error()+" (pass type to validate a tree without metadata.json)")
		}
		return c.ReplyStorageFailure(ctx, err.Error())
	}
	findings := make([]vtp.Finding, 0, len(rep.Findings))
	var nerr, nwarn int64
	var compatible *bool
	var reason *string
	for _, f := range rep.Findings {
		findings = append(findings, vtp.Finding{Rule: f.Rule, Severity: string(f.Severity), Path: f.Path, Message: f.Message})
		switch f.Severity {
		case validate.SeverityError:
			nerr++
		case validate.SeverityWarning:
			nwarn++
		}
		if f.Rule == "DC" && compatible == nil {
			no, msg := false, f.Message
			compatible, reason = &no, &msg
		}
	}
	// What the template requires of the host (metadata.json's requirements), as warnings:
	// the tree is valid, but this host may not run it.
	if meta != nil {
		for _, p := range metadata.CheckHost(meta, metadata.ProbeHost(ctx)) {
			findings = append(findings, vtp.Finding{Rule: "requirements." + p.Requirement, Severity: "warning", Path: "metadata.json", Message: p.Message})
			nwarn++
		}
	}
	if base != nil && compatible == nil {
		yes, msg := true, "systemd would merge the extension onto this base"
		compatible, reason = &yes, &msg
	}
	return c.ReplyValidate(ctx, findings, nerr, nwarn, compatible, reason)
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
		return c.ReplyNoSuchRef(ctx, refErr.URL, refErr.Ref)
	case errors.As(err, &fetchErr):
		return c.ReplyFetchFailed(ctx, fetchErr.URL, fetchErr.Err.Error())
	case errors.As(err, &metaErr):
		return c.ReplyInvalidMetadata(ctx, metaErr.Path, metaErr.Error())
	case errors.As(err, &valErr):
		fs := make([]vtp.Finding, 0, len(valErr.Errors))
		for _, e := range valErr.Errors {
			fs = append(fs, vtp.Finding{Rule: "validation", Severity: "error", Message: e})
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
// when validation finds errors.
func registryValidator(ctx context.Context, dir, kind string) ([]string, error) {
	rep, err := validate.Tree(ctx, dir, validate.Kind(kind), validate.Options{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range rep.Errors() {
		out = append(out, f.String())
	}
	return out, nil
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
type templateResolver struct{ reg *template.Registry }

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
