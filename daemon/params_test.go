package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/template"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// templateRepoWith makes a real git repository of the example template dir with extra files
// written over it.
func templateRepoWith(t *testing.T, dir string, extra map[string]string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.CopyFS(src, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return gitRepoFrom(t, src)
}

// addTemplate adds repo to the daemon's registry as name and returns the template.
func addTemplate(t *testing.T, c *client, name, repo string) map[string]any {
	t.Helper()
	r := c.call("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":%q,"url":%q,"ref":"main"}`, name, repo))
	if r.Error != "" {
		t.Fatalf("Add %s: %s %v", name, r.Error, r.Parameters)
	}
	return r.Parameters["template"].(map[string]any)
}

// TestTemplateParameters checks, through the daemon's socket with real git template
// repositories, that the Template API shows the parameters a template declares and that a
// tenant's parameters are checked against its templates' on Create and Update: an unknown name,
// a value of the wrong type and a missing required value are each refused with InvalidField
// naming parameters.NAME, and change nothing.
func TestTemplateParameters(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	addTemplate(t, c, "net", gitRepoFrom(t, "../examples/templates/network"))
	addTemplate(t, c, "tools", templateRepoWith(t, "../examples/templates/sysext", map[string]string{
		"parameters.json": `{"GREETING":{"description":"what the tool says"},"COUNT":{"type":"integer","default":"3"}}`,
	}))

	// The declared parameters, in name order, with type, default, required and feature.
	tmpl := c.call("io.bitbuilder.Template.Get", `{"name":"net"}`).Parameters["template"].(map[string]any)
	params := map[string]map[string]any{}
	var order []string
	for _, p := range tmpl["parameters"].([]any) {
		p := p.(map[string]any)
		params[p["name"].(string)] = p
		order = append(order, p["name"].(string))
	}
	if fmt.Sprint(order) != "[BRIDGE_STP PEER_ENDPOINT PEER_KEEPALIVE PEER_PUBLIC_KEY VXLAN_GROUP VXLAN_PORT WIREGUARD_PORT]" {
		t.Errorf("parameters of net = %v", order)
	}
	if p := params["PEER_PUBLIC_KEY"]; p["type"] != "wireguard-key" || p["required"] != true || p["feature"] != "wireguard" || p["default"] != nil || p["description"] == "" {
		t.Errorf("PEER_PUBLIC_KEY = %v", p)
	}
	if p := params["BRIDGE_STP"]; p["type"] != "boolean" || p["required"] != false || p["default"] != "no" || p["feature"] != nil {
		t.Errorf("BRIDGE_STP = %v", p)
	}
	if p := params["VXLAN_PORT"]; p["type"] != "port" || p["default"] != "4789" || p["feature"] != "vxlan" {
		t.Errorf("VXLAN_PORT = %v", p)
	}
	list := c.callMore("io.bitbuilder.Template.List", `{}`)
	for _, r := range list {
		if tp := r.Parameters["template"].(map[string]any); tp["name"] == "tools" && len(tp["parameters"].([]any)) != 2 {
			t.Errorf("List: tools has parameters %v", tp["parameters"])
		}
	}

	refused := func(call, params, field string) {
		t.Helper()
		r := c.call("io.bitbuilder.Tenant."+call, params)
		wantError(t, r, "io.bitbuilder.Tenant.InvalidField", map[string]any{"field": field})
		t.Logf("%s %s: %v", call, params, r.Parameters["reason"])
	}
	withNet := `"templates":[{"role":"network","name":"net","template":"net"}]`
	refused("Create", `{"name":"a",`+withNet+`,"parameters":{"NOPE":"x"}}`, "parameters.NOPE")
	refused("Create", `{"name":"a",`+withNet+`,"parameters":{"VXLAN_PORT":"99999"}}`, "parameters.VXLAN_PORT")
	refused("Create", `{"name":"a",`+withNet+`,"networkFeatures":["wireguard"]}`, "parameters.PEER_ENDPOINT")
	refused("Create", `{"name":"a",`+withNet+`,"networkFeatures":["wireguard"],"parameters":{"PEER_ENDPOINT":"192.0.2.1:51820"}}`, "parameters.PEER_PUBLIC_KEY")
	// Without a network template of its own, a tenant gets the built-in one's parameters.
	refused("Create", `{"name":"a","parameters":{"K":"v"}}`, "parameters.K")
	// A sysext's own parameters: GREETING has no default.
	refused("Create", `{"name":"a","templates":[{"role":"sysext","name":"tools","template":"tools"}]}`, "parameters.GREETING")
	refused("Create", `{"name":"a","templates":[{"role":"sysext","name":"tools","template":"tools"}],"parameters":{"GREETING":"hi","COUNT":"many"}}`, "parameters.COUNT")
	// A commit the registry does not have cannot say what it declares.
	refused("Create", `{"name":"a","templates":[{"role":"sysext","name":"t","template":"tools","commit":"0123456789012345678901234567890123456789"}]}`, "templates[0].commit")
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"a"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)

	// Accepted: declared, well-typed, required ones given (a wireguard-only one only with wireguard).
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"a",`+withNet+`,"parameters":{"BRIDGE_STP":"yes","WIREGUARD_PORT":"51821"}}`))
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"b","parameters":{"VXLAN_PORT":"4790"}}`))
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"c","templates":[{"role":"sysext","name":"tools","template":"tools"}],"parameters":{"GREETING":"hi","VXLAN_PORT":"4790"}}`))

	// Update: refused, and the tenant is as it was (same revision, same parameters).
	before := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"a"}`))
	refused("Update", `{"name":"a","parameters":{"BRIDGE_STP":"maybe"}}`, "parameters.BRIDGE_STP")
	refused("Update", `{"name":"a","networkFeatures":["wireguard"]}`, "parameters.PEER_ENDPOINT")
	refused("Update", `{"name":"b","templates":[{"role":"sysext","name":"tools","template":"tools"}]}`, "parameters.GREETING")
	after := tenantOf(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"a"}`))
	if after["revision"] != before["revision"] || fmt.Sprint(after["parameters"]) != fmt.Sprint(before["parameters"]) || fmt.Sprint(after["networkFeatures"]) != fmt.Sprint(before["networkFeatures"]) {
		t.Errorf("a refused Update changed the tenant: %v -> %v", before, after)
	}
	up := tenantOf(t, c.call("io.bitbuilder.Tenant.Update", `{"name":"a","networkFeatures":["wireguard"],"parameters":{"PEER_ENDPOINT":"192.0.2.1:51820","PEER_PUBLIC_KEY":"`+testWGKey+`"}}`))
	if up["parameters"].(map[string]any)["PEER_ENDPOINT"] != "192.0.2.1:51820" {
		t.Errorf("Update = %v", up)
	}
}

