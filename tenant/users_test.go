package tenant

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// userTemplates is fakeTemplates that also reads users: the homed template "homed-uid" sets uid 4000, the
// container template's base has the users of base.
type userTemplates struct {
	fakeTemplates
	base []BaseUser
}

func (f userTemplates) HomedInfo(_ context.Context, template, _ string) (UserInfo, error) {
	if template == "homed-uid" {
		return UserInfo{UID: 4000}, nil
	}
	return UserInfo{}, nil
}

func (f userTemplates) BaseUsers(_ context.Context, _, _, _ string) ([]BaseUser, error) {
	return f.base, nil
}

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2Cua5ndLqyXlHVC4v6fC6zQASYOpS+X/2mEsH9KaZ2 tenant@test"

func userService(t *testing.T) *Service {
	s := newService(t, func(c *Config) {
		c.Templates = userTemplates{
			fakeTemplates: fakeTemplates{info: map[string]MachineInfo{"container-deb": {}}},
			base:          []BaseUser{{"root", 0}, {"daemon", 1}, {"messagebus", 100}, {"debian", 1000}},
		}
	})
	_, err := s.Create(t.Context(), Spec{
		Name: "u",
		Templates: []TemplateUse{
			{Role: "container", Name: "deb", Template: "container-deb"},
			{Role: "homed", Name: "dev", Template: "homed-dev"},
			{Role: "homed", Name: "fixed", Template: "homed-uid"},
		},
		Machines: []Machine{{Name: "web", Kind: Container, Template: "deb"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUserBadInput: each bad user is a FieldError naming the field and the rule, and nothing is stored.
func TestUserBadInput(t *testing.T) {
	ctx := t.Context()
	s := userService(t)
	before, _ := s.Get(ctx, "u")
	for _, tc := range []struct {
		name   string
		user   User
		field  string
		reason string
	}{
		{"empty", User{Template: "dev"}, "user.name", "1 to 31"},
		{"digit first", User{Name: "1abc", Template: "dev"}, "user.name", "must start with a letter"},
		{"dot", User{Name: "a.b", Template: "dev"}, "user.name", "position 1"},
		{"too long", User{Name: strings.Repeat("a", 32), Template: "dev"}, "user.name", "1 to 31"},
		{"reserved", User{Name: "nobody", Template: "dev"}, "user.name", "reserved"},
		{"system user of the base", User{Name: "messagebus", Template: "dev"}, "users[0].name", `system user (uid 100) of the base of machine "web"`},
		{"no homed use", User{Name: "ann", Template: "deb"}, "users[0].template", "no homed template use"},
		{"key not a key", User{Name: "ann", Template: "dev", SSHAuthorizedKeys: []string{"hello"}}, "users[0].sshAuthorizedKeys[0]", "no key type"},
		{"key two lines", User{Name: "ann", Template: "dev", SSHAuthorizedKeys: []string{testKey + "\n" + testKey}}, "users[0].sshAuthorizedKeys[0]", "control character"},
		{"key bad blob", User{Name: "ann", Template: "dev", SSHAuthorizedKeys: []string{"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIF2C"}}, "users[0].sshAuthorizedKeys[0]", "not base64 of a ssh-rsa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.PutUser(ctx, "u", tc.user)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("PutUser(%+v) = %v, want a FieldError on %s saying %q", tc.user, err, tc.field, tc.reason)
			}
			after, _ := s.Get(ctx, "u")
			if after.Revision != before.Revision || len(after.Users) != 0 {
				t.Fatalf("a refused user changed the record: revision %d -> %d, users %+v", before.Revision, after.Revision, after.Users)
			}
		})
	}
	if _, err := s.RemoveUser(ctx, "u", "ghost"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("RemoveUser of a user the tenant does not have: %v", err)
	}
}

// TestUserPutRemove: users are added with a uid (the template's, else the lowest free one past the base's), replaced
// keeping it, and removed; a template change that drops their homed use is refused.
func TestUserPutRemove(t *testing.T) {
	ctx := t.Context()
	s := userService(t)
	tn, err := s.PutUser(ctx, "u", User{Name: "ann", Template: "dev", SSHAuthorizedKeys: []string{testKey}})
	if err != nil {
		t.Fatal(err)
	}
	if u := tn.UserOf("ann"); u == nil || u.UID != 1001 || len(u.SSHAuthorizedKeys) != 1 {
		t.Fatalf("ann: %+v (the base has uid 1000: want 1001)", u)
	}
	if tn, err = s.PutUser(ctx, "u", User{Name: "bob", Template: "fixed"}); err != nil || tn.UserOf("bob").UID != 4000 {
		t.Fatalf("bob from the template with uid 4000: %+v %v", tn.Users, err)
	}
	if tn, err = s.PutUser(ctx, "u", User{Name: "ann", Template: "dev"}); err != nil || tn.UserOf("ann").UID != 1001 || len(tn.UserOf("ann").SSHAuthorizedKeys) != 0 {
		t.Fatalf("ann replaced: %+v %v", tn.Users, err)
	}
	if len(tn.Users) != 2 || tn.Users[0].Name != "ann" || tn.Users[1].Name != "bob" {
		t.Fatalf("users: %+v", tn.Users)
	}
	keep := []TemplateUse{{Role: "container", Name: "deb", Template: "container-deb"}, {Role: "homed", Name: "dev", Template: "homed-dev"}}
	var fe *FieldError
	if _, err := s.Update(ctx, "u", 0, Changes{Templates: &keep}); !errors.As(err, &fe) || fe.Field != "users[1].template" {
		t.Fatalf("dropping bob's homed use: %v", err)
	}
	if tn, err = s.RemoveUser(ctx, "u", "bob"); err != nil || len(tn.Users) != 1 {
		t.Fatalf("RemoveUser: %+v %v", tn, err)
	}
	if _, err := s.Update(ctx, "u", 0, Changes{Templates: &keep}); err != nil {
		t.Fatalf("dropping the unused homed use: %v", err)
	}
}
