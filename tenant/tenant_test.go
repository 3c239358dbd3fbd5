package tenant

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/store"
)

func newService(t *testing.T, mutate ...func(*Config)) *Service {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{Store: st}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string // substring of the reason; "" = valid
	}{
		{"a", ""},
		{"tenant-1", ""},
		{strings.Repeat("a", 63), ""},
		{"", "empty"},
		{strings.Repeat("a", 64), "longer than 63"},
		{"Alpha", "upper-case"},
		{"-a", "start and end"},
		{"a-", "start and end"},
		{"a_b", "only a-z"},
		{"../x", "only a-z"},
		{"a.b", "only a-z"},
		{"tënant", "only a-z"},
		{"a b", "only a-z"},
		{"localhost", "reserved"},
		{"root", "reserved"},
		{"\xff", "UTF-8"},
	} {
		err := ValidateName(tc.name)
		if tc.reason == "" {
			if err != nil {
				t.Errorf("ValidateName(%q) = %v, want ok", tc.name, err)
			}
			continue
		}
		var ne *NameError
		if !errors.As(err, &ne) || !strings.Contains(ne.Reason, tc.reason) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want a NameError about %q", tc.name, err, tc.reason)
		}
	}
}

var labelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "tenant-1", "../x", "", "A", "a--b", "é", strings.Repeat("z", 64), "host"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err == nil && !labelRe.MatchString(name) {
			t.Fatalf("accepted %q, which is not a hostname label", name)
		}
		if err == nil && strings.ContainsAny(name, "/.\x00") {
			t.Fatalf("accepted %q, which could escape a path", name)
		}
		if err != nil && labelRe.MatchString(name) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error for %q is not ErrInvalid: %v", name, err)
		}
	})
}

