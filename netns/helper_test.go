package netns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

// With a NamespaceHelper, named namespaces are made and deleted by `ip netns` run through the helper (here a
// shell that records its command and runs it), never mounted by this process: a stale file is deleted first, a
// namespace the helper made is adopted, and a failing helper's output is in the error.
func TestNamespaceHelper(t *testing.T) {
	requireRoot(t)
	ip := testpolicy.RequireTool(t, "ip")
	log := filepath.Join(t.TempDir(), "helper.log")
	helper := []string{"sh", "-c", `echo "$*" >>"$0"; exec "$@"`, log}
	e := newTestEnv(t, nil)
	k := NewKernel(KernelConfig{HostNetns: e.cfg.HostNetns, Helper: helper, IP: ip})
	name := e.prefix + "helped"
	path := filepath.Join("/run/netns", name)
	// A file left by an `ip netns add` that died half-way.
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if errs := k.Apply(t.Context(), []Op{{Kind: OpAddNamespace, Name: name}}); errs[0] != nil {
		t.Fatalf("add through the helper: %v", errs[0])
	}
	if !isNsfs(path) {
		t.Fatalf("%s is no namespace after the add", path)
	}
	obs, err := k.Observe(t.Context(), Query{Namespace: name})
	if err != nil || !obs.NamespaceExists {
		t.Errorf("observed %+v, %v; want the namespace", obs, err)
	}
	if errs := k.Apply(t.Context(), []Op{{Kind: OpDelNamespace, Name: name}}); errs[0] != nil {
		t.Fatalf("delete through the helper: %v", errs[0])
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s after the delete: %v", path, err)
	}
	got, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{ip + " netns delete " + name, ip + " netns add " + name, ip + " netns delete " + name}, "\n") + "\n"
	if string(got) != want {
		t.Errorf("the helper ran:\n%s\nwant:\n%s", got, want)
	}

	// A helper that fails: its output is in the error, and no namespace is left.
	bad := NewKernel(KernelConfig{HostNetns: e.cfg.HostNetns, Helper: []string{"sh", "-c", `echo "no manager here" >&2; exit 3`}, IP: ip})
	errs := bad.Apply(t.Context(), []Op{{Kind: OpAddNamespace, Name: name}})
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "no manager here") || !strings.Contains(errs[0].Error(), name) {
		t.Errorf("failing helper: %v, want its output and the namespace's name", errs[0])
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s after the failed add: %v", path, err)
	}
}
