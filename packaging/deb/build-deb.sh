#!/bin/bash
# build-deb.sh [OUTDIR]: builds a Debian package of BitBuilder (bitbuilder_VERSION_ARCH.deb, into OUTDIR, default
# ./dist) from the binaries `make build` put into ./bin (or $BB_BIN), laid out by packaging/install.mk.
#
# The maintainer scripts do what a package must on a systemd host: create the bitbuilder group (sysusers.d) and
# the directories (tmpfiles.d), reload systemd so the generator runs, and enable bitbuilderd.socket,
# bitbuilderd-ro.socket and bitbuilderd.service (started at once when systemd is running). Removal stops and disables them; state in
# /var/lib/bitbuilder and the boot registry in /etc/bitbuilder are kept (purge removes the registry only).
#
# Environment: VERSION (default: git describe), BB_BIN (default ./bin), BB_DEB_COMPRESS (dpkg-deb -Z, default xz).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$top/dist}
version=${VERSION:-$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)}
# A Debian upstream version starts with a digit: a tag v1.2[-N-gID] becomes 1.2[+N.gID], anything else (a bare
# commit id, maybe -dirty) 0~gitID.
if [[ $version =~ ^v?[0-9]+\.[0-9]+ ]]; then
	version=${version#v}
	version=${version//-/+}
else
	version=0~git${version//-/.}
fi
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
make -s -C "$top" -f packaging/install.mk install DESTDIR="$stage" PREFIX=/usr BB_BIN="${BB_BIN:-$top/bin}"
mkdir -p "$stage/DEBIAN"

cat >"$stage/DEBIAN/control" <<CONTROL
Package: bitbuilder
Version: $version
Architecture: $arch
Maintainer: BitBuilder developers <bitbuilder@localhost>
Section: admin
Priority: optional
Depends: systemd (>= 255), dbus, iproute2
Recommends: systemd-container, git
Description: multi-tenant hypervisor on systemd
 bitbuilderd keeps each tenant's network namespace, bridge, extensions, units and
 machines converged to Git templates and serves a Varlink API; bitbuilder-generator
 brings tenants back at boot; bbctl is the command line client.
CONTROL

cat >"$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
	systemd-sysusers bitbuilder.conf
	systemd-tmpfiles --create bitbuilder.conf
	systemd-sysctl 50-bitbuilder.conf || true
	systemctl enable bitbuilderd.socket bitbuilderd-ro.socket bitbuilderd.service
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		systemctl start bitbuilderd.socket bitbuilderd-ro.socket
		# An upgrade: restart a running daemon on the new binary (the socket stays, so no request is lost).
		systemctl try-restart bitbuilderd.service
	fi
fi
SCRIPT

cat >"$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop bitbuilderd.service bitbuilderd.socket bitbuilderd-ro.socket || true
fi
if [ "$1" = remove ]; then
	systemctl disable bitbuilderd.service bitbuilderd.socket bitbuilderd-ro.socket || true
fi
SCRIPT

cat >"$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
	rm -f /etc/bitbuilder/boot-registry.json
	rmdir /etc/bitbuilder 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/bitbuilder_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${BB_DEB_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
