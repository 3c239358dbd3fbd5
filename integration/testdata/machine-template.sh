#!/bin/bash
# machine-template.sh: build a bare Git repository holding a BitBuilder machine template whose disk image is the
# small Debian trixie guest that integration/testhost/prepare-vm.sh caches (systemd 257, systemd-networkd asking
# DHCP on en*/eth*, Debian's kernel and a busybox initrd that mounts the root systemd-vmspawn shares over
# virtiofs), for the integration tests that add it to the registry and boot it with systemd-vmspawn under QEMU's
# software emulation (TCG).
#
# Runs as root. Idempotent: the guest is taken from the vm test host's cached tree (prepare-vm.sh, which this
# script runs first and which builds it when missing; the guest is in that tree at /var/lib/bitbuilder-test/machine
# whether prepare-vm.sh built it or unpacked it from its tarball), stripped of what a template must not carry
# (run-time trees, logs, caches, per-machine identity), and committed with fixed author, committer and dates, so
# the same inputs give the same commit. The result is kept in the cache directory, keyed by a hash of this script,
# of prepare-vm.sh's key (which hashes in the guest's key) and of the systemd-boot binary put on the ESP; a second
# or concurrent run reuses it. It is built in a temporary directory under a lock and renamed into place, so an
# interrupted build leaves nothing that looks complete, and the next run removes its leftovers.
#
# The repository (branch main) holds:
#   metadata.json                     type machine
#   config/vm-config.yaml             how systemd-vmspawn runs it: SeaBIOS, no KVM, no TPM, one vCPU, 512M
#   config/cloud-init/{user-data,meta-data}  NoCloud data (the guest has no cloud-init: they are only passed)
#   disk-image/boot/                  XBOOTLDR: vmlinuz, initrd.img, loader/entries/bitbuilder.conf (Type #1)
#   disk-image/efi/                   ESP: systemd-boot (this machine's systemd-boot-efi) and loader/loader.conf
#   disk-image/rootfs/                the root file system
#
# The daemon boots the VM with --linux= and --initrd= from disk-image/boot (direct kernel boot, which SeaBIOS
# needs); the ESP is unused there. It is in the template because the validator refuses a machine template
# without one (rules F51-F53), whatever its firmware.
#
# Git stores no owners, no modes but 0644/0755 on files, no setuid/setgid/sticky bits and no empty directories.
# What the guest has of those is written into rootfs/usr/lib/tmpfiles.d/zz-bitbuilder-template.conf (z lines
# restore modes and owners, d lines recreate the empty directories), which the guest's
# systemd-tmpfiles-setup.service applies at every boot (before systemd-networkd, which wants its
# /var/lib/systemd/network owned by systemd-network).
#
# Usage:
#   machine-template.sh           build what is missing, then print the repository's path on the last line of stdout
#   machine-template.sh --locate  print the path if it is built (exit 0), exit 3 if not; changes nothing
#   machine-template.sh --key     print the cache key
#
# Environment:
#   BITBUILDER_TEST_CACHE  cache directory (default /var/cache/bitbuilder-test), shared with prepare-vm.sh
#   BITBUILDER_SDBOOT      systemd-boot EFI binary for the ESP (default /usr/lib/systemd/boot/efi/systemd-bootx64.efi,
#                          Debian's systemd-boot-efi package)
set -euo pipefail

CACHE_DIR=${BITBUILDER_TEST_CACHE:-/var/cache/bitbuilder-test}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
PREPARE_VM=$HERE/../testhost/prepare-vm.sh
SDBOOT=${BITBUILDER_SDBOOT:-/usr/lib/systemd/boot/efi/systemd-bootx64.efi}
# Where prepare-vm.sh puts the guest inside the vm test host's tree (testhost.VMGuestDir).
GUEST_IN_HOST=var/lib/bitbuilder-test/machine

