package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/tenant"
	"github.com/bitbuilder/bitbuilder/units"
)

// UsersStep provisions a tenant's users (tenant.User) into each of its machines' roots, as userdb drop-in
// records with a home copied from the homed template's skeleton (machines.ProvisionUser), and removes the
// users that left the record. Which users the daemon put into a root is recorded beside it
// (machines.UsersManifest): an entry is written before a user is provisioned and dropped only after it was
// removed, so a crash never leaves a user the daemon does not know of.
//
// A machine is written to only while it runs (its unit active: systemd-nspawn has finished shifting the
// root's ownership into the machine's uid range) or is stopped; a starting machine is looked at in a later
// pass (the reconciler polls while machines start).
type UsersStep struct {
	// Host tells running, starting and stopped machines apart; nil (no system bus) treats every machine
	// whose root exists as stopped.
	Host MachineHost
	// Units gives the machines' paths.
	Units units.Config
	// TenantsDir is where the templates step checks the homed templates out (StateDir/tenants).
	TenantsDir string
	Log        *slog.Logger
}

// Name implements Step.
func (s *UsersStep) Name() string { return "Users" }

func (s *UsersStep) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// Ensure implements Step: one UsersProvisioned condition, false naming each user and machine that failed
// (with the file or field at fault), unknown while machines start.
func (s *UsersStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	var errs, waiting []string
	var failed error
	provisioned := 0
	names := make([]string, 0, len(t.Machines))
	for _, m := range t.Machines {
		names = append(names, m.Name)
	}
	for _, st := range t.MachineStatus {
		if !slices.Contains(names, st.Name) {
			names = append(names, st.Name)
		}
	}
	any := len(t.Users) > 0
	for _, name := range names {
		mp := s.Units.MachinePaths(t.Name, name)
		manifest, err := machines.ReadUsersManifest(mp.Dir)
		if err != nil {
			errs = append(errs, fmt.Sprintf("machine %s: %v", name, err))
			continue
		}
		if len(manifest) > 0 {
			any = true
		}
		if t.MachineOf(name) == nil || len(manifest) == 0 && len(t.Users) == 0 {
			continue // a machine leaving the record goes with its root; nothing to do for one without users
		}
		if _, err := os.Lstat(mp.Root); err != nil {
			waiting = append(waiting, name)
			continue
		}
		if ok, err := s.settled(ctx, t.Name, name); err != nil {
			errs = append(errs, fmt.Sprintf("machine %s: %v", name, err))
			continue
		} else if !ok {
			waiting = append(waiting, name)
			continue
		}
		n, err := s.syncMachine(ctx, t, name, mp, manifest)
		provisioned += n
		if err != nil {
			errs = append(errs, err.Error())
			failed = errors.Join(failed, err)
		}
	}
	if !any {
		return nil, nil
	}
	switch {
	case len(errs) > 0:
		return []tenant.Condition{cond("UsersProvisioned", false, "Failed", strings.Join(errs, "; "))}, failed
	case len(waiting) > 0:
		return []tenant.Condition{{Type: "UsersProvisioned", Status: "unknown", Reason: "WaitingForMachines", Message: "waiting for " + strings.Join(waiting, ", ") + " to start"}}, nil
	}
	return []tenant.Condition{cond("UsersProvisioned", true, "Provisioned", fmt.Sprintf("%d users in %d machines", len(t.Users), len(t.Machines)))}, nil
}

// settled reports whether machine name's unit is active or inactive (not on its way between them).
func (s *UsersStep) settled(ctx context.Context, tn, name string) (bool, error) {
	if s.Host == nil {
		return true, nil
	}
	us, err := s.Host.UnitState(ctx, units.MachineUnit(tn, name))
	if errors.Is(err, machines.ErrNoBus) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	switch us.Active {
	case "active", "inactive", "failed", "":
		return true, nil
	}
	return false, nil
}

// syncMachine makes machine name's root hold exactly t's users; it returns how many it provisioned.
func (s *UsersStep) syncMachine(ctx context.Context, t *tenant.Tenant, name string, mp units.MachinePaths, manifest []machines.ProvisionedUser) (int, error) {
	var errs []error
	// Users that left the record, or whose uid changed: removed first, then dropped from the manifest.
	keep, onDisk := manifest[:0:0], manifest
	for _, p := range manifest {
		if u := t.UserOf(p.Name); u != nil && u.UID == p.UID {
			keep = append(keep, p)
			continue
		}
		if err := machines.RemoveUser(mp.Root, p.Name, p.UID); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: removing user %s: %w", name, p.Name, err))
			keep = append(keep, p)
			continue
		}
		s.log().Info("user removed from machine", "tenant", t.Name, "machine", name, "user", p.Name)
	}
	n := 0
	for _, u := range t.Users {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		use := homedUse(t, u.Template)
		if use == nil {
			errs = append(errs, fmt.Errorf("machine %s: user %s: the tenant has no homed template use %q", name, u.Name, u.Template))
			continue
		}
		src := TemplateDir(s.TenantsDir, t.Name, *use)
		if b, err := os.ReadFile(src + ".commit"); err != nil || strings.TrimSpace(string(b)) != use.Commit {
			errs = append(errs, fmt.Errorf("machine %s: user %s: homed template %s is not checked out at %.12s yet", name, u.Name, use.Template, use.Commit))
			continue
		}
		entry := machines.ProvisionedUser{Name: u.Name, UID: u.UID}
		known := slices.Contains(keep, entry)
		if !known {
			// Recorded before anything is written, so a crash mid-way is cleaned up if the user leaves.
			intent := append(slices.Clone(keep), entry)
			if err := machines.WriteUsersManifest(mp.Dir, intent); err != nil {
				errs = append(errs, fmt.Errorf("machine %s: %w", name, err))
				continue
			}
			keep, onDisk = append(keep, entry), intent
		}
		err := machines.ProvisionUser(mp.Root, machines.UserSpec{Name: u.Name, UID: u.UID, Keys: u.SSHAuthorizedKeys, Template: src})
		if err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", name, err))
			if !known {
				// ProvisionUser leaves nothing of a new user when it fails: it is not the machine's.
				keep = slices.DeleteFunc(keep, func(p machines.ProvisionedUser) bool { return p == entry })
			}
			continue
		}
		n++
	}
	if !sameUsers(keep, onDisk) {
		if err := machines.WriteUsersManifest(mp.Dir, keep); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", name, err))
		}
	}
	return n, errors.Join(errs...)
}

// sameUsers reports whether a and b list the same users, in any order.
func sameUsers(a, b []machines.ProvisionedUser) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}

// homedUse returns t's homed template use named name.
func homedUse(t *tenant.Tenant, name string) *tenant.TemplateUse {
	for i := range t.Templates {
		if t.Templates[i].Role == "homed" && t.Templates[i].Name == name {
			return &t.Templates[i]
		}
	}
	return nil
}

// Teardown implements Step: the users go with the machines' roots (MachinesStep.Teardown, which runs after
// this step's), so there is nothing of their own to remove.
func (s *UsersStep) Teardown(context.Context, *tenant.Tenant) error { return nil }
