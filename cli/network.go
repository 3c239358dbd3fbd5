package cli

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/varlink/go/varlink"

	vn "github.com/bitbuilder/bitbuilder/api/iobitbuildernetwork"
)

func networkCommands() []*command {
	return []*command{
		{
			path: "network get", args: "TENANT [TENANT...]", minArgs: 1, maxArgs: -1,
			summary: "show tenants' networks: links, leases, peers and problems",
			long: `Given several tenants, bbctl shows each in turn (with --json: an array of them) and reports
each failure; the exit code is the first failure's.`,
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					now := e.app.Now()
					return getEach(e, args, func(name string) (vn.TenantNetwork, error) {
						n, err := vn.Get().Call(ctx, c, name)
						return n, e.wrap(err, "io.bitbuilder.Network.Get")
					}, func(w io.Writer, n vn.TenantNetwork) error { return printNetwork(w, now, n) })
				}
			},
		},
		{
			path: "network list", aliases: []string{"ls"}, maxArgs: 0,
			summary: "list the tenants' networks",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					ns, err := e.listNetworks(ctx)
					if err != nil {
						return err
					}
					if e.g.json {
						return printJSON(e.stdout(), ns)
					}
					return printNetworkTable(e.stdout(), ns)
				}
			},
		},
		{
			path: "network add-peer", args: "TENANT --public-key K [--endpoint H:P] [--allowed-ips CIDR,...] [--keepalive S]",
			minArgs: 1, maxArgs: 1,
			summary: "add a WireGuard peer to a tenant",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				key := fs.String("public-key", "", "the peer's public `key`, base64 of 32 bytes, or - to read it from standard input (required)")
				endpoint := fs.String("endpoint", "", "the peer's `host:port`")
				allowed := fs.String("allowed-ips", "", "networks routed to the peer, `CIDR,...`")
				keepalive := fs.String("keepalive", "", "keepalive interval in `seconds`")
				return func(ctx context.Context, e *env, args []string) error {
					if *key == "-" {
						b, err := io.ReadAll(io.LimitReader(e.app.Stdin, 4096))
						if err != nil {
							return fmt.Errorf("reading the public key from standard input: %w", err)
						}
						*key = strings.TrimSpace(string(b))
						if *key == "" {
							return usagef("network add-peer", "flag --public-key -: standard input has no key")
						}
					}
					peer, err := parsePeer(*key, *endpoint, *allowed, *keepalive)
					if err != nil {
						return err
					}
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					n, err := vn.AddPeer().Call(ctx, c, args[0], peer)
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Network.AddPeer")
					}
					if e.g.json {
						return printJSON(e.stdout(), n)
					}
					_, err = fmt.Fprintf(e.stdout(), "peer %s added to tenant %q (%d %s)\n", peer.PublicKey, n.Tenant, len(n.Peers), plural(len(n.Peers), "peer", "peers"))
					return err
				}
			},
		},
		{
			path: "network remove-peer", args: "TENANT KEY", minArgs: 2, maxArgs: 2,
			summary: "remove a WireGuard peer from a tenant",
			setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
				return func(ctx context.Context, e *env, args []string) error {
					c, err := e.connect(ctx)
					if err != nil {
						return err
					}
					n, err := vn.RemovePeer().Call(ctx, c, args[0], args[1])
					if err != nil {
						return e.wrap(err, "io.bitbuilder.Network.RemovePeer")
					}
					if e.g.json {
						return printJSON(e.stdout(), n)
					}
					_, err = fmt.Fprintf(e.stdout(), "peer %s removed from tenant %q (%d %s left)\n", args[1], n.Tenant, len(n.Peers), plural(len(n.Peers), "peer", "peers"))
					return err
				}
			},
		},
		{
			path: "network describe", args: "TENANT", minArgs: 1, maxArgs: 1,
			summary: "print a tenant's rendered networkd files without writing them",
			setup:   filesCommand("io.bitbuilder.Network.Describe", vn.Describe().Call, false),
		},
		{
			path: "network apply", args: "TENANT", minArgs: 1, maxArgs: 1,
			summary: "write a tenant's networkd files and reload networkd",
			setup:   filesCommand("io.bitbuilder.Network.Apply", vn.Apply().Call, true),
		},
	}
}

func filesCommand(method string, call func(context.Context, *varlink.Connection, string) ([]vn.File, error), applied bool) func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			c, err := e.connect(ctx)
			if err != nil {
				return err
			}
			files, err := call(ctx, c, args[0])
			if err != nil {
				return e.wrap(err, method)
			}
			if files == nil {
				files = []vn.File{}
			}
			if e.g.json {
				return printJSON(e.stdout(), files)
			}
			if applied {
				names := make([]string, len(files))
				for i, f := range files {
					names[i] = f.Name
				}
				_, err = fmt.Fprintf(e.stdout(), "tenant %q: wrote %d %s: %s\n", args[0], len(files), plural(len(files), "file", "files"), strings.Join(names, ", "))
				return err
			}
			return printFiles(e.stdout(), files)
		}
	}
}

