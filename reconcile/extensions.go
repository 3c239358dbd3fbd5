package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/template/validate"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// Extensions are handed to the machines, never merged on the host (ARCHITECTURE.md, "Extensions"): each machine
// gets, in its own directories (units.MachinePaths.Sysext and .Confext, bound read-only to its /run/extensions and
// /run/confexts), hard-linked copies of the tenant's extensions that systemd-sysext/confext v257 would merge onto
// the machine's own root, each named after its image; the machine's own systemd-sysext/confext merges them. A
// running container is told to merge anew (machines.RefreshExtensions) when what it was given changed; a VM gets
// a change at its next start.

// extensionStateFile records, beside a machine's extension directories, what they hold and what the machine
// merged last.
const extensionStateFile = "state.json"

// extension is one sysext or confext use of a tenant.
type extension struct {
	class string // machines.ClassSysext or machines.ClassConfext
	use   tenant.TemplateUse
	src   string // the tenant's checkout
	image string // the image name: metadata.json's template.name, the name of its release file
	ready bool   // checked out at the pinned commit
	// disk is what systemd-dissect reported of the disk image the checkout was extracted from (rule D39), nil
	// for a tree template.
	disk *machines.ImageInfo
	// refused says why no machine gets it whatever its base (an image name clash, an unsafe name).
	refused string
	// file is, for an image of a container or machine template's extensions/ (use is then that template's use),
	// the image's file name there; "" for the tenant's own extensions.
	file string
}

func (x extension) key() string { return x.class + "/" + x.image }

func (x extension) String() string {
	if x.file != "" {
		return fmt.Sprintf("%s %s (disk image extensions/%s of %s template %s at %.12s)", x.class, x.image, x.file, x.use.Role, x.use.Template, x.use.Commit)
	}
	if x.disk != nil {
		return fmt.Sprintf("%s %s (template %s at %.12s, disk image %s)", x.class, x.use.Name, x.use.Template, x.use.Commit, x.disk.Name)
	}
	return fmt.Sprintf("%s %s (template %s at %.12s)", x.class, x.use.Name, x.use.Template, x.use.Commit)
}

// extState is the content of extensionStateFile.
type extState struct {
	// Have maps class/image to the commit its directory holds.
	Have map[string]string `json:"have"`
	// Leader is the leader process of the container that merged Merged; Merged maps a class to the hash of
	// what it merged (see classHash).
	Leader int               `json:"leader,omitempty"`
	Merged map[string]string `json:"merged,omitempty"`
}

// extensionPass gathers what one reconcile pass of a tenant did with its extensions, for its conditions. The
// work on running containers is queued (later) and done after the machines loop, a few containers at once
// (run): each container's refresh is its own processes in its own namespaces.
type extensionPass struct {
	mu       sync.Mutex
	jobs     []func()
	exts     []extension
	refused  []string // incompatible extensions, "<ext> for machine <m>: <reason>"
	failed   []string
	pending  []string
	merged   int // running containers whose merge is current
	machines int
	// fromTemplates are the machine templates' images that reached at least one machine, as named in
	// ExtensionsCompatible.
	fromTemplates []string
}

// note appends msg to the list at *list (once), under the pass's lock.
func (p *extensionPass) note(list *[]string, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	*list = appendOnce(*list, msg)
}

func (p *extensionPass) count(n *int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	*n++
}

// later queues job for run.
func (p *extensionPass) later(job func()) {
	if p != nil {
		p.jobs = append(p.jobs, job)
	}
}

// refreshParallel is how many containers of one tenant merge anew at once.
const refreshParallel = 4

// run does the queued jobs, refreshParallel at a time, and returns when all are done.
func (p *extensionPass) run() {
	if p == nil {
		return
	}
	sem := make(chan struct{}, refreshParallel)
	var wg sync.WaitGroup
	for _, job := range p.jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			job()
		}()
	}
	wg.Wait()
	p.jobs = nil
}

// extensionChecker caches compatibility verdicts: the same extension commit against the same base os-release
// gives the same verdict, so ten machines of one template cost one validation.
type extensionChecker struct {
	mu       sync.Mutex
	verdicts map[string]verdict
}

