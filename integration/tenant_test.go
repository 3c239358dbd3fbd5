package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const tenantIface = "io.bitbuilder.Tenant."

// TestCreate checks Create's reply and the network index allocation: the lowest free index
// from 1, an explicit index honoured and then skipped, one in use refused.
func TestCreate(t *testing.T) {
	d := startDaemon(t, "create")
	var last int64
	for i, name := range []string{"alpha", "bravo", "charlie"} {
		before := time.Now().Add(-time.Minute)
		tn := d.create(t, `{"name":"`+name+`"}`)
		if tn.Name != name || tn.NetworkIndex != i+1 {
			t.Errorf("Create %s: name %q, networkIndex %d; want index %d", name, tn.Name, tn.NetworkIndex, i+1)
		}
		if tn.Revision <= last || tn.CreateRevision != tn.Revision {
			t.Errorf("Create %s: revision %d, createRevision %d after revision %d", name, tn.Revision, tn.CreateRevision, last)
		}
		last = tn.Revision
		if tn.DesiredState != "running" || tn.Phase != "pending" {
			t.Errorf("Create %s: desiredState %q, phase %q; want running, pending", name, tn.DesiredState, tn.Phase)
		}
		created, err := time.Parse(time.RFC3339Nano, tn.CreatedAt)
		if err != nil || created.Before(before) || tn.UpdatedAt != tn.CreatedAt {
			t.Errorf("Create %s: createdAt %q, updatedAt %q (%v)", name, tn.CreatedAt, tn.UpdatedAt, err)
		}
		if tn.Templates == nil || tn.Parameters == nil || tn.Conditions == nil {
			t.Errorf("Create %s: null arrays or maps in %+v", name, tn)
		}
		if tn.Resources.CPUs <= 0 || tn.Resources.MemoryBytes <= 0 || tn.Resources.StorageBytes <= 0 {
			t.Errorf("Create %s: no default resources: %+v", name, tn.Resources)
		}
	}

	tn := d.create(t, `{"name":"delta","networkIndex":10,"desiredState":"stopped","parameters":{"VXLAN_PORT":"4790"},`+
		`"resources":{"cpus":0.5,"memoryBytes":536870912,"storageBytes":2147483648}}`)
	if tn.NetworkIndex != 10 || tn.DesiredState != "stopped" || tn.Parameters["VXLAN_PORT"] != "4790" ||
		tn.Resources.CPUs != 0.5 || tn.Resources.MemoryBytes != 512<<20 || tn.Resources.StorageBytes != 2<<30 {
		t.Errorf("Create with every field: %+v", tn)
	}
	if tn := d.create(t, `{"name":"echo"}`); tn.NetworkIndex != 4 {
		t.Errorf("Create after indexes 1-3 and 10: networkIndex %d, want 4", tn.NetworkIndex)
	}
	r := d.call(t, asRoot, tenantIface+"Create", `{"name":"foxtrot","networkIndex":10}`)
	if p := r.wantError(t, tenantIface+"NetworkIndexInUse"); p["networkIndex"] != 10.0 || p["tenant"] != "delta" {
		t.Errorf("NetworkIndexInUse parameters = %v", p)
	}
	r = d.call(t, asRoot, tenantIface+"Create", `{"name":"alpha"}`)
	if p := r.wantError(t, tenantIface+"TenantExists"); p["name"] != "alpha" {
		t.Errorf("TenantExists parameters = %v", p)
	}
	if got := len(d.list(t)); got != 5 {
		t.Errorf("%d tenants after 5 creates and 2 refused ones", got)
	}
}

