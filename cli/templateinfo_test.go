package cli

import (
	"encoding/json"
	"strings"
	"testing"

	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
)

// TestTemplateParamsAndRules runs template params and template rules against the daemon: the parameters the
// example network template's parameters.json declares (defaults, required ones, those only a network feature
// needs), a template without parameters, an unknown template, and the validator's rule catalogue in full, one
// rule (case-insensitive) and an unknown rule with a suggestion, as tables and with --json.
func TestTemplateParamsAndRules(t *testing.T) {
	d := startDaemon(t)
	addTemplate(t, d.addr, "net", "network")
	addTemplate(t, d.addr, "tools", "sysext")

	out := mustRun(t, d.addr, "template", "params", "net")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "DEFAULT") {
		t.Fatalf("template params net:\n%s", out)
	}
	row := func(name string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, name+" ") {
				return l
			}
		}
		t.Errorf("template params net: no row %s:\n%s", name, out)
		return ""
	}
	if r := row("BRIDGE_STP"); !strings.Contains(r, "boolean") || !strings.Contains(r, " no ") || !strings.Contains(r, "spanning tree") {
		t.Errorf("BRIDGE_STP row: %q", r)
	}
	if r := row("PEER_ENDPOINT"); !strings.Contains(r, "endpoint") || !strings.Contains(r, "(required with wireguard)") {
		t.Errorf("PEER_ENDPOINT row: %q", r)
	}
	var params []vm.Parameter
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "params", "net", "--json")), &params); err != nil || len(params) != 7 {
		t.Fatalf("params --json: %+v (%v)", params, err)
	}
	for _, p := range params {
		if p.Name == "VXLAN_PORT" && (p.Type != "port" || p.Default == nil || *p.Default != "4789" || p.Required) {
			t.Errorf("VXLAN_PORT: %+v", p)
		}
	}
	if out := mustRun(t, d.addr, "template", "params", "tools"); out != "The template takes no parameters.\n" {
		t.Errorf("no parameters: %q", out)
	}
	if r := bbctl(t, d.addr, "template", "params", "nope"); r.code != ExitNotFound || !strings.Contains(r.stderr, `template "nope" not found`) {
		t.Errorf("unknown template: %+v", r)
	}

	out = mustRun(t, d.addr, "template", "rules")
	if !strings.HasPrefix(out, "RULE  SEVERITY") || !strings.Contains(out, "\nA1    error ") || !strings.Contains(out, "\nH3 ") || !strings.Contains(out, "\nX3    info ") {
		t.Errorf("rules:\n%s", out)
	}
	out = mustRun(t, d.addr, "template", "rules", "d27")
	if !strings.Contains(out, "D27\n") || !strings.Contains(out, "fallback") || !strings.Contains(out, "keeps the template from being pinned") {
		t.Errorf("rule d27:\n%s", out)
	}
	var one vm.Rule
	if err := json.Unmarshal([]byte(mustRun(t, d.addr, "template", "rules", "X3", "--json")), &one); err != nil || one.Id != "X3" || one.Severities[0] != "info" || one.Explanation == "" {
		t.Errorf("rule X3 --json: %+v %v", one, err)
	}
	r := bbctl(t, d.addr, "template", "rules", "D72", "--json")
	var jerr errorJSON
	if err := json.Unmarshal([]byte(r.stderr), &jerr); err != nil || r.code != ExitNotFound || jerr.Error != "bbctl.NoSuchRule" || !strings.Contains(jerr.Message, `did you mean D27`) {
		t.Errorf("unknown rule: %+v (%v)", r, err)
	}
}
