package netns

import (
	"context"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TenantOfMark returns the tenant a link's alias marks (see Mark), or "" for a link that is no tenant's.
func TenantOfMark(alias string) string {
	t, _ := strings.CutPrefix(alias, "bitbuilder:")
	if t == alias {
		return ""
	}
	return t
}

// Watch follows the kernel's link notifications (rtnetlink, RTNLGRP_LINK) and calls fn with the tenant whose
// marked link was removed or changed, until ctx ends: a bridge or veth deleted or set down behind the daemon's back
// wakes its tenant at once, without waiting for a resync. It subscribes again after an error.
func Watch(ctx context.Context, fn func(tenant string)) {
	for ctx.Err() == nil {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		errc := make(chan error, 1)
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ErrorCallback: func(err error) {
				select {
				case errc <- err:
				default:
				}
			},
		})
		if err == nil {
			watchLinks(ctx, ch, errc, fn)
		}
		close(done)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func watchLinks(ctx context.Context, ch <-chan netlink.LinkUpdate, errc <-chan error, fn func(string)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-errc:
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			if u.Link == nil {
				continue
			}
			t := TenantOfMark(u.Link.Attrs().Alias)
			if t == "" {
				continue
			}
			// A removal, or a change of the flags that matter (up/down); carrier and other state
			// changes of a live link are the machines' business, not drift.
			if u.Header.Type == unix.RTM_DELLINK || u.Change&unix.IFF_UP != 0 {
				fn(t)
			}
		}
	}
}
