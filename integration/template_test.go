package integration

import (
	"path/filepath"
	"testing"
)

// validation is io.bitbuilder.Template.Validate's reply.
type validation struct {
	Findings []struct {
		Rule, Severity, Path, Message string
	} `json:"findings"`
	Errors   int `json:"errors"`
	Warnings int `json:"warnings"`
}

// TestTemplateValidate validates the repository's example templates, bound into the test host,
// through the daemon with varlinkctl, and a broken one; validating a host path needs the admin
// group, validating a registered template does not.
func TestTemplateValidate(t *testing.T) {
	d := startDaemon(t, "template")
	dirs, _ := filepath.Glob("../examples/templates/*/metadata.json")
	if len(dirs) == 0 {
		t.Fatal("no examples/templates/*/metadata.json in the repository")
	}
	for _, meta := range dirs {
		name := filepath.Base(filepath.Dir(meta))
		t.Run(name, func(t *testing.T) {
			var v validation
			d.call(t, asRoot, "io.bitbuilder.Template.Validate", `{"path":"`+guestExamples+"/"+name+`"}`).decode(t, &v)
			if v.Errors != 0 {
				t.Errorf("examples/templates/%s: %d errors: %+v", name, v.Errors, v.Findings)
			}
			t.Logf("examples/templates/%s: %d warnings", name, v.Warnings)
		})
	}

	// A template whose metadata.json is not JSON.
	if err := d.h.WriteFile("/tmp/broken-template/metadata.json", []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	var v validation
	d.call(t, asRoot, "io.bitbuilder.Template.Validate", `{"path":"/tmp/broken-template"}`).decode(t, &v)
	if v.Errors == 0 || len(v.Findings) == 0 || v.Findings[0].Path != "metadata.json" || v.Findings[0].Severity != "error" {
		t.Errorf("a template with a broken metadata.json: %+v", v)
	}

	// Who may validate what, on a socket opened to everyone.
	mustRun(t, d.h, "chmod", "0666", d.socket)
	d.call(t, asNobody, "io.bitbuilder.Template.Validate", `{"path":"/tmp/broken-template"}`).
		wantError(t, "org.varlink.service.PermissionDenied")
	d.call(t, asNobody, "io.bitbuilder.Template.Validate", `{"name":"no-such-template"}`).
		wantError(t, "io.bitbuilder.Template.NoSuchTemplate")
	d.call(t, asRoot, "io.bitbuilder.Template.Get", `{"name":"no-such-template"}`).
		wantError(t, "io.bitbuilder.Template.NoSuchTemplate")
}
