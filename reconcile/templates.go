package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/template/validate"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// Materializer checks out a pinned template commit into a directory, atomically.
type Materializer interface {
	Materialize(ctx context.Context, name, commit, subdir, target string, dirs []template.Dir) error
}

// TemplatesStep checks out every template a tenant uses, at its pinned commit, into the
// tenant's directory under TenantsDir (the layout of units.Paths):
//
//	<name>/infra                       infrastructure
//	<name>/extensions/{sysext,confext}/<use>
//	<name>/containers/<use>, machines/<use>, homes/<use>, network-templates/<use>
//
// A tree is redone only when its pinned commit changed (a marker file beside it records the
// commit it holds); files the template takes from the host (artifacts.json) are copied in
// before the marker is written.
type TemplatesStep struct {
	Registry   Materializer
	TenantsDir string
	// ArtifactSources are the host files a template's artifacts.json may ask for; nil means
	// validate.DefaultArtifactSources.
	ArtifactSources []string

	// Dissect is the path of systemd-dissect ("" for machines.Dissect), ImageLimits bound what an extension
	// template's disk image may extract to (zero fields: the registry's default checkout limits, 2,000,000
	// entries and 4 GiB).
	Dissect     string
	ImageLimits machines.ImageLimits

	// locks serialises the checkouts of one shared tree by tenants reconciled in parallel.
	locks sync.Map // path -> *sync.Mutex
}

// Name implements Step.
func (s *TemplatesStep) Name() string { return "Templates" }

// SharedDir is where the trees of container and machine templates are checked out once per
// commit, for all tenants: StateDir/trees, beside StateDir/tenants.
func SharedDir(tenantsDir string) string { return filepath.Join(filepath.Dir(tenantsDir), "trees") }

// TemplateDir is where a template use of tenant name is materialized. Container and machine
// templates are only ever copied from (every machine runs on its own copy), so their trees are
// shared by all tenants that pin the same commit: SharedDir/<template>/<commit>.
func TemplateDir(tenantsDir, name string, u tenant.TemplateUse) string {
	base := filepath.Join(tenantsDir, name)
	switch u.Role {
	case "infrastructure":
		return filepath.Join(base, "infra")
	case "sysext", "confext":
		return filepath.Join(base, "extensions", u.Role, u.Name)
	case "container", "machine":
		if u.Commit == "" || strings.ContainsAny(u.Template+u.Commit, "/.") {
			return filepath.Join(base, u.Role+"s", u.Name) // not pinned: nothing is checked out for it
		}
		return filepath.Join(SharedDir(tenantsDir), u.Template, u.Commit)
	case "homed":
		return filepath.Join(base, "homes", u.Name)
	default:
		return filepath.Join(base, "network-templates", u.Name)
	}
}

