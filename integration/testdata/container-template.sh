#!/bin/bash
# container-template.sh: build a bare Git repository holding a BitBuilder container template whose rootfs is a
# real systemd userland (Debian trixie minbase: systemd 257, systemd-sysv, dbus, iproute2, systemd-networkd
# enabled, busybox-static), for the integration tests that add it to the registry and boot it with systemd-nspawn.
#
# Runs as root. Idempotent: the rootfs is derived from the test host's cached rootfs (integration/testhost/
# prepare.sh, which this script runs first and which builds it when missing), stripped of what a container does
# not need (documentation, manual pages, translations, apt and dpkg caches, logs, per-machine state), and
# committed with fixed author, committer and dates, so the same inputs give the same commit. The result is kept
# in the cache directory, keyed by a hash of this script and of the base rootfs's key; a second or concurrent run
# reuses it. It is built in a temporary directory under a lock and renamed into place, so an interrupted build
# leaves nothing that looks complete, and the next run removes its leftovers.
#
# The repository (branch main) holds:
#   metadata.json                type container
#   config/nspawn-settings.conf  systemd.nspawn(5) settings
#   rootfs/                      the root file system
#
# Git stores no owners, no modes but 0644/0755 on files, no setuid/setgid/sticky bits and no empty
# directories. What the Debian tree has of those is written into rootfs/usr/lib/tmpfiles.d/
# zz-bitbuilder-template.conf (z lines restore modes and owners, d lines recreate the empty directories),
# which systemd-tmpfiles-setup.service applies at every boot.
#
# Usage:
#   container-template.sh           build what is missing, then print the repository's path on the last line of stdout
#   container-template.sh --locate  print the path if it is built (exit 0), exit 3 if not; changes nothing
#   container-template.sh --key     print the cache key (needs the base rootfs's key only)
#
# Environment:
#   BITBUILDER_TEST_CACHE  cache directory (default /var/cache/bitbuilder-test), shared with prepare.sh
#   CONTAINER_TEMPLATE_VARIANT
#                          empty (default) or "userdb": the rootfs also gets systemd's user database
#                          (libnss-systemd, so glibc's getent reads /etc/userdb records, and systemd-userdbd
#                          with userdbctl), installed from the suite's archive with apt-get in a chroot (this
#                          variant needs the network once); kept as its own repository, keyed apart
set -euo pipefail

CACHE_DIR=${BITBUILDER_TEST_CACHE:-/var/cache/bitbuilder-test}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
PREPARE=$HERE/../testhost/prepare.sh

log() { printf 'container-template.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TEMPLATE_KIND=container
# shellcheck source=template-lib.sh
source "$HERE/template-lib.sh"

BASE_KEY=$(bash "$PREPARE" --key)
VARIANT=${CONTAINER_TEMPLATE_VARIANT:-}
case "$VARIANT" in "" | userdb) ;; *) die "unknown CONTAINER_TEMPLATE_VARIANT $VARIANT (want userdb or nothing)" ;; esac
KEY=$({
	echo "base=$BASE_KEY variant=$VARIANT"
	cat "$SELF" "$HERE/template-lib.sh"
} | sha256sum | cut -c1-16)
REPO=$CACHE_DIR/container-template-${VARIANT:+$VARIANT-}$KEY.git

case "${1:-}" in
--key)
	echo "$KEY"
	exit 0
	;;
--locate)
	if [ -d "$REPO" ]; then
		echo "$REPO"
		exit 0
	fi
	exit 3
	;;
"") ;;
*) die "unknown argument ${1} (want --locate, --key or nothing)" ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root"
command -v git >/dev/null || die "git is missing (apt-get install git)"