func TestCreateDefaultsAndValidation(t *testing.T) {
	s := newService(t)
	ctx := t.Context()
	tn, err := s.Create(ctx, Spec{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if tn.NetworkIndex != 1 || tn.DesiredState != Running || tn.Phase != PhasePending || tn.Resources.CPUs != 1 {
		t.Errorf("defaults: %+v", tn)
	}
	bad := []struct {
		spec  Spec
		field string
	}{
		{Spec{Name: "b", Resources: &Resources{CPUs: -1, MemoryBytes: 1 << 30, StorageBytes: 1 << 30}}, "resources.cpus"},
		{Spec{Name: "b", Resources: &Resources{CPUs: 0.333, MemoryBytes: 1 << 30, StorageBytes: 1 << 30}}, "resources.cpus"},
		{Spec{Name: "b", Resources: &Resources{CPUs: 1, MemoryBytes: 1, StorageBytes: 1 << 30}}, "resources.memoryBytes"},
		{Spec{Name: "b", Resources: &Resources{CPUs: 1, MemoryBytes: 1 << 30, StorageBytes: 0}}, "resources.storageBytes"},
		{Spec{Name: "b", Templates: []TemplateUse{{Role: "vm", Name: "x", Template: "t"}}}, "templates[0].role"},
		{Spec{Name: "b", Templates: []TemplateUse{{Role: "machine", Name: "X", Template: "t"}}}, "templates[0].name"},
		{Spec{Name: "b", Templates: []TemplateUse{{Role: "machine", Name: "x", Template: "t", Commit: "abc"}}}, "templates[0].commit"},
		{Spec{Name: "b", Templates: []TemplateUse{{Role: "network", Name: "x", Template: "t"}, {Role: "network", Name: "y", Template: "t"}}}, "templates[1].role"},
		{Spec{Name: "b", Templates: []TemplateUse{{Role: "machine", Name: "x", Template: "t"}, {Role: "machine", Name: "x", Template: "u"}}}, "templates[1].name"},
		{Spec{Name: "b", Parameters: map[string]string{"lower": "x"}}, "parameters.lower"},
		{Spec{Name: "b", Parameters: map[string]string{"KEY": "a\nb"}}, "parameters.KEY"},
		{Spec{Name: "b", DesiredState: "paused"}, "desiredState"},
		{Spec{Name: "b", NetworkIndex: 255}, "networkIndex"},
	}
	for _, tc := range bad {
		_, err := s.Create(ctx, tc.spec)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Create(%+v) = %v, want a FieldError on %s", tc.spec, err, tc.field)
		}
	}
	if ts, _, _ := s.List(ctx); len(ts) != 1 {
		t.Errorf("refused creates left %d tenants", len(ts))
	}
}

func TestIndexAllocationAndRelease(t *testing.T) {
	s := newService(t, func(c *Config) { c.IndexMin, c.IndexMax = 10, 12 })
	ctx := t.Context()
	for i, name := range []string{"a", "b", "c"} {
		tn, err := s.Create(ctx, Spec{Name: name})
		if err != nil || tn.NetworkIndex != 10+i {
			t.Fatalf("create %s: %v %+v", name, err, tn)
		}
	}
	_, err := s.Create(ctx, Spec{Name: "d"})
	var nf *NoFreeIndexError
	if !errors.As(err, &nf) || nf.Min != 10 || nf.Max != 12 {
		t.Fatalf("full range: %v", err)
	}
	if _, err := s.Delete(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	// Still claimed until finalized.
	if _, err := s.Create(ctx, Spec{Name: "d"}); !errors.As(err, &nf) {
		t.Fatalf("index freed before finalize: %v", err)
	}
	b, _ := s.Get(ctx, "b")
	if err := s.Finalize(ctx, b); err != nil {
		t.Fatal(err)
	}
	d, err := s.Create(ctx, Spec{Name: "d"})
	if err != nil || d.NetworkIndex != 11 {
		t.Fatalf("after finalize: %v %+v", err, d)
	}
	if _, err := s.Create(ctx, Spec{Name: "b", NetworkIndex: 11}); !errors.Is(err, ErrIndexInUse) {
		t.Fatalf("explicit index in use: %v", err)
	}
}

func TestUpdateDeleteAndRevisions(t *testing.T) {
	s := newService(t)
	ctx := t.Context()
	a, _ := s.Create(ctx, Spec{Name: "a"})
	res := Resources{CPUs: 2, MemoryBytes: 2 << 30, StorageBytes: 20 << 30}
	u, err := s.Update(ctx, "a", a.Revision, Changes{Resources: &res})
	if err != nil || u.Resources != res || u.Revision <= a.Revision {
		t.Fatalf("update: %v %+v", err, u)
	}
	if _, err := s.Update(ctx, "a", a.Revision, Changes{}); !errors.Is(err, ErrRevisionMismatch) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.Update(ctx, "zz", 0, Changes{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if _, err := s.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "a", 0, Changes{}); err == nil {
		t.Fatal("update of a deleting tenant accepted")
	}
	if _, err := s.SetDesiredState(ctx, "a", Stopped); err == nil {
		t.Fatal("stop of a deleting tenant accepted")
	}
	if _, err := s.Create(ctx, Spec{Name: "a"}); !errors.Is(err, ErrExists) {
		t.Fatalf("create while deleting: %v", err)
	}
}

func TestSetStatusOnlyWritesChanges(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newService(t, func(c *Config) { c.Now = func() time.Time { return now } })
	ctx := t.Context()
	a, _ := s.Create(ctx, Spec{Name: "a"})
	conds := []Condition{{Type: "NetworkReady", Status: "true", Reason: "Configured"}}
	b, err := s.SetStatus(ctx, "a", PhaseReady, conds)
	if err != nil || b.Revision == a.Revision || b.Phase != PhaseReady {
		t.Fatalf("first status: %v %+v", err, b)
	}
	now = now.Add(time.Hour)
	c, err := s.SetStatus(ctx, "a", PhaseReady, conds)
	if err != nil || c.Revision != b.Revision {
		t.Fatalf("unchanged status was written again: %v rev %d -> %d", err, b.Revision, c.Revision)
	}
	d, _ := s.SetStatus(ctx, "a", PhaseDegraded, []Condition{{Type: "NetworkReady", Status: "false", Reason: "LinkFailed"}})
	if !d.Conditions[0].LastTransitionTime.Equal(now) {
		t.Errorf("transition time %v, want %v", d.Conditions[0].LastTransitionTime, now)
	}
}

type resolver map[string]string

func (r resolver) Resolve(_ context.Context, name, _ string) (string, error) {
	c, ok := r[name]
	if !ok {
		return "", errors.New("not in the registry")
	}
	return c, nil
}

func TestTemplatesArePinned(t *testing.T) {
	commit := strings.Repeat("ab", 20)
	s := newService(t, func(c *Config) { c.Templates = resolver{"base": commit} })
	ctx := t.Context()
	tn, err := s.Create(ctx, Spec{Name: "a", Templates: []TemplateUse{{Role: "container", Name: "web", Template: "base"}}})
	if err != nil || tn.Templates[0].Commit != commit {
		t.Fatalf("create: %v %+v", err, tn)
	}
	_, err = s.Create(ctx, Spec{Name: "b", Templates: []TemplateUse{{Role: "container", Name: "web", Template: "missing"}}})
	var te *TemplateError
	if !errors.As(err, &te) || te.Template != "missing" {
		t.Fatalf("unknown template: %v", err)
	}
}
