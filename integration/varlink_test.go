package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/api"
)

// servedInterfaces is every interface bitbuilderd must serve: the repository's api/ plus the
// Varlink service interface.
func servedInterfaces() []string {
	return append(api.Names(), "org.varlink.service")
}

// TestInfo checks `varlinkctl info`: all five GetInfo fields present (varlinkctl refuses a reply
// without them), the version the binary reports, and every interface.
func TestInfo(t *testing.T) {
	d := startDaemon(t, "info")
	var info struct {
		Vendor     string   `json:"vendor"`
		Product    string   `json:"product"`
		Version    string   `json:"version"`
		URL        string   `json:"url"`
		Interfaces []string `json:"interfaces"`
	}
	varlinkctl(t, d.h, asRoot, "info", "--json=short", d.socket).decode(t, &info)
	version := strings.TrimSpace(mustRun(t, d.h, bitbuilderd, "--version"))
	if info.Vendor != "BitBuilder" || info.Product != "bitbuilderd" || info.Version != version || !strings.HasPrefix(info.URL, "https://") {
		t.Errorf("info = %+v, want vendor BitBuilder, product bitbuilderd, version %q and an https URL", info, version)
	}
	want := servedInterfaces()
	slices.Sort(want)
	if got := slices.Sorted(slices.Values(info.Interfaces)); !slices.Equal(got, want) {
		t.Errorf("interfaces = %v, want %v", got, want)
	}

	// The human form, as people read it.
	text := varlinkctl(t, d.h, asRoot, "info", d.socket)
	if text.exit != 0 {
		t.Fatalf("%v", text)
	}
	for _, line := range []string{"Vendor: BitBuilder", "Product: bitbuilderd", "Version: " + version, "URL: " + info.URL} {
		if !strings.Contains(text.stdout, line) {
			t.Errorf("varlinkctl info lacks %q:\n%s", line, text.stdout)
		}
	}
}

func TestListInterfaces(t *testing.T) {
	d := startDaemon(t, "ifaces")
	r := varlinkctl(t, d.h, asRoot, "list-interfaces", d.socket)
	if r.exit != 0 {
		t.Fatalf("%v", r)
	}
	want := servedInterfaces()
	slices.Sort(want)
	if got := strings.Fields(r.stdout); !slices.Equal(got, want) {
		t.Errorf("list-interfaces = %v, want %v", got, want)
	}
}

// TestIntrospect checks that the daemon serves exactly the IDL files of api/: the raw
// description byte for byte, and `varlinkctl introspect` (systemd's parser and formatter) the
// same as `varlinkctl validate-idl` of the file.
func TestIntrospect(t *testing.T) {
	d := startDaemon(t, "introspect")
	for _, name := range api.Names() {
		t.Run(name, func(t *testing.T) {
			file, err := os.ReadFile(filepath.Join(apiDir, name+".varlink"))
			if err != nil {
				t.Fatal(err)
			}
			var desc struct {
				Description string `json:"description"`
			}
			d.call(t, asRoot, "org.varlink.service.GetInterfaceDescription", `{"interface":"`+name+`"}`).decode(t, &desc)
			if desc.Description != string(file) {
				t.Errorf("GetInterfaceDescription(%s) differs from api/%s.varlink (stale generated bindings?)\nserved:\n%s", name, name, desc.Description)
			}

			served := varlinkctl(t, d.h, asRoot, "introspect", d.socket, name)
			fromFile := varlinkctl(t, d.h, asRoot, "validate-idl", guestAPI+"/"+name+".varlink")
			if served.exit != 0 || fromFile.exit != 0 {
				t.Fatalf("introspect: %v\nvalidate-idl: %v", served, fromFile)
			}
			if served.stdout != fromFile.stdout {
				t.Errorf("varlinkctl introspect %s:\n%s\ndiffers from validate-idl of the file:\n%s", name, served.stdout, fromFile.stdout)
			}
			if !strings.Contains(served.stdout, "interface "+name+"\n") {
				t.Errorf("introspect output does not declare interface %s:\n%s", name, served.stdout)
			}
		})
	}

	// Without an interface, introspect shows them all.
	all := varlinkctl(t, d.h, asRoot, "introspect", d.socket)
	if all.exit != 0 {
		t.Fatalf("%v", all)
	}
	for _, name := range servedInterfaces() {
		if !strings.Contains(all.stdout, "interface "+name+"\n") {
			t.Errorf("varlinkctl introspect without an interface lacks %s", name)
		}
	}

	// An interface the daemon does not have: GetInterfaceDescription is refused. The Varlink
	// service IDL has InterfaceNotFound for this; github.com/varlink/go answers
	// InvalidParameter(interface), which varlinkctl reports as well. Either names the interface.
	r := d.call(t, asRoot, "org.varlink.service.GetInterfaceDescription", `{"interface":"io.bitbuilder.Nope"}`)
	if r.exit != exitCallFailed {
		t.Fatalf("GetInterfaceDescription of an unknown interface: %v", r)
	}
	switch {
	case strings.Contains(r.stderr, "failed: org.varlink.service.InterfaceNotFound\n"):
		if p := r.wantError(t, "org.varlink.service.InterfaceNotFound"); p["interface"] != "io.bitbuilder.Nope" {
			t.Errorf("InterfaceNotFound parameters = %v", p)
		}
	case strings.Contains(r.stderr, "failed: org.varlink.service.InvalidParameter\n"):
		if p := r.wantError(t, "org.varlink.service.InvalidParameter"); p["parameter"] != "interface" {
			t.Errorf("InvalidParameter parameters = %v", p)
		}
	default:
		t.Errorf("GetInterfaceDescription of an unknown interface: %v", r)
	}
	r = varlinkctl(t, d.h, asRoot, "introspect", d.socket, "io.bitbuilder.Nope")
	if r.exit != exitCallFailed || !strings.Contains(r.stderr, "GetInterfaceDescription") {
		t.Errorf("introspect of an unknown interface: %v", r)
	}
}

