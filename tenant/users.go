package tenant

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
)

// MaxUsers bounds the users of one tenant.
const MaxUsers = 64

// MaxUserKeys bounds the SSH keys of one user; MaxUserKeyLength one key line.
const (
	MaxUserKeys      = 32
	MaxUserKeyLength = 8 << 10
)

// UID ranges (systemd's UIDS-GIDS.md). A tenant user gets a uid of the regular range, never one of the system
// range (0-999), of systemd's dynamic service users (61184-65519), of systemd-homed's range (60001-60513), nobody
// (65534) or the 16-bit -1 (65535). Containers run in a 16-bit user namespace, so nothing above 65535 either.
const (
	MinUserUID = 1000
	MaxUserUID = 60000
)

// User is one user a tenant's machines get, made from a homed template.
type User struct {
	// Name is the user name (systemd's strict rules, see ValidateUserName).
	Name string `json:"name"`
	// Template is the name of the tenant's homed template use the user is made from: its
	// config/user-record.json (shell, real name, ...) and home-skeleton/.
	Template string `json:"template"`
	// SSHAuthorizedKeys may log in as the user. They come from the record, never from the
	// template (a template is shared; keys belong to one person).
	SSHAuthorizedKeys []string `json:"sshAuthorizedKeys,omitempty"`
	// UID is the user's uid in every machine of the tenant: the template's, if its record sets
	// one, else allocated when the user is added, and kept.
	UID int `json:"uid"`
}

// UserOf returns the user of t named name, or nil.
func (t *Tenant) UserOf(name string) *User {
	for i := range t.Users {
		if t.Users[i].Name == name {
			return &t.Users[i]
		}
	}
	return nil
}

// UserInfo is what the daemon knows of the templates a user touches.
type UserInfo struct {
	// UID is the uid the homed template's user record sets, 0 if none.
	UID int
}

// BaseUser is an entry of a machine base's /etc/passwd.
type BaseUser struct {
	Name string
	UID  int
}

// UserInspector reads what pinned templates say about users. A TemplateResolver may implement it;
// without one the checks that need it are skipped (the users step checks each machine's root again
// before it provisions anything).
type UserInspector interface {
	// HomedInfo reads the user record of a homed template at commit.
	HomedInfo(ctx context.Context, template, commit string) (UserInfo, error)
	// BaseUsers returns the users of the /etc/passwd of a container or machine template's base
	// tree at commit (role "container" or "machine").
	BaseUsers(ctx context.Context, template, commit, role string) ([]BaseUser, error)
}

// reservedUsers are names no tenant user may have, whatever a base's /etc/passwd says: systemd
// resolves them itself (nss-systemd synthesizes root and nobody).
var reservedUsers = []string{"root", "nobody", "nfsnobody", "systemd-network", "systemd-resolve"}

// ValidateUserName checks systemd's strict user name rules (valid_user_group_name without
// relaxation): the first character a-z, A-Z or '_', the others also 0-9 or '-', at most 31
// characters (utmp's limit); and that it is not a name systemd reserves.
func ValidateUserName(field, s string) error {
	fail := func(reason string) error { return &FieldError{Field: field, Reason: fmt.Sprintf("%q %s", s, reason)} }
	if s == "" || len(s) > 31 {
		return &FieldError{Field: field, Reason: fmt.Sprintf("%q: a user name is 1 to 31 characters", s)}
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alpha := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
		switch {
		case alpha || ch == '_':
		case i > 0 && (ch >= '0' && ch <= '9' || ch == '-'):
		case i == 0:
			return fail("must start with a letter or '_' (systemd's user name rules)")
		default:
			return fail(fmt.Sprintf("has %q at position %d; only a-z, A-Z, 0-9, '_' and '-' are allowed (systemd's user name rules)", ch, i))
		}
	}
	if slices.Contains(reservedUsers, s) {
		return fail("is reserved by systemd")
	}
	return nil
}

