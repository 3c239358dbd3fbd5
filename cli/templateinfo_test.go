package cli

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// standIn is a stand-in for the daemon's io.bitbuilder.Template.Get (with template parameters)
// and io.bitbuilder.Template.Rules, which the daemon side adds beside this CLI: a real unix
// socket speaking Varlink's framing (NUL-terminated JSON), answering each method with a
// fixed reply. It tests what bbctl expects of those replies until the real daemon serves them.
func standIn(t *testing.T, replies map[string]string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "stand-in")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					msg, err := r.ReadBytes(0)
					if err != nil {
						return
					}
					var call struct {
						Method     string          `json:"method"`
						Parameters json.RawMessage `json:"parameters"`
					}
					if err := json.Unmarshal(msg[:len(msg)-1], &call); err != nil {
						return
					}
					reply, ok := replies[call.Method+" "+string(call.Parameters)]
					if !ok {
						reply, ok = replies[call.Method]
					}
					if !ok {
						reply = `{"error":"org.varlink.service.MethodNotFound","parameters":{"method":"` + call.Method + `"}}`
					}
					if _, err := c.Write(append([]byte(reply), 0)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "unix:" + sock
}

func TestTemplateParamsAndRules(t *testing.T) {
	addr := standIn(t, map[string]string{
		`io.bitbuilder.Template.Get {"name":"net"}`: `{"parameters":{"template":{"name":"net","parameters":[
			{"name":"MTU","type":"int","default":1500,"description":"the bridge's MTU"},
			{"name":"ZONE","type":"string","required":true,"description":"the DNS zone\nof the tenant"},
			{"name":"DOMAIN","type":"string","default":"example.org","description":"search domain"}]}}}`,
		`io.bitbuilder.Template.Get {"name":"bare"}`: `{"parameters":{"template":{"name":"bare","parameters":[]}}}`,
		`io.bitbuilder.Template.Get {"name":"old"}`:  `{"parameters":{"template":{"name":"old"}}}`,
		`io.bitbuilder.Template.Get {"name":"nope"}`: `{"error":"io.bitbuilder.Template.NoSuchTemplate","parameters":{"name":"nope"}}`,
		`io.bitbuilder.Template.Rules`: `{"parameters":{"rules":[
			{"id":"A1","severities":["error"],"summary":"an os-release exists"},
			{"id":"D27","severities":["error","warning"],"summary":"extension-release name","description":"The file is named after the image."},
			{"id":"X3","severities":["info"],"summary":"provided from the host"}]}}`,
	})
	r := bbctl(t, addr, "template", "params", "net")
	want := "NAME    TYPE    DEFAULT      DESCRIPTION\n" +
		"MTU     int     1500         the bridge's MTU\n" +
		"ZONE    string  (required)   the DNS zone\n" +
		"                             of the tenant\n" +
		"DOMAIN  string  example.org  search domain\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("template params net: exit %d, stderr %q, stdout\n%s\nwant\n%s", r.code, r.stderr, r.stdout, want)
	}
	var params []templateParam
	if err := json.Unmarshal([]byte(mustRun(t, addr, "template", "params", "net", "--json")), &params); err != nil ||
		len(params) != 3 || params[0].Name != "MTU" || string(params[0].Default) != "1500" || params[1].Required == nil {
		t.Errorf("params --json: %+v (%v)", params, err)
	}
	if out := mustRun(t, addr, "template", "params", "bare"); out != "The template takes no parameters.\n" {
		t.Errorf("no parameters: %q", out)
	}
	if r := bbctl(t, addr, "template", "params", "old"); r.code != ExitFailure || !strings.Contains(r.stderr, "does not report template parameters") {
		t.Errorf("a daemon without parameters: %+v", r)
	}
	if r := bbctl(t, addr, "template", "params", "nope"); r.code != ExitNotFound || !strings.Contains(r.stderr, `template "nope" not found`) {
		t.Errorf("unknown template: %+v", r)
	}

	out := mustRun(t, addr, "template", "rules")
	if want := "RULE  SEVERITY       SUMMARY\nA1    error          an os-release exists\n"; !strings.HasPrefix(out, want) || !strings.Contains(out, "D27   error,warning  extension-release name\n") {
		t.Errorf("rules:\n%s", out)
	}
	out = mustRun(t, addr, "template", "rules", "d27")
	if !strings.Contains(out, "Rule:           D27\n") || !strings.Contains(out, "The file is named after the image.") || !strings.Contains(out, "keeps the template from being pinned") {
		t.Errorf("rule d27:\n%s", out)
	}
	var one ruleInfo
	if err := json.Unmarshal([]byte(mustRun(t, addr, "template", "rules", "X3", "--json")), &one); err != nil || one.ID != "X3" || one.Severities[0] != "info" {
		t.Errorf("rule X3 --json: %+v %v", one, err)
	}
	r = bbctl(t, addr, "template", "rules", "D72", "--json")
	var jerr errorJSON
	if err := json.Unmarshal([]byte(r.stderr), &jerr); err != nil || r.code != ExitNotFound || jerr.Error != "bbctl.NoSuchRule" || !strings.Contains(jerr.Message, `did you mean D27?`) {
		t.Errorf("unknown rule: %+v (%v)", r, err)
	}
}

// TestTemplateRulesOnTodaysDaemon: a daemon that does not serve the catalogue gives a clear
// error, not a crash or a hang. When the daemon serves it, this test fails on purpose: test
// template rules and params against the real daemon instead, and drop the stand-in.
func TestTemplateRulesOnTodaysDaemon(t *testing.T) {
	d := startDaemon(t)
	r := bbctl(t, d.addr, "template", "rules")
	if r.code != ExitFailure || !strings.Contains(r.stderr, "the daemon has no method io.bitbuilder.Template.Rules") {
		t.Errorf("template rules on a daemon without the method: %+v", r)
	}
}
