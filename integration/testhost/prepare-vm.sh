#!/bin/bash
# prepare-vm.sh: make this machine able to boot the "vm" variant of the systemd 257 test host, in which tests boot a
# real VM with systemd-vmspawn (under QEMU's software emulation: no KVM, no vsock needed).
#
# Runs as root on Debian 12, after (and through) prepare.sh. Idempotent, like prepare.sh: it builds two things once
# and keeps them in the cache directory, keyed by a hash of what they contain, each made in a temporary directory
# under a lock and renamed into place:
#
#   machine-<gkey>/   a small guest in the layout of a BitBuilder machine template: a Debian trixie minbase with
#                     systemd, systemd-networkd (DHCP on en*/eth*) and linux-image-amd64, as
#                     disk-image/boot/vmlinuz, disk-image/boot/initrd.img (a tiny busybox initrd that mounts the root
#                     systemd-vmspawn --directory shares over virtiofs) and disk-image/rootfs/.
#   vm-rootfs-<key>/  the test host's rootfs (prepare.sh's tree) plus qemu-system-x86, virtiofsd and seabios from
#                     trixie, systemd-vmspawn from Debian sid (trixie does not ship it) in /opt/sd-vmspawn with the
#                     wrapper /usr/local/bin/systemd-vmspawn, and the guest above at /var/lib/bitbuilder-test/machine
#                     (hard links: no extra space). vm-rootfs-<key>.tar.zst is the same tree as a tarball: restore it
#                     in CI under the key `prepare-vm.sh --key` prints and this script unpacks it instead of building
#                     anything (the guest is then only inside the tree, not in machine-<gkey>/).
#
# Usage:
#   prepare-vm.sh            build what is missing, then print the vm rootfs path on the last line of stdout
#   prepare-vm.sh --locate   print the vm rootfs path if it is built (exit 0), exit 3 if not; changes nothing
#   prepare-vm.sh --key      print the cache key
#
# Environment:
#   BITBUILDER_TEST_CACHE  cache directory (default /var/cache/bitbuilder-test)
#   BITBUILDER_MIRROR      Debian mirror (default: the Debian URIs of this machine's own apt configuration)
#   BITBUILDER_PREPARE_SH  prepare.sh to use for the base rootfs (default: the one next to this script)
set -euo pipefail

CACHE_DIR=${BITBUILDER_TEST_CACHE:-/var/cache/bitbuilder-test}
PREPARE_SH=${BITBUILDER_PREPARE_SH:-$(dirname "${BASH_SOURCE[0]}")/prepare.sh}
SUITE=trixie
# Installed into the test host's rootfs from $SUITE.
VM_PACKAGES=(qemu-system-x86 virtiofsd seabios)
# Taken from sid (apt-get download, dpkg -x): systemd-vmspawn and the private library of the same version.
SID_PACKAGES=(systemd-container libsystemd-shared)
# The guest.
GUEST_PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-amd64,busybox-static
# Where the guest appears inside the vm test host (testhost.VMGuestDir).
GUEST_IN_HOST=/var/lib/bitbuilder-test/machine
RECIPE_VERSION=1

log() { printf 'prepare-vm.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$PREPARE_SH" ] || die "prepare.sh not found at $PREPARE_SH (set BITBUILDER_PREPARE_SH)"

# The guest's tiny initrd: systemd-vmspawn --directory boots with "root=root rootfstype=virtiofs rw"; Debian's
# kernel has virtio-pci, FUSE and virtiofs built in, so mounting the root and switching to it is all there is to do.
# (Debian's initramfs-tools initrd cannot mount a virtiofs root; dracut's can, but is 20 times larger and slower.)
guest_init() {
	cat <<'EOF'
#!/bin/sh
# Initrd of the BitBuilder test guest: mount the root the kernel command line names, hand over to its init.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
root= fstype= flags= mode=ro init=/sbin/init
for arg in $(busybox cat /proc/cmdline); do
	case $arg in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=,${arg#rootflags=} ;;
	rw) mode=rw ;;
	ro) mode=ro ;;
	init=*) init=${arg#init=} ;;
	esac
done
if ! busybox mount ${fstype:+-t "$fstype"} -o "$mode$flags" "$root" /root; then
	echo "initrd: cannot mount root=$root rootfstype=$fstype; powering off" >/dev/console
	busybox sleep 5
	busybox poweroff -f
fi
busybox umount /proc /sys
busybox mount --move /dev /root/dev 2>/dev/null || busybox umount /dev
exec busybox switch_root /root "$init"
EOF
}