// sshKeyTypes are the key types OpenSSH accepts in authorized_keys.
var sshKeyTypes = []string{
	"ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}

// validateKey checks one authorized_keys line: one line, options allowed before the key type, the key
// type known and its blob base64 that names the same type.
func validateKey(field, k string) error {
	fail := func(reason string) error { return &FieldError{Field: field, Reason: reason} }
	if len(k) > MaxUserKeyLength {
		return fail(fmt.Sprintf("%d bytes, at most %d", len(k), MaxUserKeyLength))
	}
	for _, r := range k {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fail(fmt.Sprintf("control character %U: a key is one line of authorized_keys", r))
		}
	}
	fields := strings.Fields(k)
	for i, f := range fields {
		if !slices.Contains(sshKeyTypes, f) {
			continue
		}
		if i+1 >= len(fields) {
			return fail(fmt.Sprintf("key type %s without the key", f))
		}
		blob, err := base64.StdEncoding.DecodeString(fields[i+1])
		if err != nil || len(blob) < 4+len(f) || string(blob[4:4+len(f)]) != f {
			return fail(fmt.Sprintf("the %s key is not base64 of a %s public key", f, f))
		}
		return nil
	}
	return fail(fmt.Sprintf("no key type (one of %s)", strings.Join(sshKeyTypes, ", ")))
}

// validateUsers checks the users of t: names, duplicates, templates, keys, uids, and with inspect
// (when not nil) names and uids against the system users of the bases of the tenant's machines.
func validateUsers(ctx context.Context, t *Tenant, inspect UserInspector) error {
	if len(t.Users) > MaxUsers {
		return &FieldError{Field: "users", Reason: fmt.Sprintf("%d users, at most %d are allowed", len(t.Users), MaxUsers)}
	}
	names, uids := map[string]bool{}, map[int]string{}
	for i := range t.Users {
		u := &t.Users[i]
		f := fmt.Sprintf("users[%d]", i)
		if err := ValidateUserName(f+".name", u.Name); err != nil {
			return err
		}
		if names[u.Name] {
			return &FieldError{Field: f + ".name", Reason: fmt.Sprintf("user %q is listed twice", u.Name)}
		}
		names[u.Name] = true
		if !slices.ContainsFunc(t.Templates, func(tu TemplateUse) bool { return tu.Role == "homed" && tu.Name == u.Template }) {
			return &FieldError{Field: f + ".template", Reason: fmt.Sprintf("the tenant has no homed template use named %q", u.Template)}
		}
		if len(u.SSHAuthorizedKeys) > MaxUserKeys {
			return &FieldError{Field: f + ".sshAuthorizedKeys", Reason: fmt.Sprintf("%d keys, at most %d", len(u.SSHAuthorizedKeys), MaxUserKeys)}
		}
		for j, k := range u.SSHAuthorizedKeys {
			if err := validateKey(fmt.Sprintf("%s.sshAuthorizedKeys[%d]", f, j), k); err != nil {
				return err
			}
		}
		if u.UID != 0 && (u.UID < MinUserUID || u.UID > MaxUserUID) {
			return &FieldError{Field: f + ".uid", Reason: fmt.Sprintf("%d is outside the regular range %d-%d", u.UID, MinUserUID, MaxUserUID)}
		}
		if other, dup := uids[u.UID]; dup && u.UID != 0 {
			return &FieldError{Field: f + ".uid", Reason: fmt.Sprintf("uid %d is user %q's", u.UID, other)}
		}
		uids[u.UID] = u.Name
	}
	if inspect == nil || len(t.Users) == 0 {
		return nil
	}
	for _, m := range t.Machines {
		role := "container"
		if m.Kind == VM {
			role = "machine"
		}
		i := slices.IndexFunc(t.Templates, func(tu TemplateUse) bool { return tu.Role == role && tu.Name == m.Template })
		if i < 0 || t.Templates[i].Commit == "" {
			continue
		}
		use := t.Templates[i]
		base, err := inspect.BaseUsers(ctx, use.Template, use.Commit, role)
		if err != nil {
			return &TemplateError{Template: use.Template, Err: err}
		}
		for j, u := range t.Users {
			for _, b := range base {
				switch {
				case b.Name == u.Name:
					return &FieldError{Field: fmt.Sprintf("users[%d].name", j), Reason: fmt.Sprintf("%q is a system user (uid %d) of the base of machine %q (template %s, etc/passwd)", u.Name, b.UID, m.Name, use.Template)}
				case b.UID == u.UID && u.UID != 0:
					return &FieldError{Field: fmt.Sprintf("users[%d].uid", j), Reason: fmt.Sprintf("uid %d is user %q's in the base of machine %q (template %s, etc/passwd)", u.UID, b.Name, m.Name, use.Template)}
				}
			}
		}
	}
	return nil
}