// TestGetListCollect checks Get, List with --more (JSON-SEQ), without it (ExpectedMore) and with
// --collect (one JSON array).
func TestGetListCollect(t *testing.T) {
	d := startDaemon(t, "list")

	// No tenants: the enumeration ends at once with NoSuchTenant and an empty name.
	r := d.call(t, asRoot, tenantIface+"List", "{}", "--more")
	if p := r.wantError(t, tenantIface+"NoSuchTenant"); p["name"] != "" {
		t.Errorf("List of nothing: NoSuchTenant parameters %v, want an empty name", p)
	}

	created := map[string]tenant{}
	for _, name := range []string{"mike", "kilo", "lima"} {
		created[name] = d.create(t, `{"name":"`+name+`"}`)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"lima"}`); !sameTenant(got, created["lima"]) {
		t.Errorf("Get lima = %+v, want what Create returned: %+v", got, created["lima"])
	}

	r = d.call(t, asRoot, tenantIface+"List", "{}", "--more")
	recs := r.seq(t)
	var names []string
	for _, rec := range recs {
		var reply struct {
			Tenant tenant `json:"tenant"`
		}
		decodeJSON(t, rec, &reply)
		names = append(names, reply.Tenant.Name)
		if !sameTenant(reply.Tenant, created[reply.Tenant.Name]) {
			t.Errorf("List record %+v differs from Create's %+v", reply.Tenant, created[reply.Tenant.Name])
		}
	}
	if want := []string{"kilo", "lima", "mike"}; !slices.Equal(names, want) {
		t.Errorf("List --more gave %v, want %v in name order", names, want)
	}

	// Get with --more: a method without streams answers once, as a one-record JSON-SEQ.
	one := d.call(t, asRoot, tenantIface+"Get", `{"name":"lima"}`, "--more").seq(t)
	if len(one) != 1 {
		t.Fatalf("Get --more gave %d records", len(one))
	}
	var reply struct {
		Tenant tenant `json:"tenant"`
	}
	decodeJSON(t, one[0], &reply)
	if !sameTenant(reply.Tenant, created["lima"]) {
		t.Errorf("Get --more gave %+v, Create %+v", reply.Tenant, created["lima"])
	}

	// Without --more: List requires it.
	d.call(t, asRoot, tenantIface+"List", "{}").wantError(t, "org.varlink.service.ExpectedMore")

	// --collect: the same records as one JSON array.
	var collected []json.RawMessage
	d.call(t, asRoot, tenantIface+"List", "{}", "--collect").decode(t, &collected)
	if len(collected) != len(recs) {
		t.Fatalf("--collect gave %d records, --more %d", len(collected), len(recs))
	}
	for i := range recs {
		var c, m struct {
			Tenant tenant `json:"tenant"`
		}
		decodeJSON(t, collected[i], &c)
		decodeJSON(t, recs[i], &m)
		if !sameTenant(c.Tenant, m.Tenant) {
			t.Errorf("--collect record %d = %s, --more gave %s", i, collected[i], recs[i])
		}
	}
}

// TestUpdate checks Update with and without a revision, and a stale revision refused.
func TestUpdate(t *testing.T) {
	d := startDaemon(t, "update")
	created := d.create(t, `{"name":"papa"}`)

	// The daemon's own status writes move the revision too, so a conditional update can lose
	// that race: like any client of an optimistic-concurrency API, read and retry.
	var orig, up tenant
	for attempt := 1; ; attempt++ {
		orig = d.tenantCall(t, asRoot, "Get", `{"name":"papa"}`)
		r := d.call(t, asRoot, tenantIface+"Update", fmt.Sprintf(
			`{"name":"papa","revision":%d,"resources":{"cpus":2,"memoryBytes":2147483648,"storageBytes":21474836480},"parameters":{"VXLAN_GROUP":"239.0.0.2"}}`,
			orig.Revision))
		if r.exit == 0 {
			var reply struct {
				Tenant tenant `json:"tenant"`
			}
			r.decode(t, &reply)
			up = reply.Tenant
			break
		}
		if p := r.wantError(t, tenantIface+"RevisionMismatch"); p["expected"] != float64(orig.Revision) || attempt == 10 {
			t.Fatalf("Update at the revision just read, attempt %d: %v", attempt, p)
		}
	}
	if orig.Revision < created.Revision {
		t.Errorf("Get after Create: revision %d, Create's %d", orig.Revision, created.Revision)
	}
	if up.Revision <= orig.Revision || up.CreateRevision != orig.CreateRevision || up.NetworkIndex != orig.NetworkIndex {
		t.Errorf("Update: revision %d -> %d, createRevision %d -> %d, index %d -> %d", orig.Revision, up.Revision,
			orig.CreateRevision, up.CreateRevision, orig.NetworkIndex, up.NetworkIndex)
	}
	if up.Resources.CPUs != 2 || up.Resources.MemoryBytes != 2<<30 || up.Parameters["VXLAN_GROUP"] != "239.0.0.2" {
		t.Errorf("Update did not apply: %+v", up)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"papa"}`); !sameTenant(got, up) {
		t.Errorf("Get after Update = %+v, want %+v", got, up)
	}

	// The revision Create returned is stale now.
	r := d.call(t, asRoot, tenantIface+"Update", fmt.Sprintf(`{"name":"papa","revision":%d,"parameters":{"VXLAN_GROUP":"239.0.0.3"}}`, orig.Revision))
	p := r.wantError(t, tenantIface+"RevisionMismatch")
	if actual, _ := p["actual"].(float64); p["name"] != "papa" || p["expected"] != float64(orig.Revision) || int64(actual) < up.Revision {
		t.Errorf("RevisionMismatch parameters = %v, want expected %d, actual %d", p, orig.Revision, up.Revision)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"papa"}`); got.Parameters["VXLAN_GROUP"] != "239.0.0.2" || !sameTenant(got, up) {
		t.Errorf("a refused Update changed the tenant: %+v", got)
	}

	// Without a revision the update is unconditional; fields left out keep their value.
	up2 := d.tenantCall(t, asRoot, "Update", `{"name":"papa","parameters":{"VXLAN_GROUP":"239.0.0.4"}}`)
	if up2.Revision <= up.Revision || up2.Parameters["VXLAN_GROUP"] != "239.0.0.4" || up2.Resources != up.Resources {
		t.Errorf("unconditional Update: %+v", up2)
	}
	d.call(t, asRoot, tenantIface+"Update", `{"name":"nobody-here"}`).wantError(t, tenantIface+"NoSuchTenant")
	if p := d.call(t, asRoot, tenantIface+"Update", `{"name":"papa","revision":0}`).wantError(t, tenantIface+"InvalidField"); p["field"] != "revision" {
		t.Errorf("Update with revision 0: InvalidField parameters %v", p)
	}
}

// TestStartStop checks that Stop and Start flip the desired state and bump the revision.
func TestStartStop(t *testing.T) {
	d := startDaemon(t, "startstop")
	tn := d.create(t, `{"name":"quebec"}`)
	if tn.DesiredState != "running" {
		t.Fatalf("new tenant desiredState %q", tn.DesiredState)
	}
	stopped := d.tenantCall(t, asRoot, "Stop", `{"name":"quebec"}`)
	if stopped.DesiredState != "stopped" || stopped.Revision <= tn.Revision {
		t.Errorf("Stop: desiredState %q, revision %d -> %d", stopped.DesiredState, tn.Revision, stopped.Revision)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"quebec"}`); got.DesiredState != "stopped" {
		t.Errorf("Get after Stop: desiredState %q", got.DesiredState)
	}
	started := d.tenantCall(t, asRoot, "Start", `{"name":"quebec"}`)
	if started.DesiredState != "running" || started.Revision <= stopped.Revision {
		t.Errorf("Start: desiredState %q, revision %d -> %d", started.DesiredState, stopped.Revision, started.Revision)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"quebec"}`); got.DesiredState != "running" {
		t.Errorf("Get after Start: desiredState %q", got.DesiredState)
	}
	d.call(t, asRoot, tenantIface+"Start", `{"name":"nobody-here"}`).wantError(t, tenantIface+"NoSuchTenant")
	d.call(t, asRoot, tenantIface+"Stop", `{"name":"nobody-here"}`).wantError(t, tenantIface+"NoSuchTenant")
}

// TestDelete checks Delete: an empty reply, and the tenant then being deleted (until the
// reconciler finalizes deletions, the record stays in phase deleting).
func TestDelete(t *testing.T) {
	d := startDaemon(t, "delete")
	tn := d.create(t, `{"name":"romeo"}`)
	d.create(t, `{"name":"sierra"}`)

	// A stale revision is refused and deletes nothing.
	d.tenantCall(t, asRoot, "Stop", `{"name":"romeo"}`)
	r := d.call(t, asRoot, tenantIface+"Delete", fmt.Sprintf(`{"name":"romeo","revision":%d}`, tn.Revision))
	if p := r.wantError(t, tenantIface+"RevisionMismatch"); p["expected"] != float64(tn.Revision) {
		t.Errorf("RevisionMismatch parameters = %v", p)
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"romeo"}`); got.Phase == "deleting" {
		t.Errorf("a refused Delete marked the tenant deleting")
	}

	// Delete's reply has no parameters, which varlinkctl prints as nothing.
	if r = d.call(t, asRoot, tenantIface+"Delete", `{"name":"romeo"}`); r.exit != 0 || r.stdout != "" {
		t.Errorf("Delete: %v", r)
	}
	r = d.call(t, asRoot, tenantIface+"Get", `{"name":"romeo"}`)
	if r.exit == 0 {
		var reply struct {
			Tenant tenant `json:"tenant"`
		}
		r.decode(t, &reply)
		if reply.Tenant.Phase != "deleting" {
			t.Errorf("Get after Delete: phase %q, want deleting (or NoSuchTenant once finalized)", reply.Tenant.Phase)
		}
	} else {
		r.wantError(t, tenantIface+"NoSuchTenant")
	}
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"sierra"}`); got.Phase == "deleting" {
		t.Errorf("Delete of romeo touched sierra: %+v", got)
	}
	d.call(t, asRoot, tenantIface+"Delete", `{"name":"nobody-here"}`).wantError(t, tenantIface+"NoSuchTenant")
}

// TestWatch follows a Watch stream while tenants change, then resumes from a revision with
// --timeout. Changes the daemon makes on its own (status updates by a reconciler) may come in
// between as "modified" events; the changes made here must come in order, each once.
func TestWatch(t *testing.T) {
	d := startDaemon(t, "watch")
	a := d.create(t, `{"name":"tango"}`)
	b := d.create(t, `{"name":"uniform"}`)

	s := startStream(t, d.h, "varlinkctl", "call", "--more", "--json=short", d.socket, tenantIface+"Watch", "{}")
	// The current tenants first, as added, stamped with the snapshot's revision.
	snapshot := map[string]event{}
	var snapRev int64
	for range 2 {
		ev := s.nextEvent(t)
		snapshot[ev.Name] = ev
		if snapRev == 0 {
			snapRev = ev.Revision
		}
		if ev.Type != "added" || ev.Revision < b.Revision || ev.Revision != snapRev || ev.Tenant == nil || ev.Tenant.Name != ev.Name {
			t.Errorf("initial event %+v, want added at the snapshot's revision (at least %d)", ev, b.Revision)
		}
	}
	if ev, ok := snapshot["tango"]; !ok || ev.Tenant.CreateRevision != a.CreateRevision {
		t.Errorf("initial events %v lack tango created at revision %d", snapshot, a.CreateRevision)
	}

	// Then every change as it happens, with increasing revisions.
	c := d.create(t, `{"name":"victor"}`)
	stopped := d.tenantCall(t, asRoot, "Stop", `{"name":"tango"}`)
	updated := d.tenantCall(t, asRoot, "Update", `{"name":"uniform","parameters":{"BRIDGE_STP":"yes"}}`)
	want := []event{
		{Type: "added", Name: "victor", Revision: c.Revision},
		{Type: "modified", Name: "tango", Revision: stopped.Revision},
		{Type: "modified", Name: "uniform", Revision: updated.Revision},
	}
	var got []event
	for len(got) < len(want) {
		got = append(got, matchEvents(t, []event{s.nextEvent(t)}, want)...)
	}
	checkEvents(t, "streamed", got, want)
	if ev := got[1]; ev.Tenant == nil || ev.Tenant.DesiredState != "stopped" {
		t.Errorf("Stop's event carries %+v", ev.Tenant)
	}
	if ev := got[2]; ev.Tenant == nil || ev.Tenant.Parameters["BRIDGE_STP"] != "yes" {
		t.Errorf("Update's event carries %+v", ev.Tenant)
	}
	s.kill()

	// Resume after the snapshot: the same changes, then varlinkctl gives up at --timeout.
	start := time.Now()
	r := d.call(t, asRoot, tenantIface+"Watch", fmt.Sprintf(`{"revision":%d}`, snapRev), "--more", "--timeout=1")
	if r.exit != exitCallFailed || !strings.Contains(r.stderr, "io.systemd.TimedOut") {
		t.Fatalf("Watch with --timeout=1: %v", r)
	}
	if el := time.Since(start); el < time.Second || el > 10*time.Second {
		t.Errorf("Watch with --timeout=1 ended after %v", el)
	}
	checkEvents(t, "resumed", matchEvents(t, seqEvents(t, r.stdout), want), want)

	// Only one tenant's changes.
	r = d.call(t, asRoot, tenantIface+"Watch", fmt.Sprintf(`{"name":"tango","revision":%d}`, snapRev), "--more", "--timeout=1")
	tangoOnly := seqEvents(t, r.stdout)
	for _, ev := range tangoOnly {
		if ev.Name != "tango" {
			t.Errorf("Watch of tango gave an event of %s", ev.Name)
		}
	}
	checkEvents(t, "tango's", matchEvents(t, tangoOnly, want[1:2]), want[1:2])

	// Without --more Watch is refused.
	d.call(t, asRoot, tenantIface+"Watch", "{}").wantError(t, "org.varlink.service.ExpectedMore")
}

// TestOneway checks --oneway: nothing printed, and the call still happens; a failing oneway call
// prints nothing either and changes nothing.
func TestOneway(t *testing.T) {
	d := startDaemon(t, "oneway")
	r := d.call(t, asRoot, tenantIface+"Create", `{"name":"whiskey"}`, "--oneway")
	if r.exit != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("oneway Create: %v", r)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, tenantIface+"Get", `{"name":"whiskey"}`)
		return r.exit == 0, r.String()
	})
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"whiskey"}`); got.NetworkIndex != 1 {
		t.Errorf("oneway-created tenant: %+v", got)
	}

	r = d.call(t, asRoot, tenantIface+"Create", `{"name":"../x"}`, "--oneway")
	if r.exit != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("oneway Create with a bad name: %v", r)
	}
	// A later call on a new connection is served after it; only whiskey exists.
	d.create(t, `{"name":"xray"}`)
	var names []string
	for _, tn := range d.list(t) {
		names = append(names, tn.Name)
	}
	if !slices.Equal(names, []string{"whiskey", "xray"}) {
		t.Errorf("tenants after oneway calls: %v", names)
	}
}

