#!/bin/sh
# Creates the tenant's home with homectl from the materialized template.
# $1: the materialized template directory, $2: the user name (overrides userName of the record).
set -eu
tpl=${1:?usage: home-provision.sh TEMPLATE_DIR USER}
user=${2:?usage: home-provision.sh TEMPLATE_DIR USER}
homectl create "$user" --identity="$tpl/config/user-record.json" --skel="$tpl/home-skeleton" --storage=directory
