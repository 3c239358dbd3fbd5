#!/bin/sh
# Provisioning hook run by the daemon on the host after materializing the infrastructure tree.
# $1: the materialized rootfs, $2: the tenant name.
set -eu
rootfs=${1:?usage: provision.sh ROOTFS TENANT}
tenant=${2:?usage: provision.sh ROOTFS TENANT}
sed -i "s/^tenant: .*/tenant: \"$tenant\"/" "$rootfs/etc/bitbuilder/infra-config.yaml"