// allocateUID gives u a uid when it has none: the homed template's, else the lowest of the regular
// range that no other user of t and no user of a machine base of t has (without inspect: no other user of t).
func allocateUID(ctx context.Context, t *Tenant, u *User, inspect UserInspector) error {
	if u.UID != 0 {
		return nil
	}
	i := slices.IndexFunc(t.Templates, func(tu TemplateUse) bool { return tu.Role == "homed" && tu.Name == u.Template })
	if inspect != nil && i >= 0 && t.Templates[i].Commit != "" {
		info, err := inspect.HomedInfo(ctx, t.Templates[i].Template, t.Templates[i].Commit)
		if err != nil {
			return &TemplateError{Template: t.Templates[i].Template, Err: err}
		}
		if info.UID != 0 {
			u.UID = info.UID
			return nil
		}
	}
	used := map[int]bool{}
	for _, o := range t.Users {
		used[o.UID] = true
	}
	for _, m := range t.Machines {
		role := "container"
		if m.Kind == VM {
			role = "machine"
		}
		j := slices.IndexFunc(t.Templates, func(tu TemplateUse) bool { return tu.Role == role && tu.Name == m.Template })
		if inspect == nil || j < 0 || t.Templates[j].Commit == "" {
			continue
		}
		base, err := inspect.BaseUsers(ctx, t.Templates[j].Template, t.Templates[j].Commit, role)
		if err != nil {
			return &TemplateError{Template: t.Templates[j].Template, Err: err}
		}
		for _, b := range base {
			used[b.UID] = true
		}
	}
	for uid := MinUserUID; uid <= MaxUserUID; uid++ {
		if !used[uid] {
			u.UID = uid
			return nil
		}
	}
	return &FieldError{Field: "users", Reason: "no free uid in the regular range"}
}

// PutUser adds user u to tenant name, or replaces the user of that name (its template and keys; a
// replaced user keeps its uid unless its template sets another). The change is one conditional commit,
// retried on conflict; an invalid user changes nothing.
func (s *Service) PutUser(ctx context.Context, name string, u User) (*Tenant, error) {
	if err := ValidateUserName("user.name", u.Name); err != nil {
		return nil, err
	}
	inspect := s.userInspector()
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		nu := User{Name: u.Name, Template: u.Template, SSHAuthorizedKeys: slices.Clone(u.SSHAuthorizedKeys)}
		if old := t.UserOf(u.Name); old != nil && old.Template == u.Template {
			nu.UID = old.UID
		}
		t.Users = slices.DeleteFunc(slices.Clone(t.Users), func(o User) bool { return o.Name == u.Name })
		if err := allocateUID(ctx, t, &nu, inspect); err != nil {
			return err
		}
		t.Users = append(t.Users, nu)
		slices.SortFunc(t.Users, func(a, b User) int { return strings.Compare(a.Name, b.Name) })
		return validateUsers(ctx, t, inspect)
	})
}

// RemoveUser removes user from tenant name; the users step then removes it from the machines.
func (s *Service) RemoveUser(ctx context.Context, name, user string) (*Tenant, error) {
	return s.modify(ctx, name, 0, func(t *Tenant) error {
		if t.Deleting() {
			return errDeleting
		}
		if t.UserOf(user) == nil {
			return &UserError{Tenant: name, User: user}
		}
		t.Users = slices.DeleteFunc(slices.Clone(t.Users), func(o User) bool { return o.Name == user })
		return nil
	})
}

// userInspector returns the template resolver as a UserInspector, if it is one.
func (s *Service) userInspector() UserInspector {
	ui, _ := s.cfg.Templates.(UserInspector)
	return ui
}
