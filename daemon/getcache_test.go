package daemon

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestGetSeesEveryAcknowledgedWrite: Tenant.Get, which answers from its cache while the
// store's revision holds still, shows every write acknowledged before it was asked, on any
// connection: the API's own writes, the reconciler's status writes and deletion, and the
// writes to other tenants, while other clients Get the same tenant all along.
func TestGetSeesEveryAcknowledgedWrite(t *testing.T) {
	d := startDaemon(t)
	c := dial(t, d.socket)
	other := dial(t, d.socket)
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"cached"}`))
	tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"neighbour"}`))
	revision := func(tn map[string]any) int { return int(tn["revision"].(float64)) }

	// Readers on their own connections keep the cache warm and check that what they see
	// never goes back.
	var stop atomic.Bool
	var wg sync.WaitGroup
	readers := make([]*client, 4)
	for i := range readers {
		readers[i] = dial(t, d.socket)
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	for _, rc := range readers {
		wg.Go(func() {
			last := 0
			for !stop.Load() {
				if _, err := rc.conn.Write([]byte(`{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"cached"}}` + "\x00")); err != nil {
					t.Errorf("reader: %v", err)
					return
				}
				r, err := rc.read()
				switch {
				case err != nil:
					if !stop.Load() {
						t.Errorf("reader: %v", err)
					}
					return
				case r.Error != "":
					return // deleted at the end
				}
				rev := int(r.Parameters["tenant"].(map[string]any)["revision"].(float64))
				if rev < last {
					t.Errorf("a reader saw revision %d after %d", rev, last)
					return
				}
				last = rev
			}
		})
	}

	waitPhase(t, c, "cached", "ready")
	for i := range 20 {
		// The reconciler's status write of the previous round may land between the Get and
		// the Update: a conditional update then fails and is read again and retried, as a
		// client does.
		var up map[string]any
		for try := 0; up == nil; try++ {
			cur := tenantOf(t, other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`))
			r := c.call("io.bitbuilder.Tenant.Update", fmt.Sprintf(
				`{"name":"cached","revision":%d,"resources":{"cpus":%d,"memoryBytes":1073741824,"storageBytes":1073741824}}`, revision(cur), i+1))
			if r.Error == "io.bitbuilder.Tenant.RevisionMismatch" && try < 10 {
				continue
			}
			up = tenantOf(t, r)
		}
		got := tenantOf(t, other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`))
		if revision(got) < revision(up) || got["resources"].(map[string]any)["cpus"] != float64(i+1) {
			t.Fatalf("Get after the update acknowledged at revision %d: revision %v, resources %v", revision(up), got["revision"], got["resources"])
		}
		// A write to another tenant moves the store on; the Get still shows the same.
		tenantOf(t, c.call("io.bitbuilder.Tenant.Stop", `{"name":"neighbour"}`))
		tenantOf(t, c.call("io.bitbuilder.Tenant.Start", `{"name":"neighbour"}`))
		if again := tenantOf(t, other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`)); revision(again) < revision(got) {
			t.Fatalf("Get went back from revision %d to %d", revision(got), revision(again))
		}
	}
	stopped := tenantOf(t, c.call("io.bitbuilder.Tenant.Stop", `{"name":"cached"}`))
	if got := tenantOf(t, other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`)); got["desiredState"] != "stopped" || revision(got) < revision(stopped) {
		t.Errorf("Get after Stop: %v", got)
	}
	// The reconciler's status write (a deferred commit) shows too.
	waitPhase(t, other, "cached", "stopped")

	if r := c.call("io.bitbuilder.Tenant.Delete", `{"name":"cached"}`); r.Error != "" {
		t.Fatalf("Delete: %v", r)
	}
	waitFor(t, func() bool {
		return other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`).Error == "io.bitbuilder.Tenant.NoSuchTenant"
	}, "the tenant to be finalized")
	stop.Store(true)
	wg.Wait()
	wantError(t, c.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`), "io.bitbuilder.Tenant.NoSuchTenant", nil)
	// Created again, it is the new tenant that Get shows.
	created := tenantOf(t, c.call("io.bitbuilder.Tenant.Create", `{"name":"cached","desiredState":"stopped"}`))
	if got := tenantOf(t, other.call("io.bitbuilder.Tenant.Get", `{"name":"cached"}`)); got["desiredState"] != "stopped" || revision(got) < revision(created) {
		t.Errorf("Get after the tenant was created again: %v", got)
	}
}
