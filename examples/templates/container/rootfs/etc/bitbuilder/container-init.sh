#!/usr/bin/busybox sh
# Runs once when the container starts. Tenants put their workload here (or replace the init with systemd).
/usr/bin/busybox mkdir -p /run/bitbuilder
/usr/bin/busybox date -u +%FT%TZ > /run/bitbuilder/started
