package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotifyReadyAndStopping checks the sd_notify protocol against a unixgram socket of the
// test's own, as systemd would receive it: READY=1 with a STATUS once serving, STOPPING=1 at
// shutdown.
func TestNotifyReadyAndStopping(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{SocketPath: filepath.Join(dir, "sock"), StateDir: filepath.Join(dir, "state"),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready})
	}()
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	msg := read()
	if !strings.Contains(msg, "READY=1") || !strings.Contains(msg, "STATUS=Serving") {
		t.Errorf("first notification %q, want READY=1 and a STATUS", msg)
	}
	// The tenants are counted after READY=1, so that start-up does not wait on their number.
	if msg := read(); msg != "STATUS=Serving 0 tenants" {
		t.Errorf("second notification %q, want the tenant count", msg)
	}
	<-ready
	// Serving when READY=1 was sent: a client is answered.
	if r := dial(t, filepath.Join(dir, "sock")).call("org.varlink.service.GetInfo", "{}"); r.Error != "" {
		t.Errorf("GetInfo after READY: %v", r)
	}
	cancel()
	if msg := read(); !strings.Contains(msg, "STOPPING=1") {
		t.Errorf("shutdown notification %q, want STOPPING=1", msg)
	}
	if err := <-done; err != nil {
		t.Errorf("Run returned %v after cancellation, want nil", err)
	}
}