// testWGKey is a well-formed WireGuard public key (base64 of 32 bytes).
const testWGKey = "q2LBd3a1k5cHFSR6xaV5fL1G8nP3Qh6n1pYcRm1Zr0E="

// TestTemplateRules checks Template.Rules through the daemon's socket: the whole catalogue in
// rule order, one rule by its id in any case, and NoSuchRule for an unknown id.
func TestTemplateRules(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	r := c.call("io.bitbuilder.Template.Rules", `{}`)
	all, _ := r.Parameters["rules"].([]any)
	if r.Error != "" || len(all) < 50 || all[0].(map[string]any)["id"] != "A1" {
		t.Fatalf("Rules = %v %d rules", r.Error, len(all))
	}
	r = c.call("io.bitbuilder.Template.Rules", `{"rule":"c18"}`)
	one, _ := r.Parameters["rules"].([]any)
	if len(one) != 1 {
		t.Fatalf("Rules(c18) = %v", r)
	}
	if rule := one[0].(map[string]any); rule["id"] != "C18" || rule["title"] == "" || rule["explanation"] == "" || fmt.Sprint(rule["severities"]) != "[error warning]" {
		t.Errorf("C18 = %v", rule)
	}
	wantError(t, c.call("io.bitbuilder.Template.Rules", `{"rule":"Z9"}`), "io.bitbuilder.Template.NoSuchRule", map[string]any{"rule": "Z9"})
}

// TestBadParameterDeclarations checks that a template whose parameters.json tenants could not
// use is refused when it is added (ValidationFailed with an X2 finding naming parameters.json)
// and reported by Validate of a directory.
func TestBadParameterDeclarations(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	bad := map[string]string{"parameters.json": `{"PORT":{"type":"port","default":"0"}}`}
	r := c.call("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"bad","url":%q,"ref":"main"}`, templateRepoWith(t, "../examples/templates/sysext", bad)))
	wantError(t, r, "io.bitbuilder.Template.ValidationFailed", nil)
	if f := fmt.Sprint(r.Parameters["findings"]); !strings.Contains(f, "parameters.json") || !strings.Contains(f, "X2") {
		t.Errorf("findings %s, want X2 on parameters.json", f)
	}
	dir := filepath.Join(t.TempDir(), "tools")
	if err := os.CopyFS(dir, os.DirFS("../examples/templates/sysext")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "parameters.json"), []byte(`{"X":{"type":"colour"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	v := c.call("io.bitbuilder.Template.Validate", fmt.Sprintf(`{"path":%q}`, dir))
	if v.Error != "" || v.Parameters["errors"] != 1.0 || !strings.Contains(fmt.Sprint(v.Parameters["findings"]), "colour") {
		t.Errorf("Validate: %v %v", v.Error, v.Parameters)
	}
}

// BenchmarkParameterCheck measures what checking parameters against the declared ones costs an
// Update of a tenant's parameters on a real bbolt store (fsync off, so that the check is not lost
// in disk time): the same updates with a checker (the daemon's, a registered network template with real git, its
// declarations read once per commit) and without one (the baseline, measured in the same run).
func BenchmarkParameterCheck(b *testing.B) {
	testpolicy.RequireTool(b, "git")
	dir := b.TempDir()
	reg, err := template.New(template.Config{Dir: filepath.Join(dir, "templates")})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	repo := filepath.Join(dir, "net")
	if err := os.CopyFS(repo, os.DirFS("../examples/templates/network")); err != nil {
		b.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "t"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	if _, err := reg.Add(b.Context(), "net", repo, "main", nil); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name     string
		resolver tenant.TemplateResolver
	}{
		{"unchecked", nil},
		{"checked", templateResolver{reg: reg, params: newParamCache(reg)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st, err := store.Open(filepath.Join(b.TempDir(), "db"), store.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			svc, err := tenant.New(tenant.Config{Store: st, Templates: bc.resolver})
			if err != nil {
				b.Fatal(err)
			}
			tmpl, _ := reg.Get("net")
			if _, err := svc.Create(b.Context(), tenant.Spec{Name: "t",
				Templates: []tenant.TemplateUse{{Role: "network", Name: "net", Template: "net", Commit: tmpl.Commit}}}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				p := map[string]string{"BRIDGE_STP": []string{"yes", "no"}[i%2], "VXLAN_PORT": "4790"}
				if _, err := svc.Update(b.Context(), "t", 0, tenant.Changes{Parameters: &p}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
