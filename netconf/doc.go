// Package netconf renders a tenant's network template into systemd-networkd .netdev/.network files, writes them,
// and has networkd apply them.
//
// A network template is a directory with metadata.json in the seed's format ({"template":{"type":"network",
// "version","name"},"requirements":{"systemd_version":">=257",...},"defaults":{...}}, validated in full by the
// template package), an optional parameters.json that types the template's variables and gives their defaults
// ({"VAR":{"type":"port","default":"51820","description":"..."}}; kept out of metadata.json, whose schema admits no
// extra keys), and .netdev/.network/.link files using %i (the tenant's network index) and ${VAR}. See
// examples/templates/network for the example template.
//
// # Calling it
//
//	tmpl, err := netconf.Load(os.DirFS(dir))         // once per pinned template commit
//	m, err := netconf.New(netconf.Config{Logger: log}) // /run/systemd/network, D-Bus Reload
//	in := netconf.Input{Tenant: "acme", Index: 3, Vars: vars, Peers: peers}
//	files, err := m.Render(tmpl, in)   // pure: what Apply would write (the API's Describe of a template)
//	res, err := m.Apply(ctx, tmpl, in) // write changed files atomically, drop stale ones, Reload networkd
//	files, err = m.Describe(3)         // what is on disk for index 3
//	pub, err := m.PublicKey("acme")    // the tenant's WireGuard public key (the private key is never returned)
//	err = m.Remove(ctx, "acme", 3)     // on tenant deletion: files, key, reload
//	leases, err := netconf.NetworkdBus{}.Leases(ctx, "br-tenant-3") // DHCP leases as networkd reports them
//
// AddPeer/RemovePeer of the API: AddPeer/RemovePeer on the stored peer list, then Apply; peers are appended as
// [WireGuardPeer] sections to every rendered .netdev of Kind=wireguard, after validation.
//
// # Rules
//
// Rendering is all or nothing and reports every problem at once (errors.Join of typed errors): a ${VAR} with no
// value and no default (VariableError, ErrUnknownVariable, naming the variable, file and line), a value given for
// a variable no file uses (ErrUnusedVariable), and values that could change the file's structure or meaning
// (ValueError): newline, carriage return, NUL or any control character, a backslash (line continuation), '[' or
// ']' (a section header; allowed only inside an endpoint's [IPv6]:port), and '%' (a specifier networkd would
// expand). In template text only %i and %% are allowed, and variables only in values. After substitution the file
// must have exactly the template's sections and keys. Typed parameters are checked: wireguard-key (base64 of 32
// bytes), endpoint (host:port, [IPv6]:port), cidr-list, keepalive (0..65535), port, ipv4, integer, boolean.
// Interface names in [NetDev]/[Match] Name= must fit the kernel's 15 characters. The index must be within
// Config.MinIndex..MaxIndex. Bad input writes nothing and reloads nothing.
//
// # Files
//
// Rendered files are named 50-bitbuilder-<index>-<template file> in Config.Dir (default /run/systemd/network),
// each starting with a comment naming the template and tenant. Apply writes a file only when its content changed
// (temporary file in the same directory, fsync, rename, fsync of the directory), removes the tenant's other
// 50-bitbuilder-<index>-* files, and calls org.freedesktop.network1.Manager.Reload over D-Bus (NetworkdBus,
// behind the Reloader interface) when something changed or an earlier reload failed.
//
// Built-in variables: ${TENANT}, ${NETWORK_DIR} (<TenantsDir>/<tenant>/network) and ${WIREGUARD_KEY_FILE}. When a
// rendered .netdev is of Kind=wireguard, Apply generates the tenant's private key on this host (curve25519 from
// golang.org/x/crypto, clamped as wg genkey does) into ${WIREGUARD_KEY_FILE}, mode 0600 in a 0700 directory owned
// by systemd-network (networkd reads it as that user), once; only the public key ever leaves the package.
package netconf
