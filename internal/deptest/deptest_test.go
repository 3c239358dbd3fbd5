package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/bitbuilder/bitbuilder"

// rule is what one package of the module may depend on. Patterns name packages relative to
// the module for project packages and by full path for others; "x/..." matches x and every
// package below it, "..." every project package.
type rule struct {
	// project lists the project packages the package may import directly. Because every
	// project package has a rule, what it reaches indirectly is allowed too.
	project []string
	// external, when not nil, lists the only packages outside the module and the standard
	// library that the package may import directly.
	external []string
	// never lists packages outside the module the package must not depend on, even
	// indirectly.
	never []string
}

// hostPackages are the leaves that change or describe the host; daemon and reconcile use them.
var hostPackages = []string{"template/...", "netns", "netconf", "units", "machines"}

// rules encodes ARCHITECTURE.md's "Who may import whom". Keep the two in step.
var rules = map[string]rule{
	// cmd/bitbuilderd -> daemon. cmd/bbctl -> cli -> api/... (client side only).
	"cmd/bitbuilderd": {project: []string{"daemon"}},
	"cmd/bbctl":       {project: []string{"cli"}},
	"cli":             {project: []string{"api/..."}},
	// cmd/bitbuilder-generator -> units only: never store, bbolt, D-Bus or netlink.
	"cmd/bitbuilder-generator": {
		project: []string{"units"},
		never: []string{"go.etcd.io/bbolt/...", "github.com/godbus/dbus/...", "github.com/coreos/go-systemd/v22/dbus",
			"github.com/vishvananda/netlink/...", "github.com/vishvananda/netns/..."},
	},
	// daemon -> api/..., rpc, store, tenant, reconcile, the host packages it hands to the
	// reconciler, and the embedded default network profile.
	"daemon": {project: append([]string{"api/...", "rpc", "store", "tenant", "reconcile", "examples/templates"}, hostPackages...)},
	// reconcile -> tenant, store, and the host packages.
	"reconcile": {project: append([]string{"tenant", "store", "internal/atomicfile"}, hostPackages...)},
	// tenant -> store.
	"tenant": {project: []string{"store", "internal/names"}},
	// rpc -> the varlink library (and go-systemd's socket activation) only.
	"rpc": {external: []string{"github.com/varlink/go/...", "github.com/coreos/go-systemd/v22/activation", "golang.org/x/sys/..."}},
	// store and the host packages are leaves; within template/..., the registry and the
	// validator read metadata.json through template/metadata; machines renders through units.
	"store":             {},
	"template":          {project: []string{"template/metadata", "internal/names", "internal/atomicfile"}},
	"template/metadata": {},
	"template/validate": {project: []string{"template/metadata", "internal/treefile"}},
	"netns":             {project: []string{"internal/names"}},
	"netconf":           {project: []string{"internal/treefile", "internal/atomicfile", "internal/names"}},
	"units":             {project: []string{"internal/atomicfile", "internal/names"}},
	"machines":          {project: []string{"units", "internal/treefile", "internal/atomicfile"}},
	// The one reader of a template tree's files, used by every host package that reads one.
	"internal/treefile": {},
	// The IDL and its generated bindings, and the example templates, are leaves too.
	"api/...":            {},
	"examples/templates": {},
	// Tests of the whole system may use any package; no package may import them.
	"integration/...":  {project: []string{"..."}},
	"internal/deptest": {},
	// internal/benchsummary (make bench's table) is a command on the standard library alone.
	"internal/benchsummary": {external: []string{}},
	// The one atomic, durable file write; any package may use it.
	"internal/atomicfile": {external: []string{}},
	// The one rule for tests that need root, the test host, a tool or a kernel feature; every
	// package's tests may import it (go list without -test does not see test imports), and
	// integration/testhost does.
	"internal/testpolicy": {external: []string{}},
	"internal/names":      {external: []string{}},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Standard   bool
	DepOnly    bool
	Error      *struct{ Err string }
}

// loadGraph returns every package that the module's packages depend on, the module's own
// included, by import path.
func loadGraph(t *testing.T) map[string]*pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Standard,DepOnly,Error", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	graph := map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: package %s: %s", p.ImportPath, p.Error.Err)
		}
		graph[p.ImportPath] = p
	}
	return graph
}

// rel returns path relative to the module, and whether it is in the module.
func rel(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func match(pattern, path string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return pattern == path
}

func matchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, path) })
}

// ruleFor returns the rule of a project package: its own, or else the one of the longest
// "x/..." pattern that matches it.
func ruleFor(path string) (rule, string, bool) {
	if r, ok := rules[path]; ok {
		return r, path, true
	}
	best := ""
	for k := range rules {
		if strings.HasSuffix(k, "/...") && match(k, path) && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return rule{}, "", false
	}
	return rules[best], best, true
}