# prepare_guest DIR: turns a fresh debootstrap tree in DIR/disk-image/rootfs into the template layout. Its text
# is part of the guest's cache key.
prepare_guest() {
	local top=$1 root=$1/disk-image/rootfs boot=$1/disk-image/boot kver mods
	echo bbguest >"$root/etc/hostname"
	: >"$root/etc/machine-id" # empty: systemd makes one at boot
	mkdir -p "$root/etc/systemd/network" "$root/etc/systemd/journald.conf.d"
	printf '%s\n' '[Match]' 'Name=en* eth*' '' '[Network]' 'DHCP=ipv4' 'LinkLocalAddressing=no' 'IPv6AcceptRA=no' \
		>"$root/etc/systemd/network/80-vm.network"
	printf '%s\n' '[Journal]' 'Storage=volatile' >"$root/etc/systemd/journald.conf.d/50-volatile.conf"
	chroot "$root" systemctl enable systemd-networkd.service systemd-networkd.socket >/dev/null 2>&1
	chroot "$root" systemctl set-default multi-user.target >/dev/null 2>&1
	# Under TCG every process costs a second or more (loading libsystemd-shared): mask what a throw-away test VM
	# does not need. Login prompts (getty.target, logind), first-boot and update jobs (the tree is fresh and
	# complete), persistent state (random seed, utmp, journal flush), API file systems and sockets nobody uses,
	# TPM and PCR jobs, timers; all generators; all udev rules but those that load drivers and name and set up
	# network links. This halves the time to a DHCP lease (about 40 s instead of 80 s under TCG).
	local mask=(getty.target systemd-logind.service systemd-user-sessions.service systemd-firstboot.service
		systemd-sysusers.service ldconfig.service systemd-journal-catalog-update.service systemd-hwdb-update.service
		systemd-update-done.service systemd-random-seed.service systemd-update-utmp.service
		systemd-update-utmp-runlevel.service systemd-journal-flush.service systemd-pstore.service
		systemd-binfmt.service proc-sys-fs-binfmt_misc.automount dev-hugepages.mount dev-mqueue.mount
		sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount tmp.mount
		kmod-static-nodes.service modprobe@drm.service modprobe@configfs.service modprobe@fuse.service
		modprobe@efi_pstore.service modprobe@loop.service modprobe@dm_mod.service systemd-modules-load.service
		systemd-sysctl.service systemd-remount-fs.service systemd-tmpfiles-setup-dev-early.service
		systemd-tmpfiles-setup-dev.service systemd-udev-load-credentials.service systemd-network-generator.service
		systemd-networkd-persistent-storage.service systemd-machine-id-commit.service systemd-hibernate-clear.service
		systemd-pcrmachine.service systemd-pcrphase-sysinit.service systemd-pcrphase.service
		systemd-tpm2-setup-early.service systemd-tpm2-setup.service systemd-ask-password-wall.path
		systemd-ask-password-console.path systemd-hostnamed.socket systemd-sysext.socket systemd-creds.socket
		systemd-initctl.socket remote-fs.target systemd-tmpfiles-clean.timer apt-daily.timer
		apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer)
	local u f
	for u in "${mask[@]}"; do
		ln -sfn /dev/null "$root/etc/systemd/system/$u"
	done
	rm -f "$root"/etc/systemd/system/*.wants/getty@*.service "$root"/etc/systemd/system/timers.target.wants/*
	mkdir -p "$root/etc/systemd/system-generators" "$root/etc/udev/rules.d"
	for f in "$root"/usr/lib/systemd/system-generators/*; do
		ln -sfn /dev/null "$root/etc/systemd/system-generators/${f##*/}"
	done
	for f in "$root"/usr/lib/udev/rules.d/*.rules; do
		case ${f##*/} in
		50-udev-default.rules | 73-special-net-names.rules | 75-net-description.rules | 80-drivers.rules | \
			80-net-setup-link.rules | 99-systemd.rules) ;;
		*) ln -sfn /dev/null "$root/etc/udev/rules.d/${f##*/}" ;;
		esac
	done

	# Kernel: only the modules a virtio VM loads (udev's coldplug would otherwise load ahci, watchdogs, kvm, ...).
	kver=$(basename "$(ls -d "$root"/usr/lib/modules/*)")
	mods=$root/usr/lib/modules/$kver/kernel
	rm -rf "$mods/sound" "$mods/arch/x86/kvm"
	find "$mods/drivers" -name '*.ko*' ! -name 'virtio*' ! -name 'net_failover.ko*' -delete
	find "$mods" -depth -type d -empty -delete
	chroot "$root" depmod -a "$kver"
	mkdir -p "$boot"
	mv "$root/boot/vmlinuz-$kver" "$boot/vmlinuz"
	rm -f "$root"/boot/initrd.img* "$root"/boot/System.map-* "$root"/vmlinuz* "$root"/initrd.img*

	# The initrd: busybox and /init, made with the guest's own busybox.
	local ird=$root/tmp/initrd
	mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/root"
	cp "$root/usr/bin/busybox" "$ird/bin/busybox"
	ln -s busybox "$ird/bin/sh"
	guest_init >"$ird/init"
	chmod 0755 "$ird/init"
	chroot "$root" /bin/sh -c 'cd /tmp/initrd && find . | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0' \
		2>/dev/null | gzip -1 >"$boot/initrd.img"
	rm -rf "$ird"

	# Small: no package lists, caches, documentation or locales.
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
		"$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/lib/dpkg/*-old
	printf '%s\n' '{' '  "template": {"type": "machine", "version": "1.0.0", "name": "bitbuilder-test-machine",' \
		'    "description": "Debian trixie minbase with systemd-networkd, booted by systemd-vmspawn --directory --linux --initrd"},' \
		'  "requirements": {"systemd_version": ">=257", "features": ["vmspawn", "virtiofs", "machined"]}' '}' \
		>"$top/metadata.json"
}

