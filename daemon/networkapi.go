package daemon

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	vn "github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
	"github.com/bitbuilder/bitbuilder/machines"
	"github.com/bitbuilder/bitbuilder/netconf"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/reconcile"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// networkAPI implements io.bitbuilder.Network. Without host networking (tests, or a daemon
// started without it) the reads describe the tenant from its record alone.
type networkAPI struct {
	tenants *tenant.Service
	net     netns.Config // names and prefixes, as the network manager derives them (see networkConfig)
	host    *hostNetwork // nil without host networking
	log     *slog.Logger
}

// hostNetwork bundles what the network API reads and applies.
type hostNetwork struct {
	links    *netns.Manager
	files    *netconf.Manager
	bus      netconf.NetworkdBus
	template func(t *tenant.Tenant) (*netconf.Template, error)
	// machines runs and observes the tenants' machines.
	machines *machines.Host
}

// networkConfig is the network manager's configuration for hc (nil: the defaults), from which
// describe derives a tenant's names and prefixes, so that they are the ones the host gets.
func networkConfig(hc *HostConfig) netns.Config {
	if hc == nil {
		return netns.Config{}
	}
	c := hc.Netns
	c.BasePrefix = hc.BasePrefix
	return c
}

func (a *networkAPI) describe(ctx context.Context, t *tenant.Tenant) vn.TenantNetwork {
	names, pfx := a.net.Names(reconcile.Spec(t)), a.net.Prefixes(t.NetworkIndex)
	n := vn.TenantNetwork{
		Tenant: t.Name, NetworkIndex: int64(t.NetworkIndex),
		Namespace: names.Namespace, Bridge: names.Bridge,
		Gateway: pfx.Gateway.Addr().String(), Subnet: pfx.Bridge.String(),
		Links: []vn.Link{}, Leases: []vn.Lease{}, Peers: []vn.Peer{}, Problems: []string{},
	}
	for _, p := range t.Peers {
		vp := vn.Peer{PublicKey: p.PublicKey, AllowedIPs: append([]string{}, p.AllowedIPs...)}
		if p.Endpoint != "" {
			e := p.Endpoint
			vp.Endpoint = &e
		}
		if p.PersistentKeepalive != 0 {
			k := int64(p.PersistentKeepalive)
			vp.PersistentKeepalive = &k
		}
		n.Peers = append(n.Peers, vp)
	}
	if a.host == nil {
		n.Problems = append(n.Problems, "host networking is not enabled in this daemon")
		return n
	}
	st, err := a.host.links.Inspect(ctx, reconcile.Spec(t))
	if err != nil {
		n.Problems = append(n.Problems, err.Error())
	}
	n.Namespace, n.Bridge = st.Namespace, st.Bridge
	if st.Prefixes.Gateway.IsValid() {
		n.Gateway = st.Prefixes.Gateway.String()
	}
	if st.Prefixes.Bridge.IsValid() {
		n.Subnet = st.Prefixes.Bridge.String()
	}
	for _, l := range st.Links {
		vl := vn.Link{Name: l.Name, Kind: l.Kind, State: l.State, Addresses: []string{}}
		for _, p := range l.Addresses {
			vl.Addresses = append(vl.Addresses, p.String())
		}
		if l.Master != "" {
			m := l.Master
			vl.Master = &m
		}
		if l.Namespace != "" {
			ns := l.Namespace
			vl.Namespace = &ns
		}
		n.Links = append(n.Links, vl)
	}
	for _, p := range st.Problems {
		n.Problems = append(n.Problems, p.Message)
		for i := range n.Links {
			if n.Links[i].Name == p.Link {
				msg := p.Message
				n.Links[i].Problem = &msg
			}
		}
	}
	if t.HasFeature(tenant.FeatureWireGuard) {
		if key, err := a.host.files.PublicKey(t.Name); err == nil {
			n.WireGuardPublicKey = &key
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if leases, err := a.host.bus.Leases(lctx, n.Bridge); err == nil {
		for _, l := range leases {
			n.Leases = append(n.Leases, vn.Lease{Address: l.Address.String(), HardwareAddress: l.HardwareAddr})
		}
	}
	return n
}

func (a *networkAPI) Get(ctx context.Context, c vn.VarlinkCall, name string) error {
	t, err := a.tenants.Get(ctx, name)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	return c.ReplyGet(ctx, a.describe(ctx, t))
}

func (a *networkAPI) List(ctx context.Context, c vn.VarlinkCall) error {
	ts, _, err := a.tenants.List(ctx)
	if err != nil {
		return a.replyError(ctx, c, "", err)
	}
	if len(ts) == 0 {
		return c.ReplyNoSuchTenant(ctx, "")
	}
	for i, t := range ts {
		c.Continues = i < len(ts)-1
		if err := c.ReplyList(ctx, a.describe(ctx, t)); err != nil {
			return err
		}
	}
	return nil
}

// AddPeer adds a peer, or replaces the peer with its public key. The change is one
// read-modify-write of the tenant in one conditional commit (tenant.Service.ModifyPeers), so
// concurrent AddPeer and RemovePeer calls never lose each other's peers.
func (a *networkAPI) AddPeer(ctx context.Context, c vn.VarlinkCall, name string, peer vn.Peer) error {
	endpoint, keepalive := "", 0
	if peer.Endpoint != nil {
		endpoint = *peer.Endpoint
	}
	if peer.PersistentKeepalive != nil {
		keepalive = int(*peer.PersistentKeepalive)
	}
	p, err := reconcile.PeerFromAPI(peer.PublicKey, endpoint, peer.AllowedIPs, keepalive)
	if err != nil {
		var fe *tenant.FieldError
		if !errors.As(err, &fe) {
			err = &tenant.FieldError{Field: "peer", Reason: err.Error()}
		}
		return a.replyError(ctx, c, name, err)
	}
	t, err := a.tenants.ModifyPeers(ctx, name, tenant.PutPeer(p))
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "wireguard peer added", "tenant", name, "peer", p.PublicKey)
	return c.ReplyAddPeer(ctx, a.describe(ctx, t))
}

// RemovePeer removes a peer, in one conditional commit like AddPeer.
func (a *networkAPI) RemovePeer(ctx context.Context, c vn.VarlinkCall, name string, publicKey string) error {
	t, err := a.tenants.ModifyPeers(ctx, name, tenant.DropPeer(name, publicKey))
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	logChange(ctx, a.log, "wireguard peer removed", "tenant", name, "peer", publicKey)
	return c.ReplyRemovePeer(ctx, a.describe(ctx, t))
}

func (a *networkAPI) rendered(ctx context.Context, c vn.VarlinkCall, name string, apply bool) error {
	t, err := a.tenants.Get(ctx, name)
	if err != nil {
		return a.replyError(ctx, c, name, err)
	}
	if a.host == nil {
		return a.replyError(ctx, c, name, errNoHostNetwork)
	}
	tm, err := a.host.template(t)
	if err != nil {
		return a.replyError(ctx, c, name, &renderError{Err: err})
	}
	in := reconcile.Input(tm, t)
	files := []vn.File{}
	if apply {
		res, err := a.host.files.Apply(ctx, tm, in)
		if err != nil {
			return a.replyError(ctx, c, name, &renderError{Err: err})
		}
		rs, err := a.host.files.Describe(t.NetworkIndex)
		if err != nil {
			return a.replyError(ctx, c, name, &renderError{Err: err})
		}
		for _, r := range rs {
			files = append(files, vn.File{Name: r.Name, Content: string(r.Content)})
		}
		logChange(ctx, a.log, "network applied", "tenant", name, "files", len(res.Files), "changed", res.Changed)
		return c.ReplyApply(ctx, files)
	}
	rs, err := a.host.files.Render(tm, in)
	if err != nil {
		return a.replyError(ctx, c, name, &renderError{Err: err})
	}
	for _, r := range rs {
		// Never show key material: the rendered files name the key file, not the key.
		if strings.Contains(string(r.Content), "PrivateKey=") {
			continue
		}
		files = append(files, vn.File{Name: r.Name, Content: string(r.Content)})
	}
	return c.ReplyDescribe(ctx, files)
}

func (a *networkAPI) Describe(ctx context.Context, c vn.VarlinkCall, name string) error {
	return a.rendered(ctx, c, name, false)
}

func (a *networkAPI) Apply(ctx context.Context, c vn.VarlinkCall, name string) error {
	return a.rendered(ctx, c, name, true)
}

// errNoHostNetwork is a call that needs host networking in a daemon without it.
var errNoHostNetwork = errors.New("host networking is not enabled in this daemon")

// renderError is a tenant's network files that could not be rendered or written: the
// network template could not be loaded, rendering failed, or writing the files did.
type renderError struct {
	File string // the file concerned, "" when not one file
	Err  error
}

func (e *renderError) Error() string { return e.Err.Error() }

func (e *renderError) Unwrap() error { return e.Err }

// replyError maps an error of a Network call to a declared io.bitbuilder.Network error. It is
// the one place where that mapping lives: every handler error passes through it, and an
// error it does not know (the store failed, a record could not be decoded) is
// StorageFailure, never a field of the caller's. name is the tenant the call is about.
func (a *networkAPI) replyError(ctx context.Context, c vn.VarlinkCall, name string, err error) error {
	var (
		nameErr   *tenant.NameError
		fieldErr  *tenant.FieldError
		peerErr   *tenant.PeerError
		renderErr *renderError
	)
	switch {
	case errors.As(err, &nameErr):
		return c.ReplyInvalidField(ctx, "tenant", nameErr.Error())
	case errors.As(err, &fieldErr):
		field := fieldErr.Field
		if field == "name" {
			field = "tenant" // the tenant's name is this interface's "tenant"
		}
		return c.ReplyInvalidField(ctx, field, fieldErr.Reason)
	case errors.Is(err, tenant.ErrNotFound):
		return c.ReplyNoSuchTenant(ctx, name)
	case errors.As(err, &peerErr):
		return c.ReplyNoSuchPeer(ctx, peerErr.PublicKey)
	case errors.Is(err, errNoHostNetwork), errors.Is(err, netconf.ErrNoSystemBus), errors.Is(err, netconf.ErrReload):
		return c.ReplyNetworkdUnavailable(ctx, err.Error())
	case errors.As(err, &renderErr):
		return c.ReplyRenderFailed(ctx, renderErr.File, renderErr.Err.Error())
	default:
		a.log.Error("network call failed", "tenant", name, "err", err)
		return c.ReplyStorageFailure(ctx, err.Error())
	}
}