var methodDecl = regexp.MustCompile(`(?m)^method ([A-Za-z0-9]+)\(`)

func TestListMethods(t *testing.T) {
	d := startDaemon(t, "methods")
	want := []string{"org.varlink.service.GetInfo", "org.varlink.service.GetInterfaceDescription"}
	perIface := map[string][]string{}
	for _, name := range api.Names() {
		file, err := os.ReadFile(filepath.Join(apiDir, name+".varlink"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range methodDecl.FindAllStringSubmatch(string(file), -1) {
			perIface[name] = append(perIface[name], name+"."+m[1])
		}
		if len(perIface[name]) == 0 {
			t.Fatalf("api/%s.varlink declares no methods", name)
		}
		want = append(want, perIface[name]...)
	}
	slices.Sort(want)
	r := varlinkctl(t, d.h, asRoot, "list-methods", d.socket)
	if r.exit != 0 {
		t.Fatalf("%v", r)
	}
	if got := strings.Fields(r.stdout); !slices.Equal(got, want) {
		t.Errorf("list-methods = %v\nwant %v", got, want)
	}
	// Restricted to one interface.
	r = varlinkctl(t, d.h, asRoot, "list-methods", d.socket, api.Tenant)
	if r.exit != 0 {
		t.Fatalf("%v", r)
	}
	wantTenant := slices.Sorted(slices.Values(perIface[api.Tenant]))
	if got := strings.Fields(r.stdout); !slices.Equal(got, wantTenant) {
		t.Errorf("list-methods %s = %v, want %v", api.Tenant, got, wantTenant)
	}
}

// TestValidateIDL runs systemd's IDL parser on every api/*.varlink, and on a broken file to
// show the check can fail.
func TestValidateIDL(t *testing.T) {
	h := host(t)
	files, err := filepath.Glob(filepath.Join(apiDir, "*.varlink"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no api/*.varlink files (%v)", err)
	}
	for _, f := range files {
		r := varlinkctl(t, h, asRoot, "validate-idl", guestAPI+"/"+filepath.Base(f))
		if r.exit != 0 {
			t.Errorf("api/%s: %v", filepath.Base(f), r)
		}
	}

	// A comment after a field, which systemd's parser rejects (varlink-interop.md, item 13).
	bad := "interface io.bitbuilder.Bad\n\n# A method.\nmethod Get(name: string # the name\n) -> ()\n"
	if err := h.WriteFile("/tmp/io.bitbuilder.Bad.varlink", []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := varlinkctl(t, h, asRoot, "validate-idl", "/tmp/io.bitbuilder.Bad.varlink"); r.exit == 0 {
		t.Errorf("validate-idl accepted a comment inside a field list: %v", r)
	}
}

var (
	requiresMore = regexp.MustCompile(`(?m)^# \[Requires 'more' flag\]\n(?:#.*\n)*method ([A-Za-z0-9]+)\(`)
	errorDecl    = regexp.MustCompile(`(?m)^error ([A-Za-z0-9]+)`)
)

// TestEveryMethodAnswers calls every method of every served interface, as the IDL files
// declare them, and checks that each answers with a reply or with an error it may give: one
// declared in its interface or a standard org.varlink.service error, never a dropped
// connection. Unknown fields are refused by name everywhere.
func TestEveryMethodAnswers(t *testing.T) {
	d := startDaemon(t, "every")
	for _, iface := range api.Names() {
		file, err := os.ReadFile(filepath.Join(apiDir, iface+".varlink"))
		if err != nil {
			t.Fatal(err)
		}
		allowed := []string{
			"org.varlink.service.InvalidParameter",
			"org.varlink.service.MethodNotImplemented",
			"org.varlink.service.PermissionDenied",
		}
		for _, m := range errorDecl.FindAllStringSubmatch(string(file), -1) {
			allowed = append(allowed, iface+"."+m[1])
		}
		more := map[string]bool{}
		for _, m := range requiresMore.FindAllStringSubmatch(string(file), -1) {
			more[m[1]] = true
		}
		for _, m := range methodDecl.FindAllStringSubmatch(string(file), -1) {
			method := iface + "." + m[1]
			var flags []string
			if more[m[1]] {
				flags = []string{"--more", "--timeout=1"} // a stream may go on: stop waiting after 1 s
			}
			t.Run(method, func(t *testing.T) {
				r := d.call(t, asRoot, method, "{}", flags...)
				missing := "" // the required parameter {} lacks, if it was refused for one
				if r.exit != 0 && !(len(flags) > 0 && strings.Contains(r.stderr, "io.systemd.TimedOut")) {
					name := errorName(r.stderr)
					if !slices.Contains(allowed, name) {
						t.Errorf("%s({}) answered %q, which is neither declared in %s nor a standard error: %v", method, name, iface, r)
					}
					if name == "org.varlink.service.InvalidParameter" {
						missing, _ = r.wantError(t, name)["parameter"].(string)
					}
				}
				// An unknown field is refused by name (or the missing parameter is named first).
				r = d.call(t, asRoot, method, `{"noSuchField":1}`, flags...)
				if p := r.wantError(t, "org.varlink.service.InvalidParameter"); p["parameter"] != "noSuchField" && (missing == "" || p["parameter"] != missing) {
					t.Errorf("%s with an unknown field: InvalidParameter %v", method, p)
				}
			})
		}
	}
}
