#!/bin/bash
# boot.sh NAME LOWER STATE [NSPAWN-ARGS...]: boots one test host. The testhost package runs it as
# `unshare -m --propagation private bash boot.sh ...`, so every mount made here stays in this private mount namespace
# and disappears with the container. The caller has created the cgroup nspawn-NAME at the root of the cgroup2
# hierarchy and the directories STATE/{upper,work,root}.
set -euo pipefail
name=$1 lower=$2 state=$3
shift 3

mount --make-rprivate /
# systemd 257 wants a pure cgroup2 hierarchy at /sys/fs/cgroup (the host may have a hybrid layout).
umount -R /sys/fs/cgroup 2>/dev/null || umount -l /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Our own cgroup: nspawn --keep-unit makes it the container's, so two hosts never share one payload cgroup.
echo $$ >"/sys/fs/cgroup/nspawn-$name/cgroup.procs"
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
# A copy-on-write view of the cached rootfs: writes go to STATE/upper, the cache stays untouched.
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$state/upper,workdir=$state/work" "$state/root"

# --console=read-only streams the console to our stdout as it comes (passive only flushes it at exit).
exec systemd-nspawn --quiet --register=no --keep-unit --boot --console=read-only --private-network \
	--directory="$state/root" --machine="$name" "$@"