type verdict struct {
	ok     bool
	reason string
}

// tenantExtensions lists t's sysext and confext uses, sysexts first, each class in the order of its image names
// (the order systemd-sysext/confext merge them in: the last name on top).
func tenantExtensions(tenantsDir string, t *tenant.Tenant) []extension {
	var out []extension
	for _, u := range t.Templates {
		if u.Role != machines.ClassSysext && u.Role != machines.ClassConfext {
			continue
		}
		src := TemplateDir(tenantsDir, t.Name, u)
		x := extension{class: u.Role, use: u, src: src}
		if b, err := os.ReadFile(src + ".commit"); err == nil && u.Commit != "" && strings.TrimSpace(string(b)) == u.Commit {
			x.ready = true
			x.image = validate.ImageName(src)
			if info, ok := machines.ReadImageInfo(src); ok {
				x.disk = &info
			}
		}
		out = append(out, x)
	}
	slices.SortStableFunc(out, func(a, b extension) int {
		if a.class != b.class {
			return strings.Compare(b.class, a.class) // sysext before confext
		}
		return strings.Compare(a.image, b.image)
	})
	seen := map[string]string{}
	for i := range out {
		x := &out[i]
		if !x.ready {
			continue
		}
		if why := unsafeImageName(x.image); why != "" {
			x.refused = fmt.Sprintf("image name %q (metadata.json template.name) %s", x.image, why)
			continue
		}
		if other, dup := seen[x.key()]; dup {
			x.refused = fmt.Sprintf("image name %q is also the image of %s: a machine can have only one %s of that name", x.image, other, x.class)
			continue
		}
		seen[x.key()] = x.String()
	}
	return out
}

// templateExtensions lists the images of the extensions/ directory of the container or machine template use u,
// as extracted once per template commit beside its shared tree (TemplateImagesDir): extensions of the machines
// made from that template only, sysexts first, each class by image name. None while the tree is not checked out
// at u's pin.
func templateExtensions(tenantsDir, tn string, u *tenant.TemplateUse) []extension {
	if u == nil || u.Commit == "" {
		return nil
	}
	tree := TemplateDir(tenantsDir, tn, *u)
	if b, err := os.ReadFile(tree + ".commit"); err != nil || strings.TrimSpace(string(b)) != u.Commit {
		return nil
	}
	var out []extension
	for _, class := range []string{machines.ClassSysext, machines.ClassConfext} {
		dir := filepath.Join(TemplateImagesDir(tree), class)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			src := filepath.Join(dir, e.Name())
			x := extension{class: class, use: *u, src: src, image: e.Name(), ready: true, file: e.Name() + "." + class + ".raw"}
			if info, ok := machines.ReadImageInfo(src); ok {
				x.disk = &info
			}
			if why := unsafeImageName(x.image); why != "" {
				x.refused = fmt.Sprintf("image name %q %s", x.image, why)
			}
			out = append(out, x)
		}
	}
	return out
}

// machineExtensions is what one machine is offered: the tenant's extensions, then the images of its own
// template (own). An image of the template whose class and name are those of one of the tenant's extensions is
// refused: a machine has one extension of a name, and the tenant's own is the one it keeps.
func machineExtensions(tenantExts, own []extension) []extension {
	if len(own) == 0 {
		return tenantExts
	}
	out := slices.Clone(tenantExts)
	for _, x := range own {
		if x.refused == "" {
			for _, y := range tenantExts {
				if y.ready && y.key() == x.key() {
					x.refused = fmt.Sprintf("image name %q is also the image of the tenant's %s: a machine can have only one %s of that name, and keeps the tenant's", x.image, y, x.class)
					break
				}
			}
		}
		out = append(out, x)
	}
	return out
}

// unsafeImageName says why name cannot be a directory name in a machine's extension directory, or "".
func unsafeImageName(name string) string { return validate.MachineImageName(name) }

