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

// ActivationListener returns the socket passed by systemd socket activation
// (LISTEN_FDS, with LISTEN_FDNAMES "varlink" or unnamed), or nil when there is none.
func ActivationListener() (net.Listener, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, name := range []string{"varlink", "unknown", "LISTEN_FD_3"} {
		if ls := named[name]; len(ls) > 0 {
			return ls[0], nil
		}
	}
	for name, ls := range named {
		if len(ls) > 0 {
			return nil, fmt.Errorf("socket activation: unexpected socket name %q (want FileDescriptorName=varlink)", name)
		}
	}
	return nil, nil
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
