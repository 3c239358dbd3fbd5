package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	vn "github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
	vt "github.com/bitbuilder/bitbuilder/api/iobitbuildertenant"
)

// The daemon does not yet serve Template and Network, nor report conditions without a
// reconciler, so these golden tests render replies as the IDL describes them.

func ptr[T any](v T) *T { return &v }

func TestRenderGolden(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	e := &env{app: &App{Now: func() time.Time { return now }}}
	tenant := vt.Tenant{
		Name: "web", NetworkIndex: 3,
		Resources:  vt.Resources{Cpus: 2, MemoryBytes: 4 << 30, StorageBytes: 50 << 30},
		Templates:  []vt.TemplateUse{{Role: "infrastructure", Name: "infra", Template: "base-infra", Commit: ptr("0123456789abcdef0123456789abcdef01234567")}},
		Parameters: map[string]string{},
		Machines: []vt.Machine{
			{Name: "db", MachineName: "web-db", Kind: "vm", Template: "debian", Cpus: 1, MemoryBytes: 2 << 30, DesiredState: "running",
				Status: &vt.MachineStatus{State: "failed", Addresses: []string{}, Unit: "bitbuilder-vm@web-db.service", Message: ptr("vmspawn exited with status 1"), Since: "2026-11-28T11:58:30Z"}},
			{Name: "cache", MachineName: "web-cache", Kind: "container", Template: "cache", DesiredState: "running",
				Status: &vt.MachineStatus{State: "running", Addresses: []string{"10.3.0.12"}, Unit: "bitbuilder-container@web-cache.service", Since: "2026-11-28T11:00:00Z"}},
		},
		DesiredState: "running", Phase: "degraded",
		Conditions: []vt.Condition{
			{Type: "NetworkReady", Status: "true", Reason: "Configured", Message: "bridge br-tenant-3 is up", LastTransitionTime: "2026-11-28T11:00:00Z"},
			{Type: "MachinesReady", Status: "false", Reason: "StartFailed", Message: "web-db: vmspawn exited with status 1\nweb-db: see journalctl -u bitbuilder-vm@web-db.service", LastTransitionTime: "2026-11-28T11:58:30Z"},
		},
		Revision: 42, CreateRevision: 7, CreatedAt: "2026-11-20T09:00:00Z", UpdatedAt: "2026-11-28T11:58:30Z",
	}
	templates := []vm.Template{
		{Name: "base-infra", Url: "https://git.example.org/bitbuilder/base-infra.git", Ref: "main", Commit: "0123456789abcdef0123456789abcdef01234567",
			Type: "infrastructure", Version: "1.4.0", PreviousCommits: []string{"89abcdef0123456789abcdef0123456789abcdef"}, UsedBy: []string{"web", "shop"},
			AddedAt: "2026-11-01T10:00:00Z", UpdatedAt: "2026-11-20T10:00:00Z"},
		{Name: "debian-web", Url: "/srv/templates/debian-web", Ref: "v2", Commit: "fedcba9876543210fedcba9876543210fedcba98",
			Type: "machine", Version: "2.0.1", PreviousCommits: []string{}, UsedBy: []string{},
			AddedAt: "2026-11-02T10:00:00Z", UpdatedAt: "2026-11-02T10:00:00Z"},
	}
	network := vn.TenantNetwork{
		Tenant: "web", NetworkIndex: 3, Namespace: "tenant-web", Bridge: "br-tenant-3", Gateway: "10.3.0.1", Subnet: "10.3.0.0/24",
		Links: []vn.Link{
			{Name: "br-tenant-3", Kind: "bridge", State: "up", Addresses: []string{"10.3.0.1/24"}, Namespace: ptr("tenant-web")},
			{Name: "vx-3", Kind: "vxlan", State: "missing", Addresses: []string{}, Master: ptr("br-tenant-3"), Problem: ptr("link does not exist")},
		},
		Leases:             []vn.Lease{{Address: "10.3.0.10", HardwareAddress: "52:54:00:12:34:56", Hostname: ptr("web-db"), ExpiresAt: ptr("2026-11-28T13:00:00Z")}},
		WireGuardPublicKey: ptr("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="),
		Peers:              []vn.Peer{{PublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", Endpoint: ptr("198.51.100.7:51820"), AllowedIPs: []string{"10.99.0.0/16"}, PersistentKeepalive: ptr(int64(25))}},
		Problems:           []string{"vx-3: link does not exist"},
	}
	validation := validateReply{
		Findings: []vm.Finding{
			{Rule: "extension-release.missing", Severity: "error", Path: "usr/lib/extension-release.d/extension-release.tools", Message: "sysext has no extension-release file; add one with ID= and SYSEXT_LEVEL= or VERSION_ID="},
			{Rule: "sysext.only-usr-opt", Severity: "error", Path: "etc/motd", Message: "a sysext may only contain usr/ and opt/; move etc/ to a confext"},
			{Rule: "metadata.version", Severity: "warning", Path: "metadata.json", Message: "version is not semver"},
			{Rule: "layout.readme", Severity: "info", Path: "README.md", Message: "no README"},
		},
		Errors: 2, Warnings: 1, Compatible: ptr(false), CompatibilityReason: ptr("ID=debian does not match the base's ID=fedora"),
	}
	cases := []struct {
		file   string
		render func(*bytes.Buffer) error
	}{
		{"render-tenant-get.golden", func(b *bytes.Buffer) error { return e.printTenant(b, tenant) }},
		{"render-template-list.golden", func(b *bytes.Buffer) error { return printTemplateTable(b, templates) }},
		{"render-template-get.golden", func(b *bytes.Buffer) error { printTemplate(b, now, templates[0]); return nil }},
		{"render-validate.golden", func(b *bytes.Buffer) error { return printValidation(b, validation, "/srv/rootfs/fedora") }},
		{"render-validate-clean.golden", func(b *bytes.Buffer) error {
			return printValidation(b, validateReply{Findings: []vm.Finding{}}, "")
		}},
		{"render-network-get.golden", func(b *bytes.Buffer) error { return printNetwork(b, now, network) }},
		{"render-network-list.golden", func(b *bytes.Buffer) error { return printNetworkTable(b, []vn.TenantNetwork{network}) }},
		{"render-network-describe.golden", func(b *bytes.Buffer) error {
			return printFiles(b, []vn.File{{Name: "10-br-tenant-3.netdev", Content: "[NetDev]\nName=br-tenant-3\nKind=bridge\n"}, {Name: "10-br-tenant-3.network", Content: "[Match]\nName=br-tenant-3"}})
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := c.render(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, c.file, b.String())
		})
	}
}

func TestProgress(t *testing.T) {
	replies := []vm.Progress{
		{Phase: "fetching", Message: "counting objects"},
		{Phase: "fetching", Message: "receiving objects", Objects: ptr(int64(50)), TotalObjects: ptr(int64(200))},
		{Phase: "fetching", Message: "receiving objects", Objects: ptr(int64(50)), TotalObjects: ptr(int64(200))},
		{Phase: "validating", Message: "checking UAPI rules"},
	}
	t.Run("plain lines when not a terminal", func(t *testing.T) {
		var b bytes.Buffer
		p := newProgress(&b, false)
		for _, r := range replies {
			p.update(r)
		}
		p.finish()
		want := "fetching: counting objects\nfetching: receiving objects (50/200 objects)\nvalidating: checking UAPI rules\n"
		if b.String() != want {
			t.Errorf("got %q, want %q", b.String(), want)
		}
	})
	t.Run("a bar redrawn in place on a terminal", func(t *testing.T) {
		var b bytes.Buffer
		p := newProgress(&b, true)
		p.update(replies[1])
		if want := "\r\033[K[#######.......................]  25% fetching 50/200"; b.String() != want {
			t.Errorf("got %q, want %q", b.String(), want)
		}
		p.finish()
		if !strings.HasSuffix(b.String(), "\r\033[K") || strings.Contains(b.String(), "\n") {
			t.Errorf("finish did not clear the bar: %q", b.String())
		}
	})
}
