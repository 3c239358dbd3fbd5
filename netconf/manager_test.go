package netconf

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// fakeReloader records reloads; err, when set, is returned by the calls.
type fakeReloader struct {
	calls int
	err   error
}

func (f *fakeReloader) Reload(ctx context.Context) error {
	f.calls++
	return f.err
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestApply(t *testing.T) {
	r := &fakeReloader{}
	m := testManager(t, r)
	tmpl := loadExample(t)
	ctx := t.Context()
	in := exampleInput()

	res, err := m.Apply(ctx, tmpl, in)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || r.calls != 1 || len(res.Files) != 9 {
		t.Fatalf("first Apply: changed=%v reloads=%d files=%d", res.Changed, r.calls, len(res.Files))
	}
	want, err := m.Render(tmpl, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range want {
		path := filepath.Join(m.cfg.Dir, f.Name)
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, f.Content) {
			t.Errorf("%s: %v, content differs from Render", path, err)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v", path, st.Mode())
		}
	}

	// The key: mode 0600 in a 0700 directory, and the public key derives from it.
	keyFile := filepath.Join(m.cfg.TenantsDir, "acme", "network", "wireguard.key")
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", err, st)
	}
	if st, _ := os.Stat(filepath.Dir(keyFile)); st.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", st.Mode())
	}
	raw, _ := os.ReadFile(keyFile)
	priv, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(priv) != 32 || priv[0]&7 != 0 || priv[31]&0xc0 != 0x40 {
		t.Fatalf("private key not a clamped curve25519 key: %v", err)
	}
	pub, _ := curve25519.X25519(priv, curve25519.Basepoint)
	if res.PublicKey != base64.StdEncoding.EncodeToString(pub) {
		t.Errorf("PublicKey %s does not belong to the private key", res.PublicKey)
	}
	if res.PublicKey == strings.TrimSpace(string(raw)) {
		t.Errorf("Apply returned the private key")
	}
	for _, f := range want {
		if bytes.Contains(f.Content, bytes.TrimSpace(raw)) {
			t.Errorf("%s contains the private key", f.Name)
		}
	}

	// Idempotent: nothing written, no reload, same key.
	before := map[string]os.FileInfo{}
	for _, n := range listDir(t, m.cfg.Dir) {
		before[n], _ = os.Stat(filepath.Join(m.cfg.Dir, n))
	}
	res2, err := m.Apply(ctx, tmpl, in)
	if err != nil || res2.Changed || r.calls != 1 || res2.PublicKey != res.PublicKey {
		t.Fatalf("second Apply: %v changed=%v reloads=%d", err, res2.Changed, r.calls)
	}
	for n, fi := range before {
		now, _ := os.Stat(filepath.Join(m.cfg.Dir, n))
		if !os.SameFile(fi, now) {
			t.Errorf("%s was rewritten", n)
		}
	}

	// Files another tenant has are not touched; stale files of this tenant go.
	other := filepath.Join(m.cfg.Dir, FileName(33, "10-bridge.netdev"))
	if err := os.WriteFile(other, []byte("[NetDev]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.Omit = []string{"20-wireguard.netdev", "20-wireguard.network"}
	delete(in.Vars, "PEER_PUBLIC_KEY")
	delete(in.Vars, "PEER_ENDPOINT")
	delete(in.Vars, "WIREGUARD_PORT")
	in.Peers = nil
	res3, err := m.Apply(ctx, tmpl, in)
	if err != nil || !res3.Changed || r.calls != 2 || res3.PublicKey != "" {
		t.Fatalf("Apply without WireGuard: %v changed=%v reloads=%d", err, res3.Changed, r.calls)
	}
	names := listDir(t, m.cfg.Dir)
	if slices.Contains(names, FileName(3, "20-wireguard.netdev")) || !slices.Contains(names, filepath.Base(other)) {
		t.Errorf("files after dropping WireGuard: %v", names)
	}
	described, err := m.Describe(3)
	if err != nil || len(described) != 7 || described[0].Source != "10-bridge.netdev" {
		t.Errorf("Describe: %v %d files", err, len(described))
	}

	// Remove: files, key directory, a reload; the other tenant's file stays.
	if err := m.Remove(ctx, "acme", 3); err != nil {
		t.Fatal(err)
	}
	if names := listDir(t, m.cfg.Dir); len(names) != 1 || r.calls != 3 {
		t.Errorf("after Remove: %v, reloads %d", names, r.calls)
	}
	if _, err := os.Stat(filepath.Dir(keyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key directory left: %v", err)
	}
	if err := m.Remove(ctx, "acme", 3); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestApplyRetriesFailedReload(t *testing.T) {
	r := &fakeReloader{err: errors.New("bus gone")}
	m := testManager(t, r)
	tmpl := loadExample(t)
	in := exampleInput()
	if _, err := m.Apply(t.Context(), tmpl, in); err == nil {
		t.Fatal("Apply hid the reload error")
	}
	r.err = nil
	res, err := m.Apply(t.Context(), tmpl, in)
	if err != nil || res.Changed || r.calls != 2 {
		t.Errorf("retry: %v changed=%v reloads=%d, want a reload although no file changed", err, res.Changed, r.calls)
	}
}

func TestNetworkdBusWithoutBus(t *testing.T) {
	bus := NetworkdBus{Address: "unix:path=" + filepath.Join(t.TempDir(), "no-bus")}
	err := bus.Reload(t.Context())
	if !errors.Is(err, ErrNoSystemBus) {
		t.Errorf("Reload without a bus: %v, want ErrNoSystemBus", err)
	}
	if _, err := bus.Leases(t.Context(), "br-tenant-3"); !errors.Is(err, ErrNoSystemBus) {
		t.Errorf("Leases without a bus: %v, want ErrNoSystemBus", err)
	}
}