# prepare_vm_rootfs ROOT GUEST: adds what runs VMs to a copy of prepare.sh's tree. Its text is part of the cache key.
prepare_vm_rootfs() {
	local root=$1 guest=$2 apt=/tmp/prepare-vm-apt
	local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives" -o Dir::Cache::pkgcache=
		-o Dir::Cache::srcpkgcache= -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root)
	mkdir -p "$root$apt/lists/partial" "$root$apt/archives/partial" "$root$apt/debs" "$root$apt/x"
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$MIRROR" "$SUITE" >"$root$apt/sources.list"
	chroot "$root" apt-get "${opts[@]}" update -qq
	DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get "${opts[@]}" install -y -qq --no-install-recommends \
		"${VM_PACKAGES[@]}" >"$root$apt/install.log" 2>&1 || {
		tail -n 30 "$root$apt/install.log" >&2
		die "apt-get install ${VM_PACKAGES[*]} failed"
	}

	# sid: a separate source list; the packages are only unpacked (dpkg -x), never installed. Valid-Until is
	# not checked: a frozen mirror's sid Release file is "expired" within days.
	printf 'deb [signed-by=%s] %s sid main\n' "$keyring" "$MIRROR" >"$root$apt/sources.list"
	rm -rf "$root$apt/lists"/*
	mkdir -p "$root$apt/lists/partial"
	chroot "$root" apt-get "${opts[@]}" update -qq
	local p pkgs=()
	for p in "${SID_PACKAGES[@]}"; do pkgs+=("$p/sid"); done
	chroot "$root" /bin/sh -c 'cd "$1" && shift && apt-get "$@"' sh "$apt/debs" "${opts[@]}" download -qq "${pkgs[@]}"
	local deb versions=()
	for deb in "$root$apt/debs"/*.deb; do
		dpkg-deb -x "$deb" "$root$apt/x"
		versions+=("$(dpkg-deb -W --showformat='${Package} ${Version}' "$deb")")
	done
	local v1 v2
	v1=$(dpkg-deb -f "$root$apt"/debs/systemd-container_*.deb Version)
	v2=$(dpkg-deb -f "$root$apt"/debs/libsystemd-shared_*.deb Version)
	[ "$v1" = "$v2" ] || die "sid's systemd-container $v1 and libsystemd-shared $v2 differ"
	mkdir -p "$root/opt/sd-vmspawn/bin" "$root/opt/sd-vmspawn/lib"
	cp "$root$apt/x/usr/bin/systemd-vmspawn" "$root/opt/sd-vmspawn/bin/"
	cp "$root$apt"/x/usr/lib/*/systemd/libsystemd-shared-*.so "$root/opt/sd-vmspawn/lib/"
	printf '%s\n' "${versions[@]}" >"$root/opt/sd-vmspawn/VERSIONS"
	printf '%s\n' '#!/bin/sh' '# systemd-vmspawn from Debian sid, with its own libsystemd-shared (prepare-vm.sh).' \
		'LD_LIBRARY_PATH=/opt/sd-vmspawn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec /opt/sd-vmspawn/bin/systemd-vmspawn "$@"' \
		>"$root/usr/local/bin/systemd-vmspawn"
	chmod 0755 "$root/usr/local/bin/systemd-vmspawn"
	rm -rf "${root:?}$apt"
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin

	# The guest, as hard links: the test host's overlay copies a file up before anything writes to it.
	mkdir -p "$root$(dirname "$GUEST_IN_HOST")"
	cp -al "$guest" "$root$GUEST_IN_HOST"

	local tool
	for tool in qemu-system-x86_64 /usr/libexec/virtiofsd; do
		chroot "$root" /bin/sh -c "command -v $tool" >/dev/null || die "vm rootfs lacks $tool"
	done
	[ -f "$root/usr/share/seabios/bios-256k.bin" ] || die "vm rootfs lacks seabios"
	local version
	version=$(chroot "$root" systemd-vmspawn --version) || die "systemd-vmspawn does not run"
	[[ $version == "systemd "* ]] || die "systemd-vmspawn --version says: $version"
}

