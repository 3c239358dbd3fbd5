#!/bin/bash
# prepare.sh: make this machine able to boot the systemd 257 test host used by BitBuilder's integration tests.
#
# Runs as root on Debian 12. Idempotent: installs the host packages it needs (only when one is missing), then
# builds a Debian trixie root file system once and keeps it in a cache directory outside the repository, keyed by
# a hash of what it contains (suite, package list and the preparation steps below). A second run, or a concurrent
# one, reuses it. A build is made in a temporary directory under a lock and renamed into place, so an interrupted
# build leaves nothing that looks complete, and the next run cleans it up.
#
# Usage:
#   prepare.sh            build what is missing, then print the rootfs path on the last line of stdout
#   prepare.sh --locate   print the rootfs path if it is built (exit 0), exit 3 if not; changes nothing
#   prepare.sh --key      print the cache key
#
# Environment:
#   BITBUILDER_TEST_CACHE  cache directory (default /var/cache/bitbuilder-test)
#   BITBUILDER_MIRROR      Debian mirror for debootstrap (default: debootstrap's own default)
#
# Cache layout: $BITBUILDER_TEST_CACHE/rootfs-<key>/ (unpacked tree, the overlay lower dir of every test host) and
# $BITBUILDER_TEST_CACHE/rootfs-<key>.tar.zst (the same tree as a tarball: restore it in CI and this script unpacks it
# instead of running debootstrap).
set -euo pipefail

CACHE_DIR=${BITBUILDER_TEST_CACHE:-/var/cache/bitbuilder-test}
SUITE=trixie
# Packages of the rootfs. systemd-networkd is added by prepare_rootfs when the suite packages it separately.
PACKAGES=systemd,systemd-container,systemd-sysv,systemd-resolved,dbus,iproute2,busybox-static,mount,procps
HOST_PACKAGES=(debootstrap systemd-container zstd busybox-static util-linux debian-archive-keyring)
RECIPE_VERSION=1

log() { printf 'prepare.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# prepare_rootfs ROOTFS: every change made to a fresh debootstrap tree. Its text is part of the cache key.
prepare_rootfs() {
	local root=$1
	if [ ! -x "$root/usr/lib/systemd/systemd-networkd" ]; then
		log "systemd-networkd is packaged separately in $SUITE: installing it"
		chroot "$root" apt-get update -qq
		DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends systemd-networkd >/dev/null
	fi
	echo bbtest >"$root/etc/hostname"
	: >"$root/etc/machine-id"
	chroot "$root" systemctl enable systemd-networkd.service systemd-networkd.socket >/dev/null 2>&1 ||
		chroot "$root" systemctl enable systemd-networkd.service
	chroot "$root" systemctl enable systemd-resolved.service >/dev/null 2>&1 || true
	# No getty fights over the console of a container started with --console=passive.
	chroot "$root" systemctl mask console-getty.service >/dev/null 2>&1 || true
	# Keep the tree small: downloaded packages and indexes are not needed to boot.
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
	# The tools the tests rely on must be there.
	local tool
	for tool in systemd-sysext systemd-confext systemd-analyze varlinkctl machinectl networkctl systemd-nspawn busybox; do
		chroot "$root" /bin/sh -c "command -v $tool" >/dev/null || die "rootfs lacks $tool"
	done
}

cache_key() {
	{
		echo "recipe=$RECIPE_VERSION suite=$SUITE packages=$PACKAGES"
		declare -f prepare_rootfs
	} | sha256sum | cut -c1-16
}

KEY=$(cache_key)
ROOTFS=$CACHE_DIR/rootfs-$KEY
TARBALL=$ROOTFS.tar.zst

case "${1:-}" in
--key)
	echo "$KEY"
	exit 0
	;;
--locate)
	if [ -d "$ROOTFS" ]; then
		echo "$ROOTFS"
		exit 0
	fi
	exit 3
	;;
"") ;;
*) die "unknown argument ${1} (want --locate, --key or nothing)" ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root"

install_host_packages() {
	local missing=() p
	for p in "${HOST_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "host packages present"
		return
	fi
	log "installing host packages: ${missing[*]}"
	apt-get update -qq -o DPkg::Lock::Timeout=300
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
}

# remove_tree DIR: unmount anything left mounted below DIR (an interrupted debootstrap leaves proc and sys), then
# remove it without crossing into another file system.
remove_tree() {
	local dir=$1 m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	rm -rf --one-file-system "$dir"
}

build_rootfs() {
	local tmp start
	tmp=$(mktemp -d "$CACHE_DIR/tmp.XXXXXX")
	start=$(date +%s)
	if [ -f "$TARBALL" ]; then
		log "unpacking $TARBALL"
		zstd -dc -T0 "$TARBALL" | tar -x --numeric-owner --xattrs --xattrs-include='*' -C "$tmp"
	else
		log "debootstrap $SUITE (minbase, $PACKAGES) into $tmp"
		# shellcheck disable=SC2086
		debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" ${BITBUILDER_MIRROR:-} \
			>"$tmp.log" 2>&1 || {
			tail -n 30 "$tmp.log" >&2
			die "debootstrap failed (log: $tmp.log)"
		}
		rm -f "$tmp.log"
		prepare_rootfs "$tmp"
		log "writing $TARBALL"
		chmod 0755 "$tmp"
		tar -C "$tmp" -c --numeric-owner --xattrs --xattrs-include='*' . | zstd -q -T0 -3 -o "$TARBALL.tmp"
		mv -f "$TARBALL.tmp" "$TARBALL"
	fi
	chmod 0755 "$tmp" # it becomes / of every test host (mktemp made it 0700)
	mv -T "$tmp" "$ROOTFS"
	log "rootfs ready in $(($(date +%s) - start)) s: $(chroot "$ROOTFS" systemctl --version | head -n1)"
}

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
	log "waiting for another prepare.sh to finish"
	flock 9
fi
install_host_packages
if [ -d "$ROOTFS" ]; then
	log "rootfs cached (key $KEY)"
else
	for stale in "$CACHE_DIR"/tmp.*; do
		[ -e "$stale" ] || continue
		log "removing leftover of an interrupted build: $stale"
		if [ -d "$stale" ]; then remove_tree "$stale"; else rm -f "$stale"; fi
	done
	rm -f "$TARBALL.tmp"
	build_rootfs
fi
echo "$ROOTFS"
