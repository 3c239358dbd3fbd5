package machines

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/internal/treefile"
)

// Limits of what provisioning a user reads from a homed template and from a machine's root.
const (
	// MaxUserRecordSize bounds a template's config/user-record.json.
	MaxUserRecordSize = 64 << 10
	// MaxPasswdSize bounds a base's etc/passwd.
	MaxPasswdSize = 1 << 20
	// MaxSkeletonEntries and MaxSkeletonBytes bound a home skeleton.
	MaxSkeletonEntries = 10000
	MaxSkeletonBytes   = 64 << 20
	maxSkeletonDepth   = 64
)

// PasswdEntry is one line of an /etc/passwd.
type PasswdEntry struct {
	Name string
	UID  int
}

// ParsePasswd reads the names and uids of an /etc/passwd; malformed lines are skipped.
func ParsePasswd(data []byte) []PasswdEntry {
	var out []PasswdEntry
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] == "" || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], "+") || strings.HasPrefix(f[0], "-") {
			continue
		}
		uid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		out = append(out, PasswdEntry{Name: f[0], UID: uid})
	}
	return out
}

// ReadPasswd reads root's etc/passwd with treefile.Read (nothing followed out of root, at most MaxPasswdSize
// bytes); a root without one has no users.
func ReadPasswd(root string) ([]PasswdEntry, error) {
	data, err := treefile.Read(root, "etc/passwd", MaxPasswdSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParsePasswd(data), nil
}

// UserSpec is one user to provision into a machine's root.
type UserSpec struct {
	Name string
	UID  int
	// Keys are the SSH authorized keys of the user (from the tenant record).
	Keys []string
	// Template is the materialized homed template: config/user-record.json and home-skeleton/.
	Template string
}

// userdb record fields the daemon sets itself, or that a drop-in record must not carry: the rest of the
// template's record is kept as it is.
var ownedFields = []string{"userName", "uid", "gid", "homeDirectory", "privileged", "secret", "status", "signature", "binding", "perMachine"}

// UserRecord returns the JSON user record of spec in a machine (systemd's JSON User Record format, as
// a userdb drop-in reads it): the template's record with the user's name, uid, primary group (its own,
// gid = uid) and home, and no privileged part (that is UserPrivileged's).
func UserRecord(spec UserSpec) ([]byte, error) {
	data, err := treefile.Read(spec.Template, "config/user-record.json", MaxUserRecordSize)
	if err != nil {
		return nil, &UserError{User: spec.Name, Path: "config/user-record.json", Reason: err.Error()}
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, &UserError{User: spec.Name, Path: "config/user-record.json", Reason: "not a JSON object: " + err.Error()}
	}
	for _, k := range ownedFields {
		delete(rec, k)
	}
	for k, v := range map[string]any{"userName": spec.Name, "uid": spec.UID, "gid": spec.UID, "homeDirectory": "/home/" + spec.Name} {
		rec[k] = v
	}
	if _, ok := rec["disposition"]; !ok {
		rec["disposition"] = "regular"
	}
	return json.MarshalIndent(rec, "", "  ")
}

// userPrivileged is the privileged part of the user's record: its SSH authorized keys.
func userPrivileged(spec UserSpec) []byte {
	keys := spec.Keys
	if keys == nil {
		keys = []string{}
	}
	b, _ := json.MarshalIndent(map[string]any{"privileged": map[string]any{"sshAuthorizedKeys": keys}}, "", "  ")
	return b
}

// UIDShift returns the uid that uid 0 of a machine has on the host for files in root: the owner of root
// itself. systemd-nspawn --private-users=pick with --private-users-ownership=chown makes root (the
// directory) owned by the first uid of the machine's range and shifts every file into it; with an idmapped
// mount ("map", or "auto" where the file system can) and for a root it has not started yet, files stay as
// they are and root is owned by 0. Files written with UIDShift added keep their meaning either way, and a
// later chown by nspawn moves them with the rest.
func UIDShift(root string) (int, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("no owner")
	}
	return int(st.Uid), nil
}