cache_keys() {
	BASE_KEY=$(bash "$PREPARE_SH" --key)
	GUEST_KEY=$({
		echo "recipe=$RECIPE_VERSION suite=$SUITE packages=$GUEST_PACKAGES"
		declare -f prepare_guest guest_init
	} | sha256sum | cut -c1-16)
	KEY=$({
		echo "recipe=$RECIPE_VERSION base=$BASE_KEY guest=$GUEST_KEY suite=$SUITE packages=${VM_PACKAGES[*]}"
		echo "sid=${SID_PACKAGES[*]} guest_in_host=$GUEST_IN_HOST"
		declare -f prepare_vm_rootfs
	} | sha256sum | cut -c1-16)
}

cache_keys
GUEST=$CACHE_DIR/machine-$GUEST_KEY
ROOTFS=$CACHE_DIR/vm-rootfs-$KEY
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

# machine_mirror prints the Debian mirror of this machine's apt configuration: the first URIs of a deb822 source
# (or URI of a one-line source) whose path ends in /debian.
machine_mirror() {
	if [ -n "${BITBUILDER_MIRROR:-}" ]; then
		echo "${BITBUILDER_MIRROR%/}"
		return
	fi
	local f u
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		u=$(awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f")
		if [ -n "$u" ]; then
			echo "${u%/}"
			return
		fi
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		u=$(sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $2 ~ /^[a-z+]+:\/\/.*\/debian\/?$/ { print $2; exit }')
		if [ -n "$u" ]; then
			echo "${u%/}"
			return
		fi
	done
	die "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list*); set BITBUILDER_MIRROR"
}

remove_tree() {
	local dir=$1 m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	rm -rf --one-file-system "$dir"
}

# use_resolv ROOT: puts the machine's resolv.conf into ROOT for apt-get (the tree's own points into /run);
# restore_resolv ROOT puts the tree's own back.
use_resolv() {
	mv "$1/etc/resolv.conf" "$1/etc/.resolv.conf.prepare-vm" 2>/dev/null || true
	cp -L /etc/resolv.conf "$1/etc/resolv.conf"
}
restore_resolv() {
	rm -f "$1/etc/resolv.conf"
	if [ -e "$1/etc/.resolv.conf.prepare-vm" ] || [ -L "$1/etc/.resolv.conf.prepare-vm" ]; then
		mv "$1/etc/.resolv.conf.prepare-vm" "$1/etc/resolv.conf"
	fi
}

build_guest() {
	local tmp start
	tmp=$(mktemp -d "$CACHE_DIR/vmtmp.XXXXXX")
	start=$(date +%s)
	mkdir -p "$tmp/disk-image"
	log "debootstrap $SUITE guest (minbase, $GUEST_PACKAGES) into $tmp"
	debootstrap --variant=minbase --include="$GUEST_PACKAGES" "$SUITE" "$tmp/disk-image/rootfs" "$MIRROR" \
		>"$tmp.log" 2>&1 || {
		tail -n 30 "$tmp.log" >&2
		die "debootstrap failed (log: $tmp.log)"
	}
	rm -f "$tmp.log"
	prepare_guest "$tmp"
	chmod 0755 "$tmp"
	mv -T "$tmp" "$GUEST"
	log "guest ready in $(($(date +%s) - start)) s: $(du -sh "$GUEST" | cut -f1)"
}

build_rootfs() {
	local base=$1 tmp start
	if [ ! -f "$TARBALL" ] && [ ! -d "$GUEST" ]; then
		build_guest
	fi
	tmp=$(mktemp -d "$CACHE_DIR/vmtmp.XXXXXX")
	start=$(date +%s)
	if [ -f "$TARBALL" ]; then
		log "unpacking $TARBALL"
		zstd -dc -T0 "$TARBALL" | tar -x --numeric-owner --xattrs --xattrs-include='*' -C "$tmp"
	else
		log "copying $base and adding ${VM_PACKAGES[*]} and sid's systemd-vmspawn"
		cp -a "$base/." "$tmp/"
		use_resolv "$tmp"
		prepare_vm_rootfs "$tmp" "$GUEST"
		restore_resolv "$tmp"
		log "writing $TARBALL"
		chmod 0755 "$tmp"
		tar -C "$tmp" -c --numeric-owner --xattrs --xattrs-include='*' . | zstd -q -T0 -3 -o "$TARBALL.tmp"
		mv -f "$TARBALL.tmp" "$TARBALL"
	fi
	chmod 0755 "$tmp"
	mv -T "$tmp" "$ROOTFS"
	log "vm rootfs ready in $(($(date +%s) - start)) s: $(chroot "$ROOTFS" systemd-vmspawn --version | head -n1)"
}

# The base rootfs first: prepare.sh takes its own lock (and only ever removes its own tmp.* leftovers).
BASE=$(bash "$PREPARE_SH" | tail -n1)
[ -d "$BASE" ] || die "prepare.sh did not build the base rootfs"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.vm.lock"
if ! flock -n 9; then
	log "waiting for another prepare-vm.sh to finish"
	flock 9
fi
if [ -d "$ROOTFS" ]; then
	log "vm rootfs cached (key $KEY)"
else
	for stale in "$CACHE_DIR"/vmtmp.*; do
		[ -e "$stale" ] || continue
		log "removing leftover of an interrupted build: $stale"
		if [ -d "$stale" ]; then remove_tree "$stale"; else rm -f "$stale"; fi
	done
	rm -f "$TARBALL.tmp"
	MIRROR=$(machine_mirror)
	build_rootfs "$BASE"
fi
echo "$ROOTFS"
