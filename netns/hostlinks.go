package netns

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostLinks follows the host namespace's links (index, name, link group) for Teardown's question whether a
// tenant's link group holds exactly its links; a dump of every link answered it before, which cost O(tenants) per
// teardown (about 50 ms per tenant at 1,000 tenants).
//
// It is exact, not a copy that lags: a socket subscribed to the link notifications (RTNLGRP_LINK) is read, without
// blocking, until it is empty before every answer. The kernel queues a link's notification on the socket before
// the request that created, renamed, deleted, set up or down, or (while up) regrouped the link returns, so such a
// change made before the question is in the answer, as it would be in a dump taken then. A notification carries
// the link's whole state, so applying those queued since the subscription on top of one dump taken after it gives
// the current state. The one change the kernel does not notify is the group of a link that is down
// (netdev_state_change notifies up links only): every link followed as down is therefore read again, by index,
// for each answer (a host's down links are few; the tenants' are up). A notification the socket had to drop
// (ENOBUFS) or any other error starts it over: a new subscription and a dump.
type hostLinks struct {
	mu    sync.Mutex
	sock  *nl.NetlinkSocket // nil: not following
	links map[int]linkEntry // by index
	buf   []byte
}

// linkEntry is what is followed of a host link.
type linkEntry struct {
	name  string
	group uint32
	up    bool // IFF_UP: a down link's group can change without a notification
}

// close stops following.
func (f *hostLinks) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopLocked()
}

func (f *hostLinks) stopLocked() {
	if f.sock != nil {
		f.sock.Close()
	}
	f.sock, f.links = nil, nil
}

// groupMembers returns the sorted names of the host links in group, as they are now. h is open on the host
// namespace (for the subscription and the dump when following starts).
func (f *hostLinks) groupMembers(h *handles, group uint32) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.syncLocked(h); err != nil {
		f.stopLocked()
		// Once more from scratch: a dropped notification (ENOBUFS) only means the socket fell behind.
		if err = f.syncLocked(h); err != nil {
			f.stopLocked()
			return nil, err
		}
	}
	for index, l := range f.links {
		if l.up {
			continue
		}
		got, ok, err := h.linkEntry(index)
		if err != nil {
			f.stopLocked()
			return nil, err
		}
		if ok {
			f.links[index] = got
		} else {
			delete(f.links, index)
		}
	}
	var names []string
	for _, l := range f.links {
		if l.group == group {
			names = append(names, l.name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// syncLocked starts following if it does not yet, then applies every notification queued on the socket.
func (f *hostLinks) syncLocked(h *handles) error {
	if f.sock == nil {
		s, err := nl.GetNetlinkSocketAt(h.hostNs, vns.None(), unix.NETLINK_ROUTE)
		if err != nil {
			return &OpError{Op: "subscribe to link notifications", Err: err}
		}
		fd := s.GetFd()
		err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.RTNLGRP_LINK)
		if err == nil {
			// Room for the notifications of a few thousand link changes between two questions.
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
				err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
			}
		}
		if err != nil {
			s.Close()
			return &OpError{Op: "subscribe to link notifications", Err: err}
		}
		// Subscribed first, then dumped: a change during the dump is also queued, and applied after it.
		links, err := h.linkGroups()
		if err != nil {
			s.Close()
			return err
		}
		f.sock, f.links = s, links
		if f.buf == nil {
			f.buf = make([]byte, 1<<16)
		}
	}
	for {
		n, _, err := unix.Recvfrom(f.sock.GetFd(), f.buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &OpError{Op: "read link notifications", Err: err}
		}
		msgs, err := syscall.ParseNetlinkMessage(f.buf[:n])
		if err != nil {
			return &OpError{Op: "read link notifications", Err: err}
		}
		for _, m := range msgs {
			index, l, ok, err := parseLinkEntry(m)
			switch {
			case err != nil:
				return &OpError{Op: "read link notifications", Err: err}
			case !ok:
			case m.Header.Type == unix.RTM_DELLINK:
				delete(f.links, index)
			case m.Header.Type == unix.RTM_NEWLINK:
				f.links[index] = l
			}
		}
	}
}

// parseLinkEntry reads a link's index, name and group from an RTM_NEWLINK or RTM_DELLINK message (ok false for
// any other message). A message it cannot parse is an error: a link left out could be a foreign one in a group.
func parseLinkEntry(m syscall.NetlinkMessage) (int, linkEntry, bool, error) {
	if m.Header.Type != unix.RTM_NEWLINK && m.Header.Type != unix.RTM_DELLINK {
		return 0, linkEntry{}, false, nil
	}
	if len(m.Data) < unix.SizeofIfInfomsg {
		return 0, linkEntry{}, false, fmt.Errorf("link message of %d bytes", len(m.Data))
	}
	attrs, err := nl.ParseRouteAttr(m.Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return 0, linkEntry{}, false, err
	}
	msg := nl.DeserializeIfInfomsg(m.Data)
	if msg.Family != unix.AF_UNSPEC {
		// The bridge's notifications about a port (AF_BRIDGE: its STP state, its removal from the bridge as
		// RTM_DELLINK) share the group, carry no link group and do not mean the link changed or went away.
		return 0, linkEntry{}, false, nil
	}
	l := linkEntry{up: msg.Flags&unix.IFF_UP != 0}
	hasName, hasGroup := false, false
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			l.name, hasName = strings.TrimRight(string(a.Value), "\x00"), true
		case unix.IFLA_GROUP:
			if len(a.Value) == 4 {
				l.group, hasGroup = nl.NativeEndian().Uint32(a.Value), true
			}
		}
	}
	if m.Header.Type == unix.RTM_NEWLINK && (!hasName || !hasGroup) {
		return 0, linkEntry{}, false, fmt.Errorf("link message for index %d without its name or group", msg.Index)
	}
	return int(msg.Index), l, true, nil
}

// linkEntry reads one host link by index, or reports that it is gone.
func (h *handles) linkEntry(index int) (linkEntry, bool, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	var l linkEntry
	found := false
	var perr error
	err := h.execute(req, func(m syscall.NetlinkMessage) {
		i, e, ok, err := parseLinkEntry(m)
		if err != nil {
			perr = err
		} else if ok && i == index {
			l, found = e, true
		}
	})
	if err == nil {
		err = perr
	}
	if errors.Is(err, unix.ENODEV) {
		return linkEntry{}, false, nil
	}
	if err != nil {
		return linkEntry{}, false, &OpError{Op: "read link", Err: err}
	}
	return l, found, nil
}