// ProvisionUser makes spec's user exist in the machine root root, as a userdb drop-in record
// (etc/userdb/<name>.user, <uid>.user -> <name>.user, <name>.user-privileged with the SSH keys, readable by
// root only; its group <name>.group and <gid>.group) and a home /home/<name> copied from the template's
// home-skeleton/ with ~/.ssh/authorized_keys, owned by the user (uid shifted as UIDShift says).
//
// A home that exists already is kept (it holds the user's files); only its authorized_keys is rewritten.
// A new home is made under a temporary name and renamed into place, and the records are written
// (each atomically) only after it, the user record last: a failure leaves no user, and a crash leaves at
// most a temporary directory that the next call removes. Every path is opened below root through an
// os.Root, so nothing a machine put into its own root (a symlink) leads a write out of it. passwd is the
// root's etc/passwd: a user of that name or uid there is a *UserError, before anything is written.
func ProvisionUser(root string, spec UserSpec) (err error) {
	passwd, err := ReadPasswd(root)
	if err != nil {
		return &UserError{User: spec.Name, Path: "etc/passwd", Reason: err.Error()}
	}
	for _, p := range passwd {
		if p.Name == spec.Name || p.UID == spec.UID {
			return &UserError{User: spec.Name, Path: "etc/passwd", Reason: fmt.Sprintf("the machine has a system user %s (uid %d)", p.Name, p.UID)}
		}
	}
	record, err := UserRecord(spec)
	if err != nil {
		return err
	}
	shift, err := UIDShift(root)
	if err != nil {
		return err
	}
	owner := shift + spec.UID
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()

	home := "home/" + spec.Name
	if err := mkdirOwned(r, "home", shift); err != nil {
		return err
	}
	// A user that did not exist before leaves no trace when a later step fails: its records and the home
	// made for it are removed again.
	_, existed := r.Lstat("etc/userdb/" + spec.Name + ".user")
	madeHome := false
	defer func() {
		if err == nil || existed == nil {
			return
		}
		removeRecords(r, spec.Name, spec.UID)
		if madeHome {
			r.RemoveAll(home)
		}
	}()
	if _, err := r.Lstat(home); errors.Is(err, fs.ErrNotExist) {
		tmp := "home/.bitbuilder-new-" + spec.Name
		if err := r.RemoveAll(tmp); err != nil {
			return err
		}
		if err := copySkeleton(r, filepath.Join(spec.Template, "home-skeleton"), tmp, owner, spec.Name); err != nil {
			r.RemoveAll(tmp)
			return err
		}
		if err := writeKeys(r, tmp, spec.Keys, owner); err != nil {
			r.RemoveAll(tmp)
			return err
		}
		if err := r.Rename(tmp, home); err != nil {
			r.RemoveAll(tmp)
			return err
		}
		madeHome = true
	} else if err != nil {
		return err
	} else if err := writeKeys(r, home, spec.Keys, owner); err != nil {
		return err
	}

	if err := mkdirOwned(r, "etc/userdb", shift); err != nil {
		return err
	}
	group, _ := json.MarshalIndent(map[string]any{"groupName": spec.Name, "gid": spec.UID, "disposition": "regular"}, "", "  ")
	uid := strconv.Itoa(spec.UID)
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{spec.Name + ".group", group, 0o644},
		{spec.Name + ".user-privileged", userPrivileged(spec), 0o600},
		{spec.Name + ".user", record, 0o644},
	} {
		if err := writeInRoot(r, "etc/userdb/"+f.name, f.data, f.mode, shift, shift); err != nil {
			return err
		}
	}
	if err := symlinkInRoot(r, "etc/userdb/"+uid+".group", spec.Name+".group", shift); err != nil {
		return err
	}
	return symlinkInRoot(r, "etc/userdb/"+uid+".user", spec.Name+".user", shift)
}

