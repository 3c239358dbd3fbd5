package netconf

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// checkInjection applies the rules every value obeys, whatever its type: it is substituted into one line of a
// unit file, so it must not be able to end that line, start a section, continue onto the next line, or carry a
// specifier for networkd to expand.
func checkInjection(name, v string, brackets bool) error {
	bad := func(rule string) error { return &ValueError{Name: name, Value: v, Rule: rule} }
	if !utf8.ValidString(v) {
		return bad("not valid UTF-8")
	}
	for _, r := range v {
		switch {
		case r == '\n':
			return bad("contains a newline, which would start a new line in the unit file")
		case r == '\r':
			return bad("contains a carriage return")
		case r == 0:
			return bad("contains a NUL byte")
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return bad(fmt.Sprintf("contains the control character %U", r))
		case r == '%':
			return bad("contains '%', a specifier sequence networkd would expand")
		case r == '\\':
			return bad("contains a backslash (escape or line continuation)")
		case (r == '[' || r == ']') && !brackets:
			return bad(fmt.Sprintf("contains %q, which could start a [Section] header", r))
		}
	}
	return nil
}

var validators = map[string]func(name, v string) error{
	ParamString:       func(string, string) error { return nil },
	ParamWireGuardKey: checkKey,
	ParamEndpoint:     checkEndpoint,
	ParamCIDRList:     func(name, v string) error { _, err := parseCIDRs(name, v); return err },
	ParamKeepalive: func(name, v string) error {
		return checkRange(name, v, 0, 65535, "a keepalive interval in seconds (0 = off)")
	},
	ParamPort:    func(name, v string) error { return checkRange(name, v, 1, 65535, "a port") },
	ParamInteger: func(name, v string) error { return checkRange(name, v, -1<<31, 1<<31-1, "an integer") },
	ParamBoolean: func(name, v string) error {
		switch strings.ToLower(v) {
		case "yes", "no", "true", "false", "on", "off", "1", "0":
			return nil
		}
		return &ValueError{Name: name, Value: v, Rule: "not a boolean (yes/no, true/false, on/off, 1/0)"}
	},
	ParamIPv4: func(name, v string) error {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return &ValueError{Name: name, Value: v, Rule: "not an IPv4 address"}
		}
		return nil
	},
}

func checkKey(name, v string) error {
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil {
		return &ValueError{Name: name, Value: v, Rule: "not a WireGuard key: not standard base64"}
	}
	if len(b) != 32 {
		return &ValueError{Name: name, Value: v, Rule: fmt.Sprintf("not a WireGuard key: %d bytes, want 32", len(b))}
	}
	return nil
}

func checkEndpoint(name, v string) error {
	bad := func(rule string) error {
		return &ValueError{Name: name, Value: v, Rule: "not an endpoint host:port: " + rule}
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		if ae, ok := err.(*net.AddrError); ok {
			return bad(ae.Err)
		}
		return bad(err.Error())
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return bad(fmt.Sprintf("port %q is not 1..65535", port))
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is6() && !strings.HasPrefix(v, "[") {
			return bad("an IPv6 address must be in brackets")
		}
		return nil
	}
	if strings.HasPrefix(v, "[") {
		return bad(fmt.Sprintf("%q in brackets is not an IPv6 address", host))
	}
	if !isHostname(host) {
		return bad(fmt.Sprintf("host %q is neither an IP address nor a DNS name", host))
	}
	return nil
}

func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func parseCIDRs(name, v string) ([]netip.Prefix, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	if len(fields) == 0 {
		return nil, &ValueError{Name: name, Value: v, Rule: "no CIDR given"}
	}
	var out []netip.Prefix
	for _, f := range fields {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, &ValueError{Name: name, Value: v, Rule: fmt.Sprintf("%q is not a CIDR (address/length)", f)}
		}
		out = append(out, p)
	}
	return out, nil
}

func checkRange(name, v string, lo, hi int, what string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return &ValueError{Name: name, Value: v, Rule: fmt.Sprintf("not %s in %d..%d", what, lo, hi)}
	}
	return nil
}

// Peer is one WireGuard peer of a tenant, added to its WireGuard .netdev as a [WireGuardPeer] section.
type Peer struct {
	PublicKey           string         `json:"publicKey"`
	Endpoint            string         `json:"endpoint,omitempty"` // host:port; "" for a peer that connects in
	AllowedIPs          []netip.Prefix `json:"allowedIPs"`
	PersistentKeepalive int            `json:"persistentKeepalive,omitempty"` // seconds; 0 = off
}

// Validate checks the peer; i is its position, used in error messages.
func (p Peer) Validate(i int) error {
	field := func(f string) string { return fmt.Sprintf("peer[%d].%s", i, f) }
	if err := checkInjection(field("PublicKey"), p.PublicKey, false); err != nil {
		return err
	}
	if err := checkKey(field("PublicKey"), p.PublicKey); err != nil {
		return err
	}
	if p.Endpoint != "" {
		if err := checkInjection(field("Endpoint"), p.Endpoint, true); err != nil {
			return err
		}
		if err := checkEndpoint(field("Endpoint"), p.Endpoint); err != nil {
			return err
		}
	}
	if len(p.AllowedIPs) == 0 {
		return &ValueError{Name: field("AllowedIPs"), Rule: "at least one CIDR is required"}
	}
	for _, a := range p.AllowedIPs {
		if !a.IsValid() {
			return &ValueError{Name: field("AllowedIPs"), Value: a.String(), Rule: "not a CIDR"}
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
		return &ValueError{Name: field("PersistentKeepalive"), Value: strconv.Itoa(p.PersistentKeepalive), Rule: "not in 0..65535"}
	}
	return nil
}

func (p Peer) section() string {
	var b strings.Builder
	b.WriteString("\n[WireGuardPeer]\nPublicKey=" + p.PublicKey + "\n")
	ips := make([]string, len(p.AllowedIPs))
	for i, a := range p.AllowedIPs {
		ips[i] = a.String()
	}
	b.WriteString("AllowedIPs=" + strings.Join(ips, ",") + "\n")
	if p.Endpoint != "" {
		b.WriteString("Endpoint=" + p.Endpoint + "\n")
	}
	if p.PersistentKeepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive=%d\n", p.PersistentKeepalive)
	}
	return b.String()
}

// AddPeer returns peers with p added, or replacing the peer with the same public key; p is validated first.
func AddPeer(peers []Peer, p Peer) ([]Peer, error) {
	if err := p.Validate(len(peers)); err != nil {
		return peers, err
	}
	out := make([]Peer, 0, len(peers)+1)
	replaced := false
	for _, q := range peers {
		if q.PublicKey == p.PublicKey {
			q, replaced = p, true
		}
		out = append(out, q)
	}
	if !replaced {
		out = append(out, p)
	}
	return out, nil
}

// RemovePeer returns peers without the peer with publicKey, and whether it was there.
func RemovePeer(peers []Peer, publicKey string) ([]Peer, bool) {
	var out []Peer
	for _, q := range peers {
		if q.PublicKey != publicKey {
			out = append(out, q)
		}
	}
	return out, len(out) != len(peers)
}
