package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bitbuilder/bitbuilder/netconf"
	"github.com/bitbuilder/bitbuilder/netns"
	"github.com/bitbuilder/bitbuilder/tenant"
)

// Links is what the network step needs of package netns.
type Links interface {
	Ensure(ctx context.Context, s netns.Spec) (netns.Status, error)
	Teardown(ctx context.Context, s netns.Spec) error
}

// NetworkFiles is what the network step needs of package netconf.
type NetworkFiles interface {
	Apply(ctx context.Context, t *netconf.Template, in netconf.Input) (netconf.Result, error)
	Remove(ctx context.Context, tenant string, index int) error
}

// NetworkStep keeps a tenant's network: namespace, bridge, veth and optional links through
// netlink, and the rendered networkd files (bridge address, DHCP server, WireGuard, VXLAN,
// VLAN) applied by networkd.
type NetworkStep struct {
	Links Links
	// Files, when set, renders and applies the tenant's network template.
	Files NetworkFiles
	// Template returns the network template of a tenant.
	Template func(t *tenant.Tenant) (*netconf.Template, error)
}

// Name implements Step.
func (s *NetworkStep) Name() string { return "Network" }

// Spec is the netns spec of a tenant.
func Spec(t *tenant.Tenant) netns.Spec {
	return netns.Spec{
		Tenant: t.Name, Index: t.NetworkIndex,
		WireGuard: t.HasFeature(tenant.FeatureWireGuard),
		VXLAN:     t.HasFeature(tenant.FeatureVXLAN),
		VLAN:      t.HasFeature(tenant.FeatureVLAN),
	}
}

func cond(typ string, ok bool, reason, msg string) tenant.Condition {
	st := "true"
	if !ok {
		st = "false"
	}
	return tenant.Condition{Type: typ, Status: st, Reason: reason, Message: msg}
}

// Ensure implements Step. A link kind the kernel cannot create is a condition of its own
// (WireGuardReady, VLANReady) and not retried; the rest of the network still comes up.
func (s *NetworkStep) Ensure(ctx context.Context, t *tenant.Tenant) ([]tenant.Condition, error) {
	st, err := s.Links.Ensure(ctx, Spec(t))
	var conds []tenant.Condition
	unsupported := map[string]string{}
	var other []string
	for _, p := range st.Problems {
		var ue *netns.UnsupportedLinkError
		if errors.As(p.Err, &ue) {
			unsupported[ue.Kind] = p.Message
			continue
		}
		other = append(other, p.Message)
	}
	for _, f := range []struct{ feature, typ string }{
		{tenant.FeatureWireGuard, "WireGuardReady"}, {tenant.FeatureVXLAN, "VXLANReady"}, {tenant.FeatureVLAN, "VLANReady"},
	} {
		if !t.HasFeature(f.feature) {
			continue
		}
		if msg, bad := unsupported[f.feature]; bad {
			conds = append(conds, cond(f.typ, false, "UnsupportedByKernel", msg))
		} else if err == nil {
			conds = append(conds, cond(f.typ, true, "Configured", ""))
		}
	}
	retry := err
	if err != nil && errors.Is(err, netns.ErrLinkUnsupported) && len(other) == 0 {
		retry = nil // permanent on this kernel: shown as a condition, not retried
	}
	if retry != nil {
		msg := strings.Join(other, "; ")
		if msg == "" {
			msg = err.Error()
		}
		conds = append(conds, cond("NetworkReady", false, "LinkSetupFailed", msg))
	} else {
		conds = append(conds, cond("NetworkReady", true, "Configured", fmt.Sprintf("bridge %s, namespace %s", st.Bridge, st.Namespace)))
	}

	if s.Files != nil && s.Template != nil {
		ferr := s.applyFiles(ctx, t)
		if ferr != nil {
			conds = append(conds, cond("NetworkdConfigured", false, "ApplyFailed", ferr.Error()))
			retry = errors.Join(retry, ferr)
		} else {
			conds = append(conds, cond("NetworkdConfigured", true, "Applied", ""))
		}
	}
	return conds, retry
}

