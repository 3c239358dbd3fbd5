package rpc

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a connection, as the kernel reports it.
type Peer struct {
	UID, GID uint32
	PID      int32
	// Groups are the peer's supplementary groups (SO_PEERGROUPS).
	Groups []uint32
}

type peerKey struct{}

// PeerOf returns the peer whose call ctx serves: handlers use it to say who changed what.
func PeerOf(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// privileged reports whether the peer may call Write methods: root, or a member (primary or
// supplementary) of the admin group.
func (p Peer) privileged(adminGroup int) bool {
	if p.UID == 0 {
		return true
	}
	if adminGroup < 0 {
		return false
	}
	g := uint32(adminGroup)
	return p.GID == g || slices.Contains(p.Groups, g)
}

// peerOf reads SO_PEERCRED and SO_PEERGROUPS of a unix connection.
func peerOf(conn net.Conn) (Peer, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var p Peer
	var opErr error
	err = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			opErr = err
			return
		}
		p.UID, p.GID, p.PID = cred.Uid, cred.Gid, cred.Pid
		p.Groups = peerGroups(int(fd))
	})
	if err != nil {
		return Peer{}, err
	}
	return p, opErr
}

// peerGroups returns the supplementary groups of the peer, or nil when the kernel cannot
// tell (then only the primary group counts).
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 4 {
		size := uint32(len(buf) * 4)
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4]
		case unix.ERANGE:
			buf = make([]uint32, size/4+1)
		default:
			return nil
		}
	}
	return nil
}