// TestErrors checks the error replies of the Tenant interface and of the Varlink service, as
// varlinkctl reports them.
func TestErrors(t *testing.T) {
	d := startDaemon(t, "errors")
	d.create(t, `{"name":"yankee"}`)
	long63 := strings.Repeat("a", 63)
	if tn := d.create(t, `{"name":"`+long63+`"}`); tn.Name != long63 {
		t.Errorf("63-character name: %+v", tn)
	}

	tests := []struct {
		name, method, params string
		flags                []string
		err                  string
		want                 map[string]any // expected error parameters; nil: only checked to be an object
	}{
		{"no such tenant", "Get", `{"name":"zulu"}`, nil, tenantIface + "NoSuchTenant", map[string]any{"name": "zulu"}},
		{"tenant exists", "Create", `{"name":"yankee"}`, nil, tenantIface + "TenantExists", map[string]any{"name": "yankee"}},
		{"path name", "Create", `{"name":"../x"}`, nil, tenantIface + "InvalidName", nil},
		{"empty name", "Create", `{"name":""}`, nil, tenantIface + "InvalidName", nil},
		{"64 characters", "Create", `{"name":"` + strings.Repeat("a", 64) + `"}`, nil, tenantIface + "InvalidName", nil},
		{"upper case", "Create", `{"name":"Yankee"}`, nil, tenantIface + "InvalidName", nil},
		{"unicode", "Create", `{"name":"zürich"}`, nil, tenantIface + "InvalidName", nil},
		{"invalid name on Watch", "Watch", `{"name":"a/b"}`, []string{"--more"}, tenantIface + "InvalidName", nil},
		{"unknown field", "Get", `{"name":"yankee","colour":"red"}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "colour"}},
		{"mistyped name", "Get", `{"name":5}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "name"}},
		{"mistyped index", "Create", `{"name":"zulu","networkIndex":"1"}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "networkIndex"}},
		{"mistyped nested", "Create", `{"name":"zulu","resources":{"cpus":"1","memoryBytes":1,"storageBytes":1}}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "resources.cpus"}},
		{"unknown enum value", "Create", `{"name":"zulu","desiredState":"sideways"}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "desiredState"}},
		{"missing name", "Get", `{}`, nil, "org.varlink.service.InvalidParameter", map[string]any{"parameter": "name"}},
		{"unknown method", "Frobnicate", `{}`, nil, "org.varlink.service.MethodNotFound", map[string]any{"method": tenantIface + "Frobnicate"}},
		{"more required", "List", `{}`, nil, "org.varlink.service.ExpectedMore", map[string]any{}},
		{"error in a more call", "Get", `{"name":"zulu"}`, []string{"--more"}, tenantIface + "NoSuchTenant", map[string]any{"name": "zulu"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := d.call(t, asRoot, tenantIface+tc.method, tc.params, tc.flags...)
			p := r.wantError(t, tc.err)
			if tc.want != nil && !mapsEqual(p, tc.want) {
				t.Errorf("error parameters %v, want %v", p, tc.want)
			}
			if strings.HasSuffix(tc.err, "InvalidName") {
				var in struct{ Name string }
				_ = json.Unmarshal([]byte(tc.params), &in)
				if p["name"] != in.Name || p["reason"] == "" {
					t.Errorf("InvalidName parameters %v: want the name %q and a reason", p, in.Name)
				}
			}
			// How varlinkctl words it: with the method name, or without for --more calls.
			want := "Method call " + tenantIface + tc.method + "() failed: " + tc.err
			if slices.Contains(tc.flags, "--more") {
				want = "Method call failed: " + tc.err
			}
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
		})
	}

	t.Run("unknown interface", func(t *testing.T) {
		r := d.call(t, asRoot, "io.bitbuilder.Nope.Get", `{}`)
		if p := r.wantError(t, "org.varlink.service.InterfaceNotFound"); p["interface"] != "io.bitbuilder.Nope" {
			t.Errorf("InterfaceNotFound parameters %v", p)
		}
	})
	t.Run("graceful", func(t *testing.T) {
		r := d.call(t, asRoot, tenantIface+"Get", `{"name":"zulu"}`, "--graceful="+tenantIface+"NoSuchTenant")
		var p map[string]any
		r.decode(t, &p) // exit 0
		if p["name"] != "zulu" {
			t.Errorf("graceful NoSuchTenant printed %v", p)
		}
		// --graceful names one error; another one still fails.
		d.call(t, asRoot, tenantIface+"Create", `{"name":"yankee"}`, "--graceful="+tenantIface+"NoSuchTenant").
			wantError(t, tenantIface+"TenantExists")
	})
	t.Run("quiet", func(t *testing.T) {
		r := d.call(t, asRoot, tenantIface+"Get", `{"name":"zulu"}`, "-q")
		if r.exit != exitCallFailed || r.stdout != "" {
			t.Errorf("-q on an error: %v", r)
		}
	})

	// Nothing of the refused calls was created.
	var names []string
	for _, tn := range d.list(t) {
		names = append(names, tn.Name)
	}
	if !slices.Equal(names, []string{long63, "yankee"}) {
		t.Errorf("tenants after the refused calls: %v", names)
	}
}

// TestParametersOmitted checks that a call without parameters is the same as one with {}:
// varlinkctl then reads them from standard input.
func TestParametersOmitted(t *testing.T) {
	d := startDaemon(t, "omitted")
	d.create(t, `{"name":"omega"}`)
	// Let the reconciler record its status first, so that two reads in a row see one record.
	eventually(t, 10*time.Second, func() (bool, string) {
		got := d.tenantCall(t, asRoot, "Get", `{"name":"omega"}`)
		return got.Phase != "pending", "phase " + got.Phase
	})
	call := func(stdin, method string, args ...string) result {
		return run(t, d.h, stdin, append([]string{"varlinkctl", "call", "--json=short"}, append(args, d.socket, tenantIface+method)...)...)
	}

	// Empty stdin: parameters {}.
	withBraces := d.call(t, asRoot, tenantIface+"List", "{}", "--more")
	omitted := call("", "List", "--more")
	if omitted.exit != 0 || omitted.stdout != withBraces.stdout {
		t.Errorf("List without parameters:\n%v\nwith {}:\n%v", omitted, withBraces)
	}
	d.call(t, asRoot, tenantIface+"Get", "{}").wantError(t, "org.varlink.service.InvalidParameter")
	if p := call("", "Get").wantError(t, "org.varlink.service.InvalidParameter"); p["parameter"] != "name" {
		t.Errorf("Get without parameters: %v", p)
	}
	// Parameters on stdin, with the argument left out or given as "-".
	want := d.call(t, asRoot, tenantIface+"Get", `{"name":"omega"}`)
	for _, r := range []result{call(`{"name":"omega"}`, "Get"), run(t, d.h, `{"name":"omega"}`, "varlinkctl", "call", "--json=short", d.socket, tenantIface+"Get", "-")} {
		if r.exit != 0 || r.stdout != want.stdout {
			t.Errorf("Get with parameters on stdin: %v\nwant %v", r, want)
		}
	}
}

// TestExitStatus records how varlinkctl 257 reports each kind of error in its exit status, the
// contract scripts rely on: 1 for every error reply, 0 for one named by --graceful.
func TestExitStatus(t *testing.T) {
	d := startDaemon(t, "exit")
	tests := []struct {
		method, params string
		flags          []string
		err            string
	}{
		{tenantIface + "Get", `{"name":"x","bogus":1}`, nil, "org.varlink.service.InvalidParameter"},
		{tenantIface + "Nope", `{}`, nil, "org.varlink.service.MethodNotFound"},
		{tenantIface + "List", `{}`, nil, "org.varlink.service.ExpectedMore"},
		{"io.bitbuilder.Nope.Get", `{}`, nil, "org.varlink.service.InterfaceNotFound"},
		{tenantIface + "Get", `{"name":"x"}`, nil, tenantIface + "NoSuchTenant"},
		{tenantIface + "List", `{}`, []string{"--more"}, tenantIface + "NoSuchTenant"},
		{tenantIface + "List", `{}`, []string{"--collect"}, tenantIface + "NoSuchTenant"},
	}
	for _, tc := range tests {
		r := d.call(t, asRoot, tc.method, tc.params, tc.flags...)
		r.wantError(t, tc.err) // exit status exitCallFailed
		g := d.call(t, asRoot, tc.method, tc.params, append(tc.flags, "--graceful="+tc.err)...)
		if g.exit != 0 {
			t.Errorf("--graceful=%s: %v", tc.err, g)
		}
	}
	// PermissionDenied, from a plain user on a socket opened to everyone.
	mustRun(t, d.h, "chmod", "0666", d.socket)
	d.call(t, asNobody, tenantIface+"Create", `{"name":"x"}`).wantError(t, "org.varlink.service.PermissionDenied")
	// No daemon at all.
	if r := varlinkctl(t, d.h, asRoot, "call", "/run/no-such.socket", tenantIface+"Get", `{"name":"x"}`); r.exit != 1 || !strings.Contains(r.stderr, "No such file or directory") {
		t.Errorf("call to a missing socket: %v", r)
	}
}

// TestConcurrentCreates runs 40 varlinkctl Create calls at once: every one succeeds, with its
// own network index and revision, and all are listed.
func TestConcurrentCreates(t *testing.T) {
	const n = 40
	d := startDaemon(t, "concurrent")
	out := mustRun(t, d.h, "sh", "-c", fmt.Sprintf(`dir=$(mktemp -d)
for i in $(seq 1 %[1]d); do
	varlinkctl call --json=short %[2]s %[3]sCreate "{\"name\":\"c$i\"}" >"$dir/$i" 2>&1 &
done
wait
cat "$dir"/*
rm -rf "$dir"`, n, d.socket, tenantIface))
	indexes, revisions := map[int]bool{}, map[int64]bool{}
	for line := range strings.Lines(out) {
		var reply struct {
			Tenant tenant `json:"tenant"`
		}
		decodeJSON(t, []byte(line), &reply)
		indexes[reply.Tenant.NetworkIndex] = true
		revisions[reply.Tenant.Revision] = true
	}
	if len(indexes) != n || len(revisions) != n {
		t.Errorf("%d concurrent creates: %d distinct indexes, %d distinct revisions:\n%s", n, len(indexes), len(revisions), out)
	}
	for i := 1; i <= n; i++ {
		if !indexes[i] {
			t.Errorf("index %d not allocated: the %d creates did not take 1..%d", i, n, n)
		}
	}
	if got := len(d.list(t)); got != n {
		t.Errorf("List: %d tenants after %d creates", got, n)
	}
}

// TestIndexRange runs the daemon with --index-range 7-8: indexes come from that range, and
// when it is used up Create is refused with NoFreeNetworkIndex naming it.
func TestIndexRange(t *testing.T) {
	d := startDaemon(t, "range", "--index-range", "7-8")
	for i, name := range []string{"r1", "r2"} {
		if tn := d.create(t, `{"name":"`+name+`"}`); tn.NetworkIndex != 7+i {
			t.Errorf("Create %s: networkIndex %d, want %d", name, tn.NetworkIndex, 7+i)
		}
	}
	r := d.call(t, asRoot, tenantIface+"Create", `{"name":"r3"}`)
	if p := r.wantError(t, tenantIface+"NoFreeNetworkIndex"); p["minimum"] != 7.0 || p["maximum"] != 8.0 {
		t.Errorf("NoFreeNetworkIndex parameters %v, want minimum 7, maximum 8", p)
	}
	// An explicit index outside the range is refused too, with a declared error.
	r = d.call(t, asRoot, tenantIface+"Create", `{"name":"r3","networkIndex":9}`)
	if r.exit == 0 || !strings.Contains(r.stderr, "failed: "+tenantIface) {
		t.Errorf("Create with an index outside the range: %v", r)
	}
	d.call(t, asRoot, tenantIface+"Get", `{"name":"r3"}`).wantError(t, tenantIface+"NoSuchTenant")
}

// TestCallLatency measures sequential varlinkctl calls inside the host, a process each, as
// scripts make them, and bounds them generously.
func TestCallLatency(t *testing.T) {
	const n = 200
	d := startDaemon(t, "latency")
	d.create(t, `{"name":"timed"}`)
	start := time.Now()
	mustRun(t, d.h, "sh", "-c", fmt.Sprintf(
		`for i in $(seq 1 %d); do varlinkctl call %s %sGet '{"name":"timed"}' >/dev/null || exit 1; done`, n, d.socket, tenantIface))
	per := time.Since(start) / n
	t.Logf("%d sequential varlinkctl Get calls: %v each, process start included", n, per.Round(10*time.Microsecond))
	if per > 200*time.Millisecond {
		t.Errorf("a varlinkctl Get takes %v", per)
	}
}

// TestReconcile watches the daemon's control loop through the API: it records a phase for a
// new tenant, follows the desired state, and finalizes a deletion (the record goes, a Watch
// sees "deleted", the name and index are free again, and a restart does not bring it back).
func TestReconcile(t *testing.T) {
	d := startDaemon(t, "reconcile")
	tn := d.create(t, `{"name":"loop"}`)
	phase := func(want ...string) {
		t.Helper()
		eventually(t, 10*time.Second, func() (bool, string) {
			got := d.tenantCall(t, asRoot, "Get", `{"name":"loop"}`)
			return slices.Contains(want, got.Phase), fmt.Sprintf("phase %q, want one of %q (conditions %s)", got.Phase, want, got.Conditions)
		})
	}
	// ready, or degraded/failed when a host step cannot be done in the test host: but recorded.
	phase("ready", "degraded", "failed")
	d.tenantCall(t, asRoot, "Stop", `{"name":"loop"}`)
	phase("stopped", "degraded", "failed")
	d.tenantCall(t, asRoot, "Start", `{"name":"loop"}`)
	phase("ready", "degraded", "failed")

	if r := d.call(t, asRoot, tenantIface+"Delete", `{"name":"loop"}`); r.exit != 0 {
		t.Fatalf("%v", r)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		r := d.call(t, asRoot, tenantIface+"Get", `{"name":"loop"}`)
		return r.exit != 0, "the tenant is still there after Delete: " + r.stdout
	})
	d.call(t, asRoot, tenantIface+"Get", `{"name":"loop"}`).wantError(t, tenantIface+"NoSuchTenant")

	// The whole life in the change log: added, modified (status, stop, start, deleting) and
	// finally deleted, carrying the last state.
	r := d.call(t, asRoot, tenantIface+"Watch", fmt.Sprintf(`{"name":"loop","revision":%d}`, tn.Revision-1), "--more", "--timeout=1")
	evs := seqEvents(t, r.stdout)
	if len(evs) < 3 || evs[0].Type != "added" || evs[len(evs)-1].Type != "deleted" {
		t.Fatalf("events of loop: %+v", evs)
	}
	for i, ev := range evs[1 : len(evs)-1] {
		if ev.Type != "modified" || ev.Revision <= evs[i].Revision {
			t.Errorf("event %d: %s at %d after %d", i+1, ev.Type, ev.Revision, evs[i].Revision)
		}
	}
	if last := evs[len(evs)-1]; last.Tenant == nil || last.Tenant.Phase != "deleting" {
		t.Errorf("the deleted event carries %+v, want the last state (deleting)", last.Tenant)
	}

	// The name and the index are free again; a restart does not resurrect the old record.
	again := d.create(t, `{"name":"loop"}`)
	if again.NetworkIndex != tn.NetworkIndex || again.CreateRevision <= tn.CreateRevision {
		t.Errorf("recreated tenant %+v, the first was %+v", again, tn)
	}
	d.stop(t)
	d.start(t)
	if got := d.tenantCall(t, asRoot, "Get", `{"name":"loop"}`); got.CreateRevision != again.CreateRevision {
		t.Errorf("after a restart: %+v, want the recreated tenant", got)
	}
}