// mkdirOwned makes directory rel (0755, owned by the machine's root user, shift) if it is missing.
func mkdirOwned(r *os.Root, rel string, shift int) error {
	if _, err := r.Lstat(rel); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := r.MkdirAll(rel, 0o755); err != nil {
		return err
	}
	return r.Lchown(rel, shift, shift)
}

// RemoveUser removes what ProvisionUser made for user name (uid uid) from root: the records first (the
// user is gone at once), then the home. Missing pieces are not an error.
func RemoveUser(root, name string, uid int) error {
	r, err := os.OpenRoot(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer r.Close()
	if err := removeRecords(r, name, uid); err != nil {
		return err
	}
	// The home leaves under a temporary name first, so that a crash mid-way leaves no half home in place.
	home, gone := "home/"+name, "home/.bitbuilder-removed-"+name
	if err := r.Rename(home, gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return r.RemoveAll(gone)
}

// removeRecords removes the userdb records of user name (uid uid) below r; missing ones are not an error.
func removeRecords(r *os.Root, name string, uid int) error {
	u := strconv.Itoa(uid)
	for _, f := range []string{u + ".user", name + ".user", name + ".user-privileged", u + ".group", name + ".group"} {
		if err := r.Remove("etc/userdb/" + f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// copySkeleton copies the skeleton directory skel (a template's tree, read with treefile) to dst below r,
// owned by owner. Symlinks are kept only when they stay inside the home; anything else but regular files
// and directories is refused, as are more than MaxSkeletonEntries entries or MaxSkeletonBytes bytes.
func copySkeleton(r *os.Root, skel, dst string, owner int, user string) error {
	if err := r.Mkdir(dst, 0o700); err != nil {
		return err
	}
	if err := r.Lchown(dst, owner, owner); err != nil {
		return err
	}
	fi, err := os.Lstat(skel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || !fi.IsDir() {
		return &UserError{User: user, Path: "home-skeleton", Reason: "not a directory"}
	}
	entries, total := 0, int64(0)
	return filepath.WalkDir(skel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(skel, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		bad := func(reason string) error {
			return &UserError{User: user, Path: "home-skeleton/" + rel, Reason: reason}
		}
		if entries++; entries > MaxSkeletonEntries {
			return bad(fmt.Sprintf("more than %d entries in the skeleton", MaxSkeletonEntries))
		}
		if strings.Count(rel, "/") >= maxSkeletonDepth {
			return bad(fmt.Sprintf("deeper than %d levels", maxSkeletonDepth))
		}
		target := dst + "/" + rel
		switch {
		case d.IsDir():
			if err := r.Mkdir(target, 0o755); err != nil {
				return err
			}
			return r.Lchown(target, owner, owner)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !SkeletonLinkInside(rel, link) {
				return bad(fmt.Sprintf("symlink to %q leads out of the home", link))
			}
			if err := r.Symlink(link, target); err != nil {
				return err
			}
			return r.Lchown(target, owner, owner)
		case d.Type().IsRegular():
			data, err := treefile.Read(skel, rel, MaxSkeletonBytes-total)
			if err != nil {
				return bad(err.Error())
			}
			total += int64(len(data))
			mode := os.FileMode(0o644)
			if info, err := d.Info(); err == nil && info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			return writeInRoot(r, target, data, mode, owner, owner)
		default:
			return bad("not a regular file, directory or symlink")
		}
	})
}

// SkeletonLinkInside reports whether a symlink at rel (relative to a home) with target link resolves inside
// the home: a relative target that does not climb above the home's top. Absolute targets are refused: in a
// machine they name the machine's files, not the home's.
func SkeletonLinkInside(rel, link string) bool {
	if link == "" || strings.HasPrefix(link, "/") {
		return false
	}
	depth := strings.Count(path.Dir(rel), "/")
	if path.Dir(rel) != "." {
		depth++
	}
	for _, c := range strings.Split(link, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return false
			}
		default:
			depth++
		}
	}
	return true
}

// writeKeys writes home/.ssh/authorized_keys (one key a line; 0600 in a 0700 .ssh), owned by owner.
func writeKeys(r *os.Root, home string, keys []string, owner int) error {
	ssh := home + "/.ssh"
	if err := r.Mkdir(ssh, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := r.Lstat(ssh)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", ssh)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != owner || int(st.Gid) != owner {
		if err := r.Lchown(ssh, owner, owner); err != nil {
			return err
		}
	}
	if fi.Mode().Perm() != 0o700 {
		if err := r.Chmod(ssh, 0o700); err != nil {
			return err
		}
	}
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('\n')
	}
	return writeInRoot(r, ssh+"/authorized_keys", b.Bytes(), 0o600, owner, owner)
}

// writeInRoot writes rel below r atomically, as atomicfile does for a plain path: a temporary file beside it,
// its mode and owner set, fsync'd, renamed over rel, and the directory fsync'd. An unchanged file is left as
// it is.
func writeInRoot(r *os.Root, rel string, data []byte, mode os.FileMode, uid, gid int) error {
	if cur, err := r.ReadFile(rel); err == nil && bytes.Equal(cur, data) {
		if fi, err := r.Lstat(rel); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == mode {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
				return nil
			}
		}
	}
	tmp := path.Join(path.Dir(rel), ".bitbuilder-tmp-"+path.Base(rel))
	r.Remove(tmp)
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	for _, step := range []func() error{
		func() error { return werr },
		func() error { return f.Chown(uid, gid) },
		func() error { return f.Chmod(mode) },
		f.Sync,
	} {
		if err := step(); err != nil {
			f.Close()
			r.Remove(tmp)
			return err
		}
	}
	if err := f.Close(); err != nil {
		r.Remove(tmp)
		return err
	}
	if err := r.Rename(tmp, rel); err != nil {
		r.Remove(tmp)
		return err
	}
	return syncDir(r, path.Dir(rel))
}

// symlinkInRoot makes rel a symlink to target (atomically replacing what is there), unless it is one already.
func symlinkInRoot(r *os.Root, rel, target string, owner int) error {
	if cur, err := r.Readlink(rel); err == nil && cur == target {
		return nil
	}
	tmp := path.Join(path.Dir(rel), ".bitbuilder-tmp-"+path.Base(rel))
	r.Remove(tmp)
	if err := r.Symlink(target, tmp); err != nil {
		return err
	}
	if err := r.Lchown(tmp, owner, owner); err != nil {
		r.Remove(tmp)
		return err
	}
	if err := r.Rename(tmp, rel); err != nil {
		r.Remove(tmp)
		return err
	}
	return syncDir(r, path.Dir(rel))
}

func syncDir(r *os.Root, dir string) error {
	d, err := r.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// UsersManifest is the file in a machine's directory (beside its root, out of the machine's reach) that lists
// the users the daemon provisioned into the root, so that it removes exactly those when they leave the record.
const UsersManifest = "users.json"

// ProvisionedUser is an entry of the users manifest.
type ProvisionedUser struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
}

// ReadUsersManifest returns the users the manifest in machine directory dir lists.
func ReadUsersManifest(dir string) ([]ProvisionedUser, error) {
	data, err := os.ReadFile(filepath.Join(dir, UsersManifest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []ProvisionedUser
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, UsersManifest), err)
	}
	return out, nil
}

// WriteUsersManifest records users in machine directory dir (atomically, durably).
func WriteUsersManifest(dir string, users []ProvisionedUser) error {
	users = slices.Clone(users)
	slices.SortFunc(users, func(a, b ProvisionedUser) int { return strings.Compare(a.Name, b.Name) })
	users = slices.CompactFunc(users, func(a, b ProvisionedUser) bool { return a == b })
	if users == nil {
		users = []ProvisionedUser{}
	}
	data, _ := json.Marshal(users)
	return atomicfile.WriteFile(filepath.Join(dir, UsersManifest), append(data, '\n'), atomicfile.Options{Mode: 0o600})
}
