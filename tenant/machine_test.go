package tenant

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/store"
)

// fakeTemplates pins every template to one commit and says what its machines need.
type fakeTemplates struct {
	info map[string]MachineInfo
}

const fakeCommit = "0123456789abcdef0123456789abcdef01234567"

func (f fakeTemplates) Resolve(_ context.Context, template, role string) (string, error) {
	if strings.HasPrefix(template, role) || role == "network" {
		return fakeCommit, nil
	}
	return "", ErrTemplateRole
}

func (f fakeTemplates) MachineInfo(_ context.Context, template, _ string) (MachineInfo, error) {
	return f.info[template], nil
}

func machineService(t *testing.T) *Service {
	return newService(t, func(c *Config) {
		c.Templates = fakeTemplates{info: map[string]MachineInfo{
			"container-deb": {MinMemoryBytes: 256 << 20},
			"machine-ok":    {MinMemoryBytes: 512 << 20, HasKernel: true},
			"machine-nokrn": {MinMemoryBytes: 512 << 20},
		}}
	})
}

var machineTemplates = []TemplateUse{
	{Role: "container", Name: "deb", Template: "container-deb"},
	{Role: "machine", Name: "vm", Template: "machine-ok"},
	{Role: "machine", Name: "nokernel", Template: "machine-nokrn"},
}

// TestMachineBadInput: each bad machine list is a FieldError naming the field, and nothing is stored.
func TestMachineBadInput(t *testing.T) {
	ctx := t.Context()
	s := machineService(t)
	long := strings.Repeat("m", 61) // "bad-" + 61 = 65 characters
	for _, tc := range []struct {
		name     string
		machines []Machine
		field    string
		reason   string
	}{
		{"bad name", []Machine{{Name: "Web_1", Kind: Container, Template: "deb"}}, "machines[0].name", "hostname label"},
		{"too long once prefixed", []Machine{{Name: long, Kind: Container, Template: "deb"}}, "machines[0].name", "systemd allows 64"},
		{"twice", []Machine{{Name: "web", Kind: Container, Template: "deb"}, {Name: "web", Kind: Container, Template: "deb"}}, "machines[1].name", "listed twice"},
		{"reserved", []Machine{{Name: "infra", Kind: Container, Template: "deb"}}, "machines[0].name", "reserved"},
		{"bad kind", []Machine{{Name: "web", Kind: "pod", Template: "deb"}}, "machines[0].kind", "container or vm"},
		{"wrong template type", []Machine{{Name: "web", Kind: VM, Template: "deb"}}, "machines[0].template", "needs a machine template"},
		{"no such use", []Machine{{Name: "web", Kind: Container, Template: "nope"}}, "machines[0].template", "no container template use"},
		{"vm without kernel", []Machine{{Name: "v", Kind: VM, Template: "nokernel"}}, "machines[0].template", "no kernel"},
		{"memory below template", []Machine{{Name: "v", Kind: VM, Template: "vm", MemoryBytes: 64 << 20}}, "machines[0].memoryBytes", "less than"},
		{"memory above tenant", []Machine{{Name: "v", Kind: VM, Template: "vm", MemoryBytes: 8 << 30}}, "machines[0].memoryBytes", "more than the tenant"},
		{"cpus above tenant", []Machine{{Name: "w", Kind: Container, Template: "deb", CPUs: 8}}, "machines[0].cpus", "more than the tenant"},
		{"bad desired state", []Machine{{Name: "w", Kind: Container, Template: "deb", DesiredState: "paused"}}, "machines[0].desiredState", "running or stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Create(ctx, Spec{Name: "bad", Templates: machineTemplates, Machines: tc.machines,
				Resources: &Resources{CPUs: 2, MemoryBytes: 1 << 30, StorageBytes: 10 << 30}})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("error %v, want field %s with %q", err, tc.field, tc.reason)
			}
			if _, err := s.Get(ctx, "bad"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a refused create left a record: %v", err)
			}
			if recs, _, _ := s.cfg.Store.List(ctx, KindMachineName); len(recs) != 0 {
				t.Fatalf("a refused create left machine-name claims: %v", recs)
			}
		})
	}
}

