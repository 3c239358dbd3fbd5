#!/bin/sh
# Creates a home with homectl from the materialized template, by hand, on a machine that runs systemd-homed.
# bitbuilderd does not run this script: it provisions the users of a tenant record (bbctl tenant user add) into
# the tenant's machines itself, as userdb records with a copy of home-skeleton/ and the record's SSH keys.
# $1: the materialized template directory, $2: the user name (overrides userName of the record).
set -eu
tpl=${1:?usage: home-provision.sh TEMPLATE_DIR USER}
user=${2:?usage: home-provision.sh TEMPLATE_DIR USER}
homectl create "$user" --identity="$tpl/config/user-record.json" --skel="$tpl/home-skeleton" --storage=directory
