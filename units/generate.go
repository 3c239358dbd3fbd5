package units

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
)

// GenerateReport says what Generate did.
type GenerateReport struct {
	// Tenants is the number of tenants whose units were written.
	Tenants int
	// Units is the number of unit files written.
	Units int
	// Skipped lists tenants that were left out, with the reason; Entry is the index in the tenants given.
	Skipped []Skipped
}

// Generate writes the units of every tenant into dir, as a systemd generator does into its output directory
// (systemd.generator(7)): Render's units, and for each running tenant a symlink
// multi-user.target.wants/tenant@<name>.service -> ../tenant@<name>.service, which is how a generated unit is
// started at boot ([Install] sections of generated units are never applied). dir must exist. Files are created
// exclusively and never followed through symlinks, so nothing outside dir is touched and a tenant whose units
// collide with units already written is skipped. A tenant that fails to render or write is skipped (its files
// removed) and reported; the error return is for a dir that cannot be used at all.
func Generate(dir string, tenants []RegistryTenant, cfg Config) (GenerateReport, error) {
	var rep GenerateReport
	cfg, err := cfg.withDefaults()
	if err != nil {
		return rep, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return rep, fmt.Errorf("generator directory: %w", err)
	}
	if !st.IsDir() {
		return rep, fmt.Errorf("generator directory %s: %w", dir, syscall.ENOTDIR)
	}
	wantsDir := filepath.Join(dir, "multi-user.target.wants")
	wantsMade := false
	for i, rt := range tenants {
		units, err := render(rt.Tenant(), cfg)
		if err != nil {
			rep.Skipped = append(rep.Skipped, Skipped{Entry: i, Name: rt.Name, Reason: err.Error()})
			continue
		}
		if rt.Running && !wantsMade {
			if err := os.Mkdir(wantsDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return rep, fmt.Errorf("generator directory: %w", err)
			}
			// An existing one must be a real directory: links made through a symlink would land outside dir.
			if fi, err := os.Lstat(wantsDir); err != nil || !fi.IsDir() {
				return rep, fmt.Errorf("generator directory: %s is not a directory", wantsDir)
			}
			wantsMade = true
		}
		if err := writeTenant(dir, units, rt.Running); err != nil {
			rep.Skipped = append(rep.Skipped, Skipped{Entry: i, Name: rt.Name, Reason: err.Error()})
			continue
		}
		rep.Tenants++
		rep.Units += len(units)
	}
	return rep, nil
}

// writeTenant writes one tenant's units (units[0] is tenant@), and the wants link if running; on error it removes
// what it wrote.
func writeTenant(dir string, units []Unit, running bool) (err error) {
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	for _, u := range units {
		p, err := WriteUnit(dir, u)
		if err != nil {
			return err
		}
		written = append(written, p)
	}
	if running {
		link := filepath.Join(dir, "multi-user.target.wants", units[0].Name)
		if err := os.Symlink("../"+units[0].Name, link); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w: %s exists already", ErrDuplicateTenant, link)
			}
			return err
		}
		written = append(written, link)
	}
	return nil
}

// checkUnitName refuses a Unit name that is not a plain file name.
func checkUnitName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q is not a file name", ErrInvalidUnit, name)
	}
	return nil
}

// ReplaceUnit makes dir/u.Name hold u.Content, for a daemon that keeps units in /run/systemd/system: it does
// nothing if the file already has that content (changed is false, so no daemon-reload is needed), and otherwise
// replaces it atomically and durably (atomicfile), never writing through a symlink. Names are checked as
// by WriteUnit.
func ReplaceUnit(dir string, u Unit) (changed bool, err error) {
	if err := checkUnitName(u.Name); err != nil {
		return false, err
	}
	p := filepath.Join(dir, u.Name)
	if f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0); err == nil {
		old, rerr := io.ReadAll(io.LimitReader(f, int64(len(u.Content))+1))
		f.Close()
		if rerr == nil && bytes.Equal(old, u.Content) {
			return false, nil
		}
	}
	if err = atomicfile.WriteFile(p, u.Content, atomicfile.Options{Mode: 0o644}); err != nil {
		return false, err
	}
	return true, nil
}

// WriteUnit creates dir/u.Name with u.Content, mode 0644. It refuses a name that is not a plain file name (no "/",
// not "." or "..", not empty) and a file that exists already (also a symlink, which it never follows), and
// returns the path written.
func WriteUnit(dir string, u Unit) (string, error) {
	if err := checkUnitName(u.Name); err != nil {
		return "", err
	}
	p := filepath.Join(dir, u.Name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("%w: unit %s exists already", ErrDuplicateTenant, u.Name)
		}
		return "", err
	}
	if _, err := f.Write(u.Content); err != nil {
		f.Close()
		os.Remove(p)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(p)
		return "", err
	}
	return p, nil
}
