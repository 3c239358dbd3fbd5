// Package machines runs BitBuilder's containers and VMs through systemd: it starts and stops
// the units that units.Render wrote for them (systemd-nspawn and systemd-vmspawn) with the
// service manager's D-Bus API, observes them through systemd-machined's D-Bus API, follows
// both for changes (unit PropertiesChanged, machined's MachineNew and MachineRemoved), and
// prepares each machine's own root: a private copy of its template's pinned tree.
//
// It is a leaf: it knows units and paths, not tenants or the store. The reconciler reaches it
// through a small interface (reconcile.MachineHost) and tests its logic against a fake; the
// real component is tested in the systemd 257 test host (integration).
//
// # Errors
//
// ErrNoBus: there is no system bus (or no service manager on it). Every method that needs one
// returns it wrapped; callers show it as a condition instead of failing.
// *SettingsError: a template's nspawn settings file cannot be read (too large, not a regular
// file, a symlink). *UserError: a user cannot be provisioned into a machine's root (the file or
// field at fault: a skeleton symlink out of the home, a system user of the root's etc/passwd);
// nothing of the user was written.
//
// # Users
//
// ProvisionUser writes a tenant's user into a machine's root as a userdb drop-in record with a home
// copied from a homed template's skeleton, through an os.Root of the root (nothing the machine put
// there leads a write out of it), with the owners the machine sees (UIDShift: nspawn's private user
// namespace); RemoveUser undoes it. The users of a root are listed beside it (UsersManifest).
//
// # Writable roots
//
// A machine never runs on its template's tree: Prepare copies the tree (cp -a --reflink=auto, so
// copy-on-write file systems share the blocks) to machines/<name>/rootfs, atomically (a temporary
// directory renamed into place), and records the commit it came from. Two machines never share a
// root, and a template tree checked out anew (a new pin) never changes under a running machine:
// the reconciler copies again only while the machine is stopped, so a new pin takes effect at the
// machine's next restart. Overlayfs over the template tree was rejected: the template tree is
// replaced by an exchange rename on a new pin, so an overlay's lower layer would have to be kept
// per commit, and nspawn's user namespace would then copy up every file to chown it.
package machines