// deps returns what path depends on, directly or not, sorted.
func deps(graph map[string]*pkg, path string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		if seen[p] || graph[p] == nil {
			return
		}
		seen[p] = true
		for _, i := range graph[p].Imports {
			walk(i)
		}
	}
	walk(path)
	delete(seen, path)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// check returns the arrows of the graph that the rules do not allow.
func check(graph map[string]*pkg) []string {
	var bad []string
	var paths []string
	for path, p := range graph {
		if _, ok := rel(path); ok && !p.DepOnly {
			paths = append(paths, path)
		}
	}
	sort.Strings(paths)
	for _, path := range paths {
		from, _ := rel(path)
		r, name, ok := ruleFor(from)
		if !ok {
			bad = append(bad, fmt.Sprintf("%s has no import rule: say in ARCHITECTURE.md (Who may import whom) what it may import, and add it to the rules in internal/deptest", from))
			continue
		}
		for _, imp := range graph[path].Imports {
			if to, ok := rel(imp); ok {
				if !matchAny(r.project, to) {
					bad = append(bad, fmt.Sprintf("%s imports %s: not allowed by ARCHITECTURE.md (%s may import %s)", from, to, name, allowedList(r.project)))
				}
				continue
			}
			if r.external != nil && !graph[imp].Standard && !matchAny(r.external, imp) {
				bad = append(bad, fmt.Sprintf("%s imports %s: not allowed by ARCHITECTURE.md (%s may import only %s outside the module)", from, imp, name, strings.Join(r.external, ", ")))
			}
		}
		if len(r.never) > 0 {
			all := deps(graph, path)
			for _, n := range r.never { // the first package of each forbidden pattern is enough
				if i := slices.IndexFunc(all, func(d string) bool { return match(n, d) }); i >= 0 {
					bad = append(bad, fmt.Sprintf("%s depends on %s: ARCHITECTURE.md forbids it for %s", from, all[i], name))
				}
			}
		}
	}
	return bad
}

func allowedList(ps []string) string {
	if len(ps) == 0 {
		return "no project package"
	}
	return "only " + strings.Join(ps, ", ")
}

func TestImportRules(t *testing.T) {
	graph := loadGraph(t)
	for _, b := range check(graph) {
		t.Error(b)
	}
	// Every rule is for a package that exists, so that a renamed package cannot leave its
	// rule behind and itself unchecked.
	for k := range rules {
		found := false
		for path, p := range graph {
			if r, ok := rel(path); ok && !p.DepOnly && match(k, r) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("the import rule for %s matches no package of the module", k)
		}
	}
}

// The checker itself catches upward arrows, unknown packages and forbidden dependencies.
func TestImportRulesCatchViolations(t *testing.T) {
	p := func(path string, imports ...string) *pkg {
		return &pkg{ImportPath: path, Imports: imports, Standard: !strings.Contains(strings.Split(path, "/")[0], ".")}
	}
	m := func(r string) string { return module + "/" + r }
	graph := map[string]*pkg{}
	for _, q := range []*pkg{
		p(m("store"), m("tenant")),               // upward: a leaf imports tenant
		p(m("tenant"), m("store")),               // allowed
		p(m("machines"), m("units"), m("netns")), // machines may import units only
		p(m("units")),                            //
		p(m("netns")),                            //
		p(m("cmd/bitbuilder-generator"), m("units"), "example.com/x"), //
		p("example.com/x", "go.etcd.io/bbolt"),                        // the generator reaches bbolt indirectly
		p("go.etcd.io/bbolt"),                                         //
		p(m("rpc"), "fmt", "github.com/godbus/dbus/v5"),               // rpc takes a library it may not
		p("fmt"),                       //
		p("github.com/godbus/dbus/v5"), //
		p(m("newthing")),               // no rule
	} {
		graph[q.ImportPath] = q
	}
	got := strings.Join(check(graph), "\n")
	for _, want := range []string{
		"store imports tenant: not allowed",
		"machines imports netns: not allowed",
		"cmd/bitbuilder-generator depends on go.etcd.io/bbolt",
		"rpc imports github.com/godbus/dbus/v5: not allowed",
		"newthing has no import rule",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("check did not report %q; it reported:\n%s", want, got)
		}
	}
	if strings.Contains(got, "tenant imports store") || strings.Contains(got, "machines imports units") || strings.Contains(got, "rpc imports fmt") {
		t.Errorf("check reported an allowed arrow:\n%s", got)
	}
}