// baseKey identifies a machine root's os-release for the verdict cache: the bytes of its os-release (etc/ first,
// as systemd reads it) and whether it is an initrd.
func baseKey(root string) string {
	h := sha256.New()
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := machines.ReadTemplateFile(root, p, 64<<10); err == nil && b != nil {
			h.Write([]byte(p + "\x00"))
			h.Write(b)
			break
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/initrd-release")); err == nil {
		h.Write([]byte("\x00initrd"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CheckExtension is the verdict the daemon acts on before an extension reaches a machine: whether
// systemd-sysext/confext v257 would merge the extension template checked out at src (class "sysext" or
// "confext") onto the root file system root, with the exact reason (validate.Tree with root as the base, then
// validate.Compatibility). BitBuilder is stricter than systemd in one more case: a confext with an executable or
// setuid file is refused (systemd-confext would merge it mounted noexec, nosuid, where it cannot run).
func CheckExtension(ctx context.Context, src, class, root string) (ok bool, reason string, err error) {
	rep, err := validate.Tree(ctx, src, validate.Kind(class), validate.Options{BaseRoot: root})
	if err != nil {
		return false, "", err
	}
	ok, reason = validate.Compatibility(rep, validate.Class(class))
	if !ok {
		return false, reason, nil
	}
	if class == machines.ClassConfext {
		for _, f := range rep.Warnings() {
			if f.Rule == "D35" {
				return false, fmt.Sprintf("refused (rule D35, %s): %s; systemd-confext would merge it mounted noexec, nosuid, so BitBuilder refuses it rather than hand over a file that cannot run", f.Path, f.Message), nil
			}
		}
	}
	return true, reason, nil
}

func (c *extensionChecker) check(ctx context.Context, x extension, root string) verdict {
	key := x.key() + "@" + x.use.Commit + "@" + x.src + "@" + baseKey(root)
	c.mu.Lock()
	v, hit := c.verdicts[key]
	c.mu.Unlock()
	if hit {
		return v
	}
	var ok bool
	var reason string
	var err error
	if x.disk != nil {
		reason = machines.CheckExtensionImage(*x.disk, x.class)
	}
	if reason == "" {
		ok, reason, err = CheckExtension(ctx, x.src, x.class, root)
	}
	if err != nil {
		return verdict{false, "cannot validate: " + err.Error()} // not cached: may be transient
	}
	v = verdict{ok, reason}
	c.mu.Lock()
	if c.verdicts == nil || len(c.verdicts) > 4096 {
		c.verdicts = map[string]verdict{}
	}
	c.verdicts[key] = v
	c.mu.Unlock()
	return v
}

// extensionDirs are the directories of one machine's extensions: dir holds sysext/, confext/ (bound into the
// machine), the state file, .staging and .retired (not bound: the machine never sees a tree being made or one
// being retired).
type extensionDirs struct {
	dir               string
	sysext, confext   string
	machine, tenantNm string
}

func machineExtensionDirs(mp units.MachinePaths, tn, m string) extensionDirs {
	return extensionDirs{dir: filepath.Dir(mp.Sysext), sysext: mp.Sysext, confext: mp.Confext, machine: m, tenantNm: tn}
}

func (d extensionDirs) classDir(class string) string {
	if class == machines.ClassConfext {
		return d.confext
	}
	return d.sysext
}

func (d extensionDirs) readState() extState {
	var st extState
	if b, err := os.ReadFile(filepath.Join(d.dir, extensionStateFile)); err == nil {
		_ = json.Unmarshal(b, &st) // a damaged state is rebuilt: every tree is made again
	}
	if st.Have == nil {
		st.Have = map[string]string{}
	}
	return st
}

func (d extensionDirs) writeState(st extState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	// Not durable: after a crash of the host a stale state only makes the next pass rebuild what it records
	// (a tree it does not know is retired and made again), and every container merges anew after a reboot.
	return atomicfile.WriteFile(filepath.Join(d.dir, extensionStateFile), append(b, '\n'), atomicfile.Options{NotDurable: true})
}

// classHash is what a machine's directory of class holds, as one string: image@commit, sorted; "" when empty.
func classHash(st extState, class string) string {
	var parts []string
	for k, c := range st.Have {
		if img, ok := strings.CutPrefix(k, class+"/"); ok {
			parts = append(parts, img+"@"+c)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// syncExtensions makes the machine's extension directories hold exactly the extensions of p that are compatible
// with root (the machine's own root file system), each at its pinned commit: a new or changed one is made in
// .staging and renamed into place, the tree it replaces and trees no longer wanted are moved to .retired (the
// machine may still have them merged). An extension not checked out yet keeps what the machine has of it.
// Refusals are added to p. It returns the state after the change and whether it changed (the caller writes it).
func (s *MachinesStep) syncExtensions(ctx context.Context, p *extensionPass, d extensionDirs, root string, exts []extension) (extState, bool, error) {
	for _, dir := range []string{d.sysext, d.confext} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return extState{}, false, err
		}
	}
	st := d.readState()
	want := map[string]extension{}
	keep := map[string]bool{}
	for _, x := range exts {
		switch {
		case !x.ready:
			// Not checked out at its pin yet (or the checkout failed): the machine keeps what it has of the use.
			for k := range st.Have {
				if strings.HasPrefix(k, x.class+"/") {
					keep[k] = true
				}
			}
		case x.refused != "":
			p.note(&p.refused, fmt.Sprintf("%s: %s", x, x.refused))
		default:
			if v := s.extChecker.check(ctx, x, root); !v.ok {
				p.note(&p.refused, fmt.Sprintf("%s for machine %s: %s", x, d.machine, v.reason))
				continue
			}
			if x.file != "" {
				name := x.file
				if x.disk != nil {
					name += " (" + x.disk.Integrity() + ")"
				}
				p.note(&p.fromTemplates, fmt.Sprintf("%s of %s template %s", name, x.use.Role, x.use.Template))
			}
			want[x.key()] = x
		}
	}
	changed := false
	retire := func(class, name string) error {
		rd := filepath.Join(d.dir, ".retired")
		if err := os.MkdirAll(rd, 0o700); err != nil {
			return err
		}
		tmp, err := os.MkdirTemp(rd, class+"-")
		if err != nil {
			return err
		}
		changed = true
		return os.Rename(filepath.Join(d.classDir(class), name), filepath.Join(tmp, name))
	}
	var errs []error
	for _, class := range []string{machines.ClassSysext, machines.ClassConfext} {
		ents, err := os.ReadDir(d.classDir(class))
		if err != nil {
			return st, changed, err
		}
		for _, e := range ents {
			k := class + "/" + e.Name()
			if x, ok := want[k]; (ok && st.Have[k] == x.use.Commit) || keep[k] {
				continue
			}
			if err := retire(class, e.Name()); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(st.Have, k)
		}
		for k := range st.Have {
			if strings.HasPrefix(k, class+"/") && !slices.ContainsFunc(ents, func(e fs.DirEntry) bool { return class+"/"+e.Name() == k }) {
				delete(st.Have, k) // recorded but gone
				changed = true
			}
		}
	}
	for k, x := range want {
		if st.Have[k] == x.use.Commit {
			continue
		}
		staging := filepath.Join(d.dir, ".staging")
		if err := machines.RemoveTree(staging); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := machines.LinkExtension(ctx, x.src, staging, x.class); err != nil {
			machines.RemoveTree(staging)
			errs = append(errs, fmt.Errorf("%s: %w", x, err))
			continue
		}
		if err := os.Rename(staging, filepath.Join(d.classDir(x.class), x.image)); err != nil {
			machines.RemoveTree(staging)
			errs = append(errs, fmt.Errorf("%s: %w", x, err))
			continue
		}
		st.Have[k] = x.use.Commit
		changed = true
	}
	return st, changed, errors.Join(errs...)
}

// handedOver lists what the machine's extension directories hold, as class/image@commit: sysexts first, each
// class by image name (MachineStatus.Extensions).
func (d extensionDirs) handedOver() []string {
	st := d.readState()
	var out []string
	for k, c := range st.Have {
		out = append(out, k+"@"+c)
	}
	slices.SortFunc(out, func(a, b string) int {
		if ca, cb := strings.HasPrefix(a, "sysext/"), strings.HasPrefix(b, "sysext/"); ca != cb {
			if ca {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// clearRetired removes the trees syncExtensions retired, once no machine can have them merged.
func (d extensionDirs) clearRetired() error {
	return machines.RemoveTree(filepath.Join(d.dir, ".retired"))
}

// extensionsStopped brings a machine's extension directories up to date while it is not running (before it
// starts): nothing can have the old trees merged, so they are removed at once.
func (s *MachinesStep) extensionsStopped(ctx context.Context, p *extensionPass, d extensionDirs, root string, own []extension) {
	if p == nil {
		return
	}
	p.count(&p.machines)
	st, changed, err := s.syncExtensions(ctx, p, d, root, machineExtensions(p.exts, own))
	if st.Leader != 0 || len(st.Merged) > 0 {
		st.Leader, st.Merged = 0, nil // a new boot merges anew
		changed = true
	}
	if changed {
		if werr := d.writeState(st); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err == nil {
		err = d.clearRetired()
	}
	if err != nil {
		p.note(&p.failed, fmt.Sprintf("machine %s: %v", d.machine, err))
	}
}

// extensionsRunning brings a running machine's extensions up to date. A container (leader pid) gets its
// directories changed and is told to merge anew the classes whose content changed since it last merged (or all
// non-empty ones after a new boot); the retired trees are removed once it did. A VM is left alone (there is no
// channel into the guest to have it merge anew, and its directories are virtiofs shares that must not change
// under its merge): a change is noted as pending until its next start.
func (s *MachinesStep) extensionsRunning(ctx context.Context, p *extensionPass, d extensionDirs, root string, own []extension, vm bool, leader int) {
	if p == nil {
		return
	}
	p.count(&p.machines)
	exts := machineExtensions(p.exts, own)
	if vm {
		st := d.readState()
		for _, x := range exts {
			if x.ready && x.refused != "" {
				p.note(&p.refused, fmt.Sprintf("%s for machine %s: %s", x, d.machine, x.refused))
			}
			if x.ready && x.refused == "" && st.Have[x.key()] != x.use.Commit {
				if v := s.extChecker.check(ctx, x, root); v.ok {
					p.note(&p.pending, fmt.Sprintf("VM %s gets %s at its next start", d.machine, x))
				} else {
					p.note(&p.refused, fmt.Sprintf("%s for machine %s: %s", x, d.machine, v.reason))
				}
			}
		}
		return
	}
	st, changed, err := s.syncExtensions(ctx, p, d, root, exts)
	if err != nil {
		if changed {
			_ = d.writeState(st)
		}
		p.note(&p.failed, fmt.Sprintf("machine %s: %v", d.machine, err))
		return
	}
	if st.Merged == nil {
		st.Merged = map[string]string{}
	}
	refreshed := changed
	for _, class := range []string{machines.ClassSysext, machines.ClassConfext} {
		h := classHash(st, class)
		need := h != st.Merged[class]
		if st.Leader != leader {
			need = h != ""
		}
		if !need {
			continue
		}
		refresh := s.RefreshExtensions
		if refresh == nil {
			refresh = func(ctx context.Context, pid int, class string) error {
				return machines.RefreshExtensions(ctx, "", pid, class)
			}
		}
		start := time.Now()
		if err := refresh(ctx, leader, class); err != nil {
			if refreshed {
				_ = d.writeState(st)
			}
			p.note(&p.failed, fmt.Sprintf("machine %s: %v", d.machine, err))
			return
		}
		s.log().Info("extensions merged anew in the machine", "tenant", d.tenantNm, "machine", d.machine, "class", class, "extensions", h, "took", time.Since(start).Round(time.Millisecond))
		st.Merged[class] = h
		refreshed = true
	}
	if st.Leader != leader {
		st.Leader = leader
		refreshed = true
	}
	if refreshed {
		if err := d.writeState(st); err != nil {
			p.note(&p.failed, fmt.Sprintf("machine %s: %v", d.machine, err))
			return
		}
	}
	if err := d.clearRetired(); err != nil {
		p.note(&p.failed, fmt.Sprintf("machine %s: %v", d.machine, err))
		return
	}
	p.count(&p.merged)
}

// pruneExtensionCheckouts removes the tenant's checkouts of extension uses it no longer has (the machines'
// hard-linked copies do not depend on them).
func pruneExtensionCheckouts(tenantsDir string, t *tenant.Tenant) error {
	var errs []error
	for _, class := range []string{machines.ClassSysext, machines.ClassConfext} {
		dir := filepath.Join(tenantsDir, t.Name, "extensions", class)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			name := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".commit"), ".image.json")
			if staged, ok := strings.CutSuffix(name, ".stage"); ok && strings.HasPrefix(staged, ".") {
				name = staged[1:] // a checkout staged for that use (TemplatesStep.checkout)
			}
			if strings.HasPrefix(name, ".") || slices.ContainsFunc(t.Templates, func(u tenant.TemplateUse) bool { return u.Role == class && u.Name == name }) {
				continue
			}
			if err := machines.RemoveTree(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// infraExtensions gives the infrastructure VM its extensions while it does not run (it is started by tenant@,
// not by the daemon): they are checked against its root, infra/rootfs.
func (s *MachinesStep) infraExtensions(ctx context.Context, p *extensionPass, t *tenant.Tenant, running bool) {
	tp := s.Units.TenantPaths(t.Name)
	d := extensionDirs{dir: filepath.Dir(tp.InfraSysext), sysext: tp.InfraSysext, confext: tp.InfraConfext, machine: tenant.InfraMachine, tenantNm: t.Name}
	if running {
		s.extensionsRunning(ctx, p, d, tp.InfraRoot, nil, true, 0)
		return
	}
	s.extensionsStopped(ctx, p, d, tp.InfraRoot, nil)
}

// conditions are the pass's ExtensionsCompatible and ExtensionsApplied conditions (none for a tenant that has no
// extension and had none).
func (p *extensionPass) conditions() []tenant.Condition {
	if p == nil || len(p.exts) == 0 && len(p.failed) == 0 && len(p.refused) == 0 && len(p.fromTemplates) == 0 {
		return nil
	}
	// Sorted: machines are done in parallel, and the same outcome must give the same condition (a status that
	// changes text on every pass would be written on every pass).
	slices.Sort(p.refused)
	slices.Sort(p.failed)
	slices.Sort(p.pending)
	slices.Sort(p.fromTemplates)
	var out []tenant.Condition
	if len(p.refused) > 0 {
		out = append(out, cond("ExtensionsCompatible", false, "Incompatible", "refused before anything was handed to a machine: "+strings.Join(p.refused, "; ")))
	} else {
		msg := fmt.Sprintf("%d extensions compatible with the %d machines they are for", len(p.exts)+len(p.fromTemplates), p.machines)
		var disks []string
		for _, x := range p.exts {
			if x.disk != nil {
				disks = append(disks, fmt.Sprintf("%s (%s)", x.disk.Name, x.disk.Integrity()))
			}
		}
		if len(disks) > 0 {
			msg += "; from disk images, read with systemd-dissect: " + strings.Join(disks, ", ")
		}
		if len(p.fromTemplates) > 0 {
			msg += "; from the machines' own templates, read with systemd-dissect: " + strings.Join(p.fromTemplates, ", ")
		}
		out = append(out, cond("ExtensionsCompatible", true, "Compatible", msg))
	}
	switch {
	case len(p.failed) > 0:
		out = append(out, cond("ExtensionsApplied", false, "MergeFailed", strings.Join(p.failed, "; ")))
	case len(p.pending) > 0:
		out = append(out, tenant.Condition{Type: "ExtensionsApplied", Status: "unknown", Reason: "PendingRestart", Message: strings.Join(p.pending, "; ")})
	default:
		out = append(out, cond("ExtensionsApplied", true, "Merged", fmt.Sprintf("merged in %d running containers; a container merges them when it starts", p.merged)))
	}
	return out
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
