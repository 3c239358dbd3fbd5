package rpc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// ErrAlreadyRunning means another process serves the socket path.
var ErrAlreadyRunning = errors.New("another instance is serving the socket")

// Listen creates the unix socket at path with the given mode, owned by root and gid (when
// gid >= 0). It refuses to replace a socket that another process still answers on, and
// removes a stale one. The socket is created under a umask that leaves no window in which
// it is more open than mode.
func Listen(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrAlreadyRunning)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(path, os.Getuid(), gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("chown %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// Names of the sockets systemd passes by socket activation (FileDescriptorName=).
const (
	// ActivationName names the main socket (bitbuilderd.socket).
	ActivationName = "varlink"
	// ActivationNameReadOnly names the read-only socket (bitbuilderd-ro.socket).
	ActivationNameReadOnly = "varlink-ro"
)

// ActivationListeners returns the sockets passed by systemd socket activation (LISTEN_FDS):
// the main one, named "varlink" (or unnamed), and the read-only one, named "varlink-ro".
// Each is nil when systemd did not pass it.
func ActivationListeners() (main, readOnly net.Listener, err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, name := range []string{ActivationName, "unknown", "LISTEN_FD_3"} {
		if ls := named[name]; len(ls) > 0 {
			main = ls[0]
			break
		}
	}
	if ls := named[ActivationNameReadOnly]; len(ls) > 0 {
		readOnly = ls[0]
	}
	for name, ls := range named {
		if len(ls) > 0 && ls[0] != main && ls[0] != readOnly {
			return nil, nil, fmt.Errorf("socket activation: unexpected socket name %q (want FileDescriptorName=%s or %s)", name, ActivationName, ActivationNameReadOnly)
		}
	}
	return main, readOnly, nil
}

// LookupGroup returns the numeric id of group name (or of a numeric id given as such), or
// -1 when it does not exist.
func LookupGroup(name string) int {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1
	}
	return id
}
