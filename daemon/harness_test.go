package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bitbuilder/bitbuilder/rpc"
	"github.com/bitbuilder/bitbuilder/store"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// errInjected is the failure a failingStore returns.
var errInjected = errors.New("injected storage failure")

// failingStore is a real store whose reads and commits fail while fail is set.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

func (s *failingStore) Get(ctx context.Context, kind, name string) (store.Record, error) {
	if s.fail.Load() {
		return store.Record{}, errInjected
	}
	return s.Store.Get(ctx, kind, name)
}

func (s *failingStore) List(ctx context.Context, kind string) ([]store.Record, uint64, error) {
	if s.fail.Load() {
		return nil, 0, errInjected
	}
	return s.Store.List(ctx, kind)
}

func (s *failingStore) Commit(ctx context.Context, ops ...store.Op) (uint64, error) {
	if s.fail.Load() {
		return 0, errInjected
	}
	return s.Store.Commit(ctx, ops...)
}

// newFailingTenants returns a tenant service over a real bbolt store that fails on demand.
func newFailingTenants(t *testing.T) (*tenant.Service, *failingStore) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &failingStore{Store: st}
	svc, err := tenant.New(tenant.Config{Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	return svc, fs
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serveAPIs serves the given API adapters through package rpc on a real unix socket, as Run
// does, for tests that need an adapter built over parts Run does not let them inject. It
// returns the socket's path.
func serveAPIs(t *testing.T, ifaces ...rpc.Interface) string {
	t.Helper()
	srv, err := rpc.New(rpc.Config{
		Vendor: "BitBuilder", Product: "bitbuilderd-test", Version: "0", URL: "https://example.com",
		AdminGroup: -1, Interfaces: ifaces, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "io.bitbuilder")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock
}
