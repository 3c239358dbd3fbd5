package reconcile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/tenant"
)

// TestTemplateExtensions: the images extracted beside a container template's shared tree are extensions of the
// machines made from that template, named after the image and the template; none while the tree is not at the
// use's pin; one named like a tenant's own extension of its class is refused, and the tenant's is kept.
func TestTemplateExtensions(t *testing.T) {
	tenantsDir := filepath.Join(t.TempDir(), "tenants")
	u := tenant.TemplateUse{Role: "container", Name: "img", Template: "debimg", Commit: "c0ffee0000000000000000000000000000000001"}
	tree := TemplateDir(tenantsDir, "ta", u)
	writeTree(t, TemplateImagesDir(tree), extFile{path: "sysext/dev/usr/share/dev/x", content: "x"}, extFile{path: "confext/mon/etc/mon", content: "x"},
		extFile{path: "sysext/dev.image.json", content: `{"name":"dev.sysext.raw","mounts":[{"designator":"root","fstype":"ext4","verity":null}]}`})
	if got := templateExtensions(tenantsDir, "ta", &u); len(got) != 0 {
		t.Fatalf("before the tree is checked out at the pin: %v", got)
	}
	if err := os.WriteFile(tree+".commit", []byte(u.Commit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := templateExtensions(tenantsDir, "ta", &u)
	if len(got) != 2 || got[0].key() != "sysext/dev" || got[1].key() != "confext/mon" || got[0].disk == nil || got[0].disk.Name != "dev.sysext.raw" {
		t.Fatalf("templateExtensions = %+v", got)
	}
	if s := got[0].String(); s != "sysext dev (disk image extensions/dev.sysext.raw of container template debimg at c0ffee000000)" {
		t.Errorf("String() = %q", s)
	}
	other := u
	other.Commit = "c0ffee0000000000000000000000000000000002"
	if got := templateExtensions(tenantsDir, "ta", &other); len(got) != 0 {
		t.Errorf("at another pin: %v", got)
	}

	own := extension{class: "sysext", image: "dev", ready: true, use: tenant.TemplateUse{Role: "sysext", Name: "own", Template: "devtools", Commit: "abc"}}
	all := machineExtensions([]extension{own}, got)
	if len(all) != 3 || all[0].refused != "" || !strings.Contains(all[1].refused, `image name "dev" is also the image of the tenant's sysext own`) || all[2].refused != "" {
		t.Errorf("machineExtensions = %+v", all)
	}
}