log() { printf 'machine-template.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TEMPLATE_KIND=machine
# shellcheck source=template-lib.sh
source "$HERE/template-lib.sh"

VM_KEY=$(bash "$PREPARE_VM" --key)
SDBOOT_SUM=none
if [ -f "$SDBOOT" ]; then
	SDBOOT_SUM=$(sha256sum <"$SDBOOT" | cut -c1-64)
fi
KEY=$({
	echo "vm=$VM_KEY sdboot=$SDBOOT_SUM"
	cat "$SELF" "$HERE/template-lib.sh"
} | sha256sum | cut -c1-16)
REPO=$CACHE_DIR/machine-template-$KEY.git

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

# strip_rootfs ROOT: remove from a copy of the guest's root what a machine template must not carry.
strip_rootfs() {
	local root=$1
	# Caches, package indexes, logs and backups: rebuilt or written at run time.
	rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/ldconfig/* \
		"$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/backups/*
	find "$root/var/log" -mindepth 1 ! -type d -delete
	# Run-time file systems: the kernel, the initrd and systemd mount them (devices, sockets and FIFOs cannot be
	# in Git). /boot is a mount point for XBOOTLDR: the kernel's config file there is not needed.
	rm -rf "$root"/dev/* "$root"/run/* "$root"/tmp/* "$root"/var/tmp/* "$root"/proc/* "$root"/sys/* "$root"/boot/*
	# Per-machine identity and state: every instance makes its own (the hostname comes from the machine's name
	# or stays the distribution's default).
	: >"$root/etc/machine-id"
	rm -f "$root/etc/hostname" "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed" \
		"$root/var/lib/systemd/credential.secret" "$root/etc/.pwd.lock"
	# The merged-/usr layout wants a relative link (Debian's base-files ships an absolute one).
	ln -sfn ../run "$root/var/run"
	# What the guest needs to boot to a DHCP lease.
	local f
	for f in usr/lib/systemd/systemd usr/sbin/init usr/lib/systemd/systemd-networkd usr/bin/busybox \
		etc/systemd/network/80-vm.network etc/systemd/system/multi-user.target.wants/systemd-networkd.service; do
		[ -e "$root/$f" ] || [ -L "$root/$f" ] || die "the guest's root lacks $f"
	done
	[ -n "$(ls "$root"/usr/lib/modules/)" ] || die "the guest's root has no kernel modules"
}


# write_boot TREE: the boot loader side of the disk image. XBOOTLDR (disk-image/boot, which holds the guest's
# vmlinuz and initrd.img) gets a Type #1 entry for them, the ESP (disk-image/efi) systemd-boot and a loader.conf
# that picks the entry. The command line is the one systemd-vmspawn --directory gives the kernel.
write_boot() {
	local tree=$1 esp=$1/disk-image/efi xbl=$1/disk-image/boot
	mkdir -p "$xbl/loader/entries" "$esp/loader" "$esp/EFI/BOOT" "$esp/EFI/systemd"
	cat >"$xbl/loader/entries/bitbuilder.conf" <<-'EOF'
		# Boot Loader Specification Type #1 entry; paths are relative to this partition (XBOOTLDR). The root is the
		# directory systemd-vmspawn shares over virtiofs with the tag "root"; the busybox initrd mounts it.
		title      Debian trixie (BitBuilder test machine)
		linux      /vmlinuz
		initrd     /initrd.img
		options    root=root rootfstype=virtiofs rw console=ttyS0
	EOF
	cat >"$esp/loader/loader.conf" <<-'EOF'
		# systemd-boot configuration (loader.conf(5)); the entry lives on XBOOTLDR (disk-image/boot).
		default bitbuilder.conf
		timeout 0
		editor no
	EOF
	install -m 0644 "$SDBOOT" "$esp/EFI/BOOT/BOOTX64.EFI"
	install -m 0644 "$SDBOOT" "$esp/EFI/systemd/systemd-bootx64.efi"
}

write_template() {
	local tree=$1
	mkdir -p "$tree/config/cloud-init"
	cat >"$tree/metadata.json" <<-'EOF'
		{
		  "template": {
		    "type": "machine",
		    "version": "1.0.0",
		    "name": "debian-systemd-vm",
		    "description": "A Debian trixie VM booting systemd 257 (direct kernel boot, root over virtiofs), with systemd-networkd asking DHCP on its NIC."
		  },
		  "requirements": {
		    "systemd_version": ">=257",
		    "kernel": ">=6.0",
		    "features": ["vmspawn", "virtiofs", "machined"]
		  },
		  "defaults": {
		    "resources": {
		      "cpu": 1,
		      "memory": "512M",
		      "storage": "1G"
		    },
		    "network": {
		      "mode": "private",
		      "management_interface": false
		    }
		  }
		}
	EOF
	cat >"$tree/config/vm-config.yaml" <<-'EOF'
		# systemd-vmspawn settings of the VM; the daemon turns them into command line options. SeaBIOS with direct
		# kernel boot (disk-image/boot/vmlinuz and initrd.img) and software emulation: the test machines have no
		# usable KVM, no OVMF and no TPM. Under TCG every process in the guest costs a second: one vCPU and 512M
		# are plenty for a guest that boots to systemd-networkd.
		firmware: bios
		cpus: 1
		memory: 512M
		kvm: no
		tpm: no
		secure_boot: no
		network_bridge: br-tenant-%i
		console: read-only
	EOF
	cat >"$tree/config/cloud-init/meta-data" <<-'EOF'
		instance-id: bitbuilder-test-machine
		local-hostname: bbguest
	EOF
	cat >"$tree/config/cloud-init/user-data" <<-'EOF'
		#cloud-config
		# NoCloud user data, passed to the VM as a credential; the test guest has no cloud-init and ignores it.
		hostname: bbguest
		ssh_pwauth: false
	EOF
}


build() {
	local tmp start vmroot guest
	vmroot=$(bash "$PREPARE_VM" --locate)
	guest=$vmroot/$GUEST_IN_HOST
	[ -f "$guest/disk-image/boot/vmlinuz" ] && [ -f "$guest/disk-image/boot/initrd.img" ] &&
		[ -d "$guest/disk-image/rootfs/usr" ] || die "prepare-vm.sh gave no guest at $guest"
	[ -f "$SDBOOT" ] || die "no systemd-boot at $SDBOOT for the template's ESP (apt-get install systemd-boot-efi; scripts/install-test-deps.sh installs it)"
	start=$(date +%s)
	tmp=$(mktemp -d "$CACHE_DIR/mt-tmp.XXXXXX")
	log "building the machine template from $guest in $tmp"
	mkdir -p "$tmp/tree/disk-image"
	cp -a "$guest/disk-image/rootfs" "$tmp/tree/disk-image/rootfs"
	cp -a "$guest/disk-image/boot" "$tmp/tree/disk-image/boot"
	strip_rootfs "$tmp/tree/disk-image/rootfs"
	restore_list "$guest/disk-image/rootfs" "$tmp/tree/disk-image/rootfs" >"$tmp/restore.conf"
	install -D -m 0644 "$tmp/restore.conf" "$tmp/tree/disk-image/rootfs/usr/lib/tmpfiles.d/zz-bitbuilder-template.conf"
	write_boot "$tmp/tree"
	write_template "$tmp/tree"
	commit_tree "$tmp/tree" "$tmp/repo.git"
	chmod 0755 "$tmp/repo.git"
	mv -T "$tmp/repo.git" "$REPO"
	rm -rf --one-file-system "$tmp"
	log "template repository ready in $(($(date +%s) - start)) s: $(du -sh "$REPO" | cut -f1), commit $(git --git-dir="$REPO" rev-parse main)"
}

mkdir -p "$CACHE_DIR"
# The vm test host's tree and its guest first (prepare-vm.sh takes its own lock).
bash "$PREPARE_VM" >/dev/null
exec 9>"$CACHE_DIR/.machine-template.lock"
if ! flock -n 9; then
	log "waiting for another machine-template.sh to finish"
	flock 9
fi
if [ -d "$REPO" ]; then
	log "template repository cached (key $KEY)"
else
	for stale in "$CACHE_DIR"/mt-tmp.*; do
		[ -e "$stale" ] || continue
		log "removing leftover of an interrupted build: $stale"
		rm -rf --one-file-system "$stale"
	done
	build
fi
echo "$REPO"
