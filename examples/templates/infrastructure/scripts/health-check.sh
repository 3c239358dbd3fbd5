#!/bin/sh
# Health check run inside the infrastructure VM: the Varlink endpoint answers.
set -eu
exec varlinkctl info /run/bitbuilder/io.bitbuilder.Infra >/dev/null
