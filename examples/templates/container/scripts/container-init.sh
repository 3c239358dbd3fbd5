#!/bin/sh
# Provisioning hook run by the daemon on the host after materializing the container tree.
# $1: the materialized rootfs. It only checks that the artifacts arrived.
set -eu
rootfs=${1:?usage: container-init.sh ROOTFS}
test -x "$rootfs/usr/bin/busybox" || { echo "busybox missing in $rootfs" >&2; exit 1; }
test -x "$rootfs/usr/sbin/init" || { echo "init missing in $rootfs" >&2; exit 1; }