// FileFeature says which network feature a network template file belongs to, by its name ("" for files every
// tenant gets): the reconciler leaves out the files of features a tenant does not have.
func FileFeature(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "wireguard") || strings.Contains(n, "wg-"):
		return tenant.FeatureWireGuard
	case strings.Contains(n, "vxlan"):
		return tenant.FeatureVXLAN
	case strings.Contains(n, "vlan"):
		return tenant.FeatureVLAN
	}
	return ""
}

// Input is the rendering input for a tenant: files of features it does not have are left
// out, and only the parameters that the remaining files use are passed.
func Input(tm *netconf.Template, t *tenant.Tenant) netconf.Input {
	in := netconf.Input{Tenant: t.Name, Index: t.NetworkIndex, Vars: map[string]string{}}
	var kept []string
	for _, f := range tm.Files {
		if ft := FileFeature(f.Name); ft != "" && !t.HasFeature(ft) {
			in.Omit = append(in.Omit, f.Name)
			continue
		}
		kept = append(kept, string(f.Content))
	}
	for k, v := range t.Parameters {
		if slices.ContainsFunc(kept, func(c string) bool { return strings.Contains(c, "${"+k+"}") }) {
			in.Vars[k] = v
		}
	}
	for _, p := range t.Peers {
		in.Peers = append(in.Peers, toNetconfPeer(p))
	}
	return in
}

func (s *NetworkStep) applyFiles(ctx context.Context, t *tenant.Tenant) error {
	tm, err := s.Template(t)
	if err != nil {
		return err
	}
	_, err = s.Files.Apply(ctx, tm, Input(tm, t))
	return err
}

// Teardown implements Step.
func (s *NetworkStep) Teardown(ctx context.Context, t *tenant.Tenant) error {
	var errs []error
	if s.Files != nil {
		// Without a system bus networkd is not running: the files are gone, nothing to reload.
		if err := s.Files.Remove(ctx, t.Name, t.NetworkIndex); err != nil && !errors.Is(err, netconf.ErrNoSystemBus) {
			errs = append(errs, err)
		}
	}
	if err := s.Links.Teardown(ctx, Spec(t)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func toNetconfPeer(p tenant.Peer) netconf.Peer {
	out := netconf.Peer{PublicKey: p.PublicKey, Endpoint: p.Endpoint, PersistentKeepalive: p.PersistentKeepalive}
	for _, a := range p.AllowedIPs {
		if pfx, err := netip.ParsePrefix(a); err == nil {
			out.AllowedIPs = append(out.AllowedIPs, pfx)
		}
	}
	return out
}

// PeerFromAPI checks a peer as the network package does and returns it in the form stored
// in the tenant record.
func PeerFromAPI(publicKey, endpoint string, allowedIPs []string, keepalive int) (tenant.Peer, error) {
	p := netconf.Peer{PublicKey: publicKey, Endpoint: endpoint, PersistentKeepalive: keepalive}
	for i, a := range allowedIPs {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			return tenant.Peer{}, &tenant.FieldError{Field: fmt.Sprintf("peer.allowedIPs[%d]", i), Reason: fmt.Sprintf("%q is not a CIDR prefix", a)}
		}
		p.AllowedIPs = append(p.AllowedIPs, pfx)
	}
	if err := p.Validate(0); err != nil {
		// netconf names the field as a template peer (peer[0].PublicKey); the API's field is peer.publicKey.
		var ve *netconf.ValueError
		if errors.As(err, &ve) {
			if f, ok := strings.CutPrefix(ve.Name, "peer[0]."); ok && f != "" {
				return tenant.Peer{}, &tenant.FieldError{Field: "peer." + strings.ToLower(f[:1]) + f[1:], Reason: fmt.Sprintf("%q: %s", ve.Value, ve.Rule)}
			}
		}
		return tenant.Peer{}, err
	}
	return tenant.Peer{PublicKey: publicKey, Endpoint: endpoint, AllowedIPs: allowedIPs, PersistentKeepalive: keepalive}, nil
}
