package daemon

import (
	"net"
	"path/filepath"
	"testing"
)

// TestListeningSocket checks how --cleanup tells a live socket (kept) from a stale one
// (removed) without connecting: a real unix socket listened on, then closed with its file left.
func TestListeningSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "io.bitbuilder")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	if !listening(p) {
		t.Error("a listened-on socket is not seen as listening")
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if listening(p) {
		t.Error("a closed socket whose file is left is seen as listening")
	}
	if listening(filepath.Join(t.TempDir(), "none")) {
		t.Error("a missing socket is seen as listening")
	}
}
