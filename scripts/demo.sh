#!/usr/bin/env bash
# One command: the proxy + demo upstream on loopback with a dev PKI in certs/out/.
# Extra arguments go to `gatehouse demo` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --quiet -p gatehouse -- demo "$@"