# strip_rootfs ROOT: remove from a copy of the test host's rootfs what a container template does not need.
strip_rootfs() {
	local root=$1
	# Documentation, manual pages, translations (C.UTF-8 stays: it is in usr/lib/locale), lint data. The
	# copyright files stay, and dpkg is told to skip these paths for packages installed later.
	find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
		"$root"/usr/share/lintian "$root"/usr/share/linda "$root"/usr/share/bug
	cat >"$root/etc/dpkg/dpkg.cfg.d/bitbuilder-nodoc" <<-'EOF'
		# A container template without documentation: packages installed later skip it too.
		path-exclude=/usr/share/doc/*
		path-include=/usr/share/doc/*/copyright
		path-exclude=/usr/share/man/*
		path-exclude=/usr/share/info/*
		path-exclude=/usr/share/locale/*
		path-exclude=/usr/share/lintian/*
	EOF
	# Caches, package indexes, logs and backups: rebuilt or written at run time.
	rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/ldconfig/* \
		"$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/backups/*
	find "$root/var/log" -mindepth 1 ! -type d -delete
	# Run-time file systems: the container manager mounts them (devices, sockets and FIFOs cannot be in Git).
	rm -rf "$root"/dev/* "$root"/run/* "$root"/tmp/* "$root"/var/tmp/* "$root"/proc/* "$root"/sys/*
	# Per-machine identity and state: every instance makes its own.
	: >"$root/etc/machine-id"
	rm -f "$root/etc/hostname" "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed" \
		"$root/var/lib/systemd/credential.secret" "$root/etc/.pwd.lock"
	# Timers that reach for the network or the disks of a machine, not of a container.
	local unit
	for unit in apt-daily.timer apt-daily-upgrade.timer fstrim.timer; do
		chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
	done
	# systemd-container's var-lib-machines.mount (a loop-mounted /var/lib/machines.raw) holds local-fs.target
	# back for about 0.8 s in a container before its condition skips it: a boot takes 0.5 s instead of 1.3 s.
	chroot "$root" systemctl mask var-lib-machines.mount >/dev/null 2>&1
	# The merged-/usr layout wants a relative link (Debian's base-files ships an absolute one).
	ln -sfn ../run "$root/var/run"
	# What the container needs: systemd as init, networkd enabled with the stock host0 DHCP profile.
	local f
	for f in usr/lib/systemd/systemd usr/sbin/init usr/lib/systemd/systemd-networkd \
		usr/lib/systemd/network/80-container-host0.network usr/bin/busybox usr/bin/dbus-daemon usr/bin/ip \
		etc/systemd/system/multi-user.target.wants/systemd-networkd.service; do
		[ -e "$root/$f" ] || die "the template rootfs lacks $f"
	done
}

# install_userdb ROOT: systemd's user database in the tree: nss-systemd (its package adds "systemd" to the
# passwd and group lines of nsswitch.conf) and systemd-userdbd (userdbctl). The suite's archive is the one the
# tree's own apt sources name; the tree's resolv.conf points at a resolver that does not run in a chroot, so
# this machine's is lent to it for the download.
install_userdb() {
	local root=$1
	mv "$root/etc/resolv.conf" "$root/etc/resolv.conf.bitbuilder"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	chroot "$root" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
		libnss-systemd systemd-userdbd >/dev/null
	chroot "$root" apt-get clean
	mv -f "$root/etc/resolv.conf.bitbuilder" "$root/etc/resolv.conf"
	grep -q '^passwd:.*systemd' "$root/etc/nsswitch.conf" || die "nsswitch.conf does not name systemd for passwd"
	[ -x "$root/usr/bin/userdbctl" ] || die "the tree lacks userdbctl"
}

write_template() {
	local tree=$1
	mkdir -p "$tree/config"
	cat >"$tree/metadata.json" <<-'EOF'
		{
		  "template": {
		    "type": "container",
		    "version": "1.0.0",
		    "name": "debian-systemd-container",
		    "description": "A Debian trixie container booting systemd 257, with systemd-networkd asking DHCP on host0."
		  },
		  "requirements": {
		    "systemd_version": ">=257",
		    "kernel": ">=6.0",
		    "features": ["nspawn", "machined"]
		  },
		  "defaults": {
		    "resources": {
		      "cpu": 1,
		      "memory": "256M",
		      "storage": "1G"
		    },
		    "network": {
		      "mode": "private",
		      "management_interface": false
		    }
		  }
		}
	EOF
	cat >"$tree/config/nspawn-settings.conf" <<-'EOF'
		# systemd.nspawn(5) settings of the container, for /run/systemd/nspawn/<machine>.nspawn: a trusted place,
		# where every setting applies (Bind= and Capability= too; next to the tree, network, Bind= and Capability=
		# settings would be ignored). Options on the systemd-nspawn command line win over these; the bridge is
		# the daemon's (--network-bridge=).
		[Exec]
		Boot=yes
		PrivateUsers=pick
		NotifyReady=yes

		[Network]
		Private=yes
		VirtualEthernet=yes

		[Files]
		PrivateUsersOwnership=auto
	EOF
}


build() {
	local tmp start base
	base=$(bash "$PREPARE" --locate)
	[ -d "$base/usr" ] || die "prepare.sh gave no rootfs ($base)"
	start=$(date +%s)
	tmp=$(mktemp -d "$CACHE_DIR/ct-tmp${VARIANT:+-$VARIANT}.XXXXXX")
	log "building the container template from $base in $tmp"
	mkdir "$tmp/tree"
	cp -a "$base" "$tmp/tree/rootfs"
	[ "$VARIANT" != userdb ] || install_userdb "$tmp/tree/rootfs"
	strip_rootfs "$tmp/tree/rootfs"
	restore_list "$base" "$tmp/tree/rootfs" >"$tmp/restore.conf"
	install -D -m 0644 "$tmp/restore.conf" "$tmp/tree/rootfs/usr/lib/tmpfiles.d/zz-bitbuilder-template.conf"
	write_template "$tmp/tree"
	commit_tree "$tmp/tree" "$tmp/repo.git"
	chmod 0755 "$tmp/repo.git"
	mv -T "$tmp/repo.git" "$REPO"
	rm -rf --one-file-system "$tmp"
	log "template repository ready in $(($(date +%s) - start)) s: $(du -sh "$REPO" | cut -f1), commit $(git --git-dir="$REPO" rev-parse main)"
}

mkdir -p "$CACHE_DIR"
# The base rootfs first (prepare.sh takes its own lock).
bash "$PREPARE" >/dev/null
exec 9>"$CACHE_DIR/.container-template${VARIANT:+-$VARIANT}.lock"
if ! flock -n 9; then
	log "waiting for another container-template.sh to finish"
	flock 9
fi
if [ -d "$REPO" ]; then
	log "template repository cached (key $KEY)"
else
	for stale in "$CACHE_DIR"/ct-tmp${VARIANT:+-$VARIANT}.*; do
		[ -e "$stale" ] || continue
		log "removing leftover of an interrupted build: $stale"
		rm -rf --one-file-system "$stale"
	done
	build
fi
echo "$REPO"