// parsePeer checks add-peer's flags before the daemon is contacted.
func parsePeer(key, endpoint, allowed, keepalive string) (vn.Peer, error) {
	const cmd = "network add-peer"
	p := vn.Peer{AllowedIPs: []string{}}
	if key == "" {
		return p, usagef(cmd, "flag --public-key is required")
	}
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 {
		return p, usagef(cmd, "invalid value %q for flag --public-key: want base64 of 32 bytes", key)
	}
	p.PublicKey = key
	if endpoint != "" {
		host, port, err := net.SplitHostPort(endpoint)
		if err != nil || host == "" {
			return p, usagef(cmd, "invalid value %q for flag --endpoint: want host:port", endpoint)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return p, usagef(cmd, "invalid value %q for flag --endpoint: port must be 1..65535", endpoint)
		}
		p.Endpoint = &endpoint
	}
	if allowed != "" {
		for _, s := range strings.Split(allowed, ",") {
			s = strings.TrimSpace(s)
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				return p, usagef(cmd, "invalid value %q for flag --allowed-ips: %q is not a CIDR", allowed, s)
			}
			p.AllowedIPs = append(p.AllowedIPs, pfx.String())
		}
	}
	if keepalive != "" {
		n, err := strconv.ParseInt(keepalive, 10, 64)
		if err != nil || n < 0 || n > 65535 {
			return p, usagef(cmd, "invalid value %q for flag --keepalive: want seconds, 0..65535", keepalive)
		}
		p.PersistentKeepalive = &n
	}
	return p, nil
}

// listNetworks collects the replies of Network.List; no tenants is an empty list.
func (e *env) listNetworks(ctx context.Context) ([]vn.TenantNetwork, error) {
	c, err := e.connect(ctx)
	if err != nil {
		return nil, err
	}
	recv, err := vn.List().Send(ctx, c, varlink.More)
	if err != nil {
		return nil, e.wrap(err, "io.bitbuilder.Network.List")
	}
	out := []vn.TenantNetwork{}
	for {
		n, flags, err := recv(ctx)
		if err != nil {
			if isEmptyList(err) {
				return out, nil
			}
			return nil, e.wrap(err, "io.bitbuilder.Network.List")
		}
		out = append(out, n)
		if flags&varlink.Continues == 0 {
			return out, nil
		}
	}
}

func printNetworkTable(w io.Writer, ns []vn.TenantNetwork) error {
	tb := newTable(w, "TENANT", "INDEX", "NAMESPACE", "BRIDGE", "SUBNET", "GATEWAY", "LINKS", "PEERS", "PROBLEMS")
	for _, n := range ns {
		tb.row(n.Tenant, strconv.FormatInt(n.NetworkIndex, 10), n.Namespace, n.Bridge, n.Subnet, n.Gateway,
			strconv.Itoa(len(n.Links)), strconv.Itoa(len(n.Peers)), strconv.Itoa(len(n.Problems)))
	}
	return tb.flush()
}

func printNetwork(w io.Writer, now time.Time, n vn.TenantNetwork) error {
	kv(w, "Tenant", n.Tenant)
	kv(w, "Network index", strconv.FormatInt(n.NetworkIndex, 10))
	kv(w, "Namespace", n.Namespace)
	kv(w, "Bridge", n.Bridge)
	kv(w, "Subnet", n.Subnet)
	kv(w, "Gateway", n.Gateway)
	kv(w, "WireGuard key", deref(n.WireGuardPublicKey))
	if len(n.Links) == 0 {
		kv(w, "Links", "none")
	} else {
		fmt.Fprintln(w, "Links:")
		tb := indentTable(w, "NAME", "KIND", "STATE", "ADDRESSES", "MASTER", "NAMESPACE", "PROBLEM")
		for _, l := range n.Links {
			tb.row(l.Name, l.Kind, l.State, strings.Join(l.Addresses, ","), deref(l.Master), deref(l.Namespace), deref(l.Problem))
		}
		if err := tb.flush(); err != nil {
			return err
		}
	}
	if len(n.Leases) == 0 {
		kv(w, "Leases", "none")
	} else {
		fmt.Fprintln(w, "Leases:")
		tb := indentTable(w, "ADDRESS", "HARDWARE", "HOSTNAME", "EXPIRES")
		for _, l := range n.Leases {
			expires := deref(l.ExpiresAt)
			if expires != "" {
				expires = formatTime(now, expires)
			}
			tb.row(l.Address, l.HardwareAddress, deref(l.Hostname), expires)
		}
		if err := tb.flush(); err != nil {
			return err
		}
	}
	if len(n.Peers) == 0 {
		kv(w, "Peers", "none")
	} else {
		fmt.Fprintln(w, "Peers:")
		tb := indentTable(w, "PUBLIC KEY", "ENDPOINT", "ALLOWED IPS", "KEEPALIVE")
		for _, p := range n.Peers {
			ka := ""
			if p.PersistentKeepalive != nil {
				ka = fmt.Sprintf("%ds", *p.PersistentKeepalive)
			}
			tb.row(p.PublicKey, deref(p.Endpoint), strings.Join(p.AllowedIPs, ","), ka)
		}
		if err := tb.flush(); err != nil {
			return err
		}
	}
	if len(n.Problems) == 0 {
		kv(w, "Problems", "none")
		return nil
	}
	fmt.Fprintln(w, "Problems:")
	for _, p := range n.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

func printFiles(w io.Writer, files []vn.File) error {
	for i, f := range files {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "# %s\n", f.Name)
		content := f.Content
		if content != "" && !strings.HasSuffix(content, "\n") {
			content += "\n"
		}
		if _, err := io.WriteString(w, content); err != nil {
			return err
		}
	}
	return nil
}