// Ensure implements Step.
func (s *TemplatesStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	if len(t.Templates) == 0 {
		return nil, nil
	}
	var errs []error
	for _, u := range t.Templates {
		if u.Commit == "" {
			errs = append(errs, fmt.Errorf("%s %q: no pinned commit", u.Role, u.Name))
			continue
		}
		dir := TemplateDir(s.TenantsDir, t.Name, u)
		if u.Role == "container" || u.Role == "machine" {
			l, _ := s.locks.LoadOrStore(dir, &sync.Mutex{})
			l.(*sync.Mutex).Lock()
			err := s.checkout(ctx, u, dir)
			l.(*sync.Mutex).Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := s.checkout(ctx, u, dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return []tenant.Condition{cond("TemplatesMaterialized", false, "CheckoutFailed", err.Error())}, err
	}
	return []tenant.Condition{cond("TemplatesMaterialized", true, "CheckedOut", fmt.Sprintf("%d templates at their pinned commits", len(t.Templates)))}, nil
}

// checkout materializes u at its pinned commit into dir, unless the marker beside dir says
// it is there already.
func (s *TemplatesStep) checkout(ctx context.Context, u tenant.TemplateUse, dir string) error {
	{
		marker := dir + ".commit"
		if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == u.Commit {
			if _, err := os.Lstat(dir); err == nil {
				if u.Role != "container" && u.Role != "machine" {
					return nil
				}
				// A tree checked out by a version that did not extract its images gets them now.
				if _, err := os.Lstat(TemplateImagesDir(dir)); err == nil {
					return nil
				}
				if err := s.extractTemplateImages(ctx, dir); err != nil {
					return fmt.Errorf("%s %q (template %s at %.12s): %w", u.Role, u.Name, u.Template, u.Commit, err)
				}
				return nil
			}
		}
		os.Remove(marker)
		os.Remove(machines.ImageInfoFile(dir))
		if u.Role == "container" || u.Role == "machine" {
			if err := machines.RemoveTree(TemplateImagesDir(dir)); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		var dirs []template.Dir
		for _, d := range validate.RequiredDirs(validate.Kind(u.Role)) {
			dirs = append(dirs, template.Dir{Path: d.Path, Mode: d.Mode})
		}
		if u.Role == machines.ClassSysext || u.Role == machines.ClassConfext {
			// An extension is checked out and its image extracted beside its place, and
			// put there only once whole: a checkout that fails is never seen at dir.
			stage := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".stage")
			drop := func() {
				machines.RemoveTree(stage)
				os.Remove(machines.ImageInfoFile(stage))
			}
			drop()
			err := s.Registry.Materialize(ctx, u.Template, u.Commit, "", stage, dirs)
			if err == nil {
				err = copyArtifacts(stage, s.ArtifactSources)
			}
			if err == nil {
				err = s.extractImage(ctx, u, stage)
			}
			if err == nil {
				err = putTree(stage, dir)
			}
			if err == nil {
				if err = os.Rename(machines.ImageInfoFile(stage), machines.ImageInfoFile(dir)); errors.Is(err, fs.ErrNotExist) {
					err = nil // not from an image
				}
			}
			if err != nil {
				drop()
				machines.RemoveTree(dir) // what was there is no longer the pinned commit's
				return fmt.Errorf("%s %q (template %s at %.12s): %w", u.Role, u.Name, u.Template, u.Commit, err)
			}
			return os.WriteFile(marker, []byte(u.Commit+"\n"), 0o644)
		}
		if err := s.Registry.Materialize(ctx, u.Template, u.Commit, "", dir, dirs); err != nil {
			return fmt.Errorf("%s %q (template %s at %.12s): %w", u.Role, u.Name, u.Template, u.Commit, err)
		}
		if err := copyArtifacts(dir, s.ArtifactSources); err != nil {
			return fmt.Errorf("%s %q: %w", u.Role, u.Name, err)
		}
		if u.Role == "container" || u.Role == "machine" {
			if err := s.extractTemplateImages(ctx, dir); err != nil {
				machines.RemoveTree(dir)
				return fmt.Errorf("%s %q (template %s at %.12s): %w", u.Role, u.Name, u.Template, u.Commit, err)
			}
		}
		return os.WriteFile(marker, []byte(u.Commit+"\n"), 0o644)
	}
}

// PruneSharedTrees removes the shared trees (SharedDir) that no tenant of ts pins any more.
// It is an Observer: the whole set of tenants is known there. Trees of tenants being deleted
// are kept until they are gone.
func PruneSharedTrees(tenantsDir string) Observer {
	return func(_ context.Context, ts []*tenant.Tenant) error {
		keep := map[string]bool{}
		for _, t := range ts {
			for _, u := range t.Templates {
				if u.Role == "container" || u.Role == "machine" {
					keep[TemplateDir(tenantsDir, t.Name, u)] = true
				}
			}
		}
		shared := SharedDir(tenantsDir)
		templates, err := os.ReadDir(shared)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var errs []error
		for _, tpl := range templates {
			commits, err := os.ReadDir(filepath.Join(shared, tpl.Name()))
			if err != nil {
				continue
			}
			for _, c := range commits {
				dir := filepath.Join(shared, tpl.Name(), strings.TrimSuffix(strings.TrimSuffix(c.Name(), ".commit"), imagesSuffix))
				// Checkouts in progress (hidden temporary names) and trees made in the last minute
				// (for a tenant newer than the list this observer was given) are left alone.
				if keep[dir] || strings.HasPrefix(c.Name(), ".") || !c.IsDir() && !strings.HasSuffix(c.Name(), ".commit") {
					continue
				}
				if fi, err := os.Lstat(dir); err == nil && time.Since(fi.ModTime()) < time.Minute {
					continue
				}
				os.Remove(dir + ".commit")
				if err := machines.RemoveTree(TemplateImagesDir(dir)); err != nil {
					errs = append(errs, err)
				}
				if err := machines.RemoveTree(dir); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	}
}

// copyArtifacts copies the host files a template asks for into the checkout, through an
// os.Root so that no path of the template can make it write outside dir. Only host files of
// allow (nil: validate.DefaultArtifactSources) are copied; any other request fails the checkout.
func copyArtifacts(dir string, allow []string) error {
	arts, err := validate.ReadArtifacts(dir, allow)
	if err != nil || len(arts) == 0 {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, a := range arts {
		src, err := a.Source()
		if err != nil {
			return err
		}
		if err := root.MkdirAll(path.Dir(a.Path), 0o755); err != nil {
			return fmt.Errorf("artifact %s: %w", a.Path, err)
		}
		if err := copyInto(root, src, a.Path); err != nil {
			return fmt.Errorf("artifact %s from %s: %w", a.Path, src, err)
		}
	}
	return nil
}

func copyInto(root *os.Root, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := root.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm()&0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Teardown implements Step: it removes the tenant's whole directory, after unmounting anything
// mounted below it (an extension overlay mounted at boot, say), which RemoveAll alone would meet
// as a read-only tree and fail on forever.
func (s *TemplatesStep) Teardown(_ context.Context, t *tenant.Tenant) error {
	if t.Name == "" || strings.ContainsAny(t.Name, "/.") {
		return fmt.Errorf("refusing to remove the directory of tenant %q", t.Name)
	}
	return machines.RemoveTree(filepath.Join(s.TenantsDir, t.Name))
}

// putTree puts the tree at from in dir's place at once and removes what dir held.
func putTree(from, dir string) error {
	old, err := template.ReplaceDir(from, dir)
	if old != "" {
		if rerr := machines.RemoveTree(old); err == nil {
			err = rerr
		}
	}
	return err
}

// extractImage turns the checkout at dir of an extension template that holds a disk image (rule D39) into the
// tree the rest of the pipeline handles: systemd-dissect reports what the image is (recorded beside the checkout,
// machines.ImageInfoFile), its usr/ and opt/ (or etc/) are copied out read-only, bounded by s.ImageLimits, and the
// image file is removed from the checkout. The extracted files are then checked like any extension tree
// (CheckExtension) before they reach a machine. A checkout without an image is left as it is.
func (s *TemplatesStep) extractImage(ctx context.Context, u tenant.TemplateUse, dir string) error {
	file := validate.ImageFile(dir)
	if file == "" {
		return nil
	}
	if want := validate.ImageName(dir) + "." + u.Role + ".raw"; file != want {
		return fmt.Errorf("disk image %s: rule D39: an image template's image is named %s, after the template", file, want)
	}
	img := filepath.Join(dir, file)
	info, err := machines.InspectImage(ctx, s.Dissect, img)
	if err != nil {
		return fmt.Errorf("disk image %s: %w", file, err)
	}
	if err := machines.ExtractImage(ctx, s.Dissect, img, dir, u.Role, s.imageLimits()); err != nil {
		return fmt.Errorf("disk image %s: %w", file, err)
	}
	if err := os.Remove(img); err != nil {
		return err
	}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(machines.ImageInfoFile(dir), append(b, '\n'), atomicfile.Options{NotDurable: true})
}

func (s *TemplatesStep) imageLimits() machines.ImageLimits {
	lim := s.ImageLimits
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = 2_000_000
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = 4 << 30
	}
	return lim
}

// imagesSuffix names the directory beside a shared container or machine template tree that holds what was
// extracted from the template's extensions/ images (TemplateImagesDir).
const imagesSuffix = ".extensions"

// TemplateImagesDir is where the disk images of the container or machine template checked out at tree
// (extensions/NAME.sysext.raw, NAME.confext.raw) are extracted, once per template commit for every tenant and
// machine: <tree>.extensions/{sysext,confext}/NAME, with NAME.image.json beside each (what systemd-dissect
// reported). Absent when the template has no images.
func TemplateImagesDir(tree string) string { return tree + imagesSuffix }

// extractTemplateImages extracts each disk image of the extensions/ directory of the container or machine
// template checked out at tree into TemplateImagesDir(tree), as extractImage does for an extension template:
// systemd-dissect reports it, its usr/ and opt/ (or etc/) are copied out, bounded by s.ImageLimits per image. It
// is made under a temporary name and renamed into place, so a failure leaves nothing. Anything in extensions/
// that is not NAME.sysext.raw or NAME.confext.raw (rule D39; Template.Add refused it already) fails the checkout.
func (s *TemplatesStep) extractTemplateImages(ctx context.Context, tree string) error {
	imgs, err := validate.TemplateImages(tree)
	if err != nil || len(imgs) == 0 {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(tree), "."+filepath.Base(tree)+imagesSuffix+"-")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			machines.RemoveTree(tmp)
		}
	}()
	for _, img := range imgs {
		file := filepath.Join(tree, "extensions", img.File)
		dst := filepath.Join(tmp, img.Class, img.Name)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		info, err := machines.InspectImage(ctx, s.Dissect, file)
		if err != nil {
			return fmt.Errorf("disk image extensions/%s: %w", img.File, err)
		}
		if err := machines.ExtractImage(ctx, s.Dissect, file, dst, img.Class, s.imageLimits()); err != nil {
			return fmt.Errorf("disk image extensions/%s: %w", img.File, err)
		}
		b, err := json.Marshal(info)
		if err != nil {
			return err
		}
		if err := os.WriteFile(machines.ImageInfoFile(dst), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, TemplateImagesDir(tree)); err != nil {
		return err
	}
	done = true
	return nil
}
