#!/usr/bin/env bash
# Installs what BitBuilder's tests need on a fresh Debian 12 machine, as root: the host
# packages the tests call, and the cached systemd 257 test host (integration/testhost) with
# its "vm" variant.
# Idempotent: a second run installs nothing and reuses the cached root filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "install-test-deps.sh: run as root (the tests create network namespaces and boot a systemd test host)" >&2
	exit 1
fi

# Tools the tests run on the host itself (zsh and fish check the completion scripts bbctl
# generates; dbus-daemon serves a private bus to the host prober tests; systemd-boot-efi gives
# the machine template's ESP its systemd-boot; e2fsprogs' mkfs.ext4 builds the extension disk images).
packages=(git jq iproute2 busybox-static util-linux dbus zsh fish systemd-boot-efi e2fsprogs)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-test-deps.sh: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel settings the product ships (packaging/sysctl.d): many nested systemd instances need more
# inotify instances than the default 128 per user.
sysctl -q -p packaging/sysctl.d/50-bitbuilder.conf

# The systemd 257 test host, and its "vm" variant (QEMU, virtiofsd and systemd-vmspawn, plus a small guest) in
# which tests boot VMs; prepare-vm.sh runs prepare.sh first.
bash integration/testhost/prepare.sh >/dev/null
bash integration/testhost/prepare-vm.sh >/dev/null
# The machine template the VM tests add and boot (a bare Git repository of prepare-vm.sh's guest).
bash integration/testdata/machine-template.sh >/dev/null

# The container template the integration tests add and boot (a bare Git repository derived from
# the test host's rootfs, cached next to it).
bash integration/testdata/container-template.sh >/dev/null
# Its variant with systemd's user database (libnss-systemd, systemd-userdbd) for the users tests: installed into
# the tree with apt-get from the suite's archive, the one step of the test setup besides debootstrap that needs
# the network; cached like the others.
bash integration/testdata/userdb-template.sh >/dev/null
