package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// usersToAPI is a tenant's users as io.bitbuilder.Tenant shows them.
func usersToAPI(t *tenant.Tenant) []vt.User {
	out := make([]vt.User, 0, len(t.Users))
	for _, u := range t.Users {
		out = append(out, vt.User{Name: u.Name, Template: u.Template, SshAuthorizedKeys: append([]string{}, u.SSHAuthorizedKeys...), Uid: int64(u.UID)})
	}
	return out
}

// AddUser implements io.bitbuilder.Tenant.AddUser.
func (a *tenantAPI) AddUser(ctx context.Context, c vt.VarlinkCall, name, user, template string, keys *[]string) error {
	u := tenant.User{Name: user, Template: template}
	if keys != nil {
		u.SSHAuthorizedKeys = *keys
	}
	t, err := a.svc.PutUser(ctx, name, u)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return c.ReplyAddUser(ctx, toAPI(t))
}

// RemoveUser implements io.bitbuilder.Tenant.RemoveUser.
func (a *tenantAPI) RemoveUser(ctx context.Context, c vt.VarlinkCall, name, user string) error {
	t, err := a.svc.RemoveUser(ctx, name, user)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return c.ReplyRemoveUser(ctx, toAPI(t))
}

// userResolver is the template resolver that also reads what templates say about users
// (tenant.UserInspector): the uid of a homed template's user record, and the system users of a machine
// template's base.
type userResolver struct {
	templateResolver
	// trees is where container and machine templates are checked out (reconcile.SharedDir).
	trees string
}

func newUserResolver(r templateResolver, stateDir string) userResolver {
	return userResolver{templateResolver: r, trees: reconcile.SharedDir(filepath.Join(stateDir, "tenants"))}
}

// HomedInfo implements tenant.UserInspector: the uid the template's config/user-record.json sets.
func (r userResolver) HomedInfo(_ context.Context, name, commit string) (tenant.UserInfo, error) {
	data, err := r.reg.ReadFile(name, commit, "config/user-record.json", machines.MaxUserRecordSize)
	if err != nil {
		return tenant.UserInfo{}, err
	}
	var rec struct {
		UID *int `json:"uid"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return tenant.UserInfo{}, fmt.Errorf("config/user-record.json: %w", err)
	}
	if rec.UID == nil {
		return tenant.UserInfo{}, nil
	}
	return tenant.UserInfo{UID: *rec.UID}, nil
}

// BaseUsers implements tenant.UserInspector: the users of the base's etc/passwd, read from the checked-out
// tree with treefile when it is there, else from the commit in the registry (bounded either way).
func (r userResolver) BaseUsers(_ context.Context, name, commit, role string) ([]tenant.BaseUser, error) {
	base := "rootfs"
	if role == "machine" {
		base = "disk-image/rootfs"
	}
	dir := filepath.Join(r.trees, name, commit)
	var entries []machines.PasswdEntry
	if _, err := os.Lstat(dir + ".commit"); err == nil {
		if entries, err = machines.ReadPasswd(filepath.Join(dir, base)); err != nil {
			return nil, err
		}
	} else {
		data, err := r.reg.ReadFile(name, commit, base+"/etc/passwd", machines.MaxPasswdSize)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		entries = machines.ParsePasswd(data)
	}
	var out []tenant.BaseUser
	for _, p := range entries {
		out = append(out, tenant.BaseUser{Name: p.Name, UID: p.UID})
	}
	return out, nil
}