// TestMachineNamesClaimed: tenant "a" with machine "b-c" and tenant "a-b" with machine "c" would both be
// machine a-b-c; the second is refused, naming the field and the holder, and a finalized tenant frees its names.
func TestMachineNamesClaimed(t *testing.T) {
	ctx := t.Context()
	s := machineService(t)
	_, err := s.Create(ctx, Spec{Name: "a", Templates: machineTemplates, Machines: []Machine{{Name: "b-c", Kind: Container, Template: "deb"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(ctx, Spec{Name: "a-b", Templates: machineTemplates, Machines: []Machine{{Name: "x", Kind: Container, Template: "deb"}, {Name: "c", Kind: Container, Template: "deb"}}})
	var inUse *MachineNameInUseError
	if !errors.As(err, &inUse) || inUse.Field != "machines[1].name" || inUse.Machine != "a-b-c" || inUse.Tenant != "a" {
		t.Fatalf("error %v, want a-b-c in use by a at machines[1].name", err)
	}
	if _, err := s.Get(ctx, "a-b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused tenant stored: %v", err)
	}
	// An update that adds a clashing name is refused too and changes nothing.
	b, err := s.Create(ctx, Spec{Name: "a-b", Templates: machineTemplates})
	if err != nil {
		t.Fatal(err)
	}
	ms := []Machine{{Name: "c", Kind: Container, Template: "deb"}}
	if _, err := s.Update(ctx, "a-b", 0, Changes{Machines: &ms}); !errors.As(err, &inUse) {
		t.Fatalf("update: %v, want MachineNameInUseError", err)
	}
	if cur, _ := s.Get(ctx, "a-b"); len(cur.Machines) != 0 || cur.Revision != b.Revision {
		t.Fatalf("refused update changed the tenant: %+v", cur)
	}
	// Renaming a's machine frees a-b-c for a-b.
	ms = []Machine{{Name: "other", Kind: Container, Template: "deb"}}
	if _, err := s.Update(ctx, "a", 0, Changes{Machines: &ms}); err != nil {
		t.Fatal(err)
	}
	ms = []Machine{{Name: "c", Kind: Container, Template: "deb"}}
	if _, err := s.Update(ctx, "a-b", 0, Changes{Machines: &ms}); err != nil {
		t.Fatalf("a-b-c should be free now: %v", err)
	}
	// Finalizing a frees a-other.
	a, _ := s.Delete(ctx, "a", 0)
	if err := s.Finalize(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cfg.Store.Get(ctx, KindMachineName, "a-other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim of a finalized tenant left: %v", err)
	}
}

// TestMachineState: start, stop and restart of one machine; unknown machines and deleting tenants are refused.
func TestMachineState(t *testing.T) {
	ctx := t.Context()
	s := machineService(t)
	if _, err := s.Create(ctx, Spec{Name: "t", Templates: machineTemplates, Machines: []Machine{{Name: "web", Kind: Container, Template: "deb"}}}); err != nil {
		t.Fatal(err)
	}
	tn, err := s.SetMachineState(ctx, "t", "web", Stopped)
	if err != nil || tn.MachineOf("web").DesiredState != Stopped {
		t.Fatalf("stop: %v %+v", err, tn)
	}
	tn, err = s.RestartMachine(ctx, "t", "web")
	if err != nil || tn.MachineOf("web").DesiredState != Running || tn.MachineOf("web").RestartGeneration != 1 {
		t.Fatalf("restart: %v %+v", err, tn)
	}
	// An update that keeps the machine keeps its restart generation.
	ms := []Machine{{Name: "web", Kind: Container, Template: "deb"}}
	if tn, err = s.Update(ctx, "t", 0, Changes{Machines: &ms}); err != nil || tn.MachineOf("web").RestartGeneration != 1 {
		t.Fatalf("update: %v %+v", err, tn)
	}
	var me *MachineError
	if _, err := s.SetMachineState(ctx, "t", "nope", Running); !errors.As(err, &me) || me.Machine != "nope" {
		t.Fatalf("unknown machine: %v", err)
	}
	if _, err := s.Delete(ctx, "t", 0); err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if _, err := s.SetMachineState(ctx, "t", "web", Running); !errors.As(err, &fe) || !strings.Contains(fe.Reason, "being deleted") {
		t.Fatalf("start on a deleting tenant: %v", err)
	}
}
