#!/bin/bash
# userdb-template.sh: the container template of container-template.sh with systemd's user database in its rootfs
# (libnss-systemd and systemd-userdbd), for the tests of users provisioned as userdb records. Same usage and
# output as container-template.sh.
set -euo pipefail
CONTAINER_TEMPLATE_VARIANT=userdb exec bash "$(dirname "${BASH_SOURCE[0]}")/container-template.sh" "$@"
