#!/usr/bin/env bash
# Installs the system packages Gatehouse's build and tests need, if they are missing.
# Debian/Ubuntu: cmake (Pingora's zlib-ng), pkg-config + libssl-dev (we link the system
# OpenSSL), openssl (CLI, used by certs/gen-certs.sh). Pass extra package names as arguments.
set -euo pipefail
want=(cmake pkg-config libssl-dev openssl "$@")
missing=()
# Node.js + npm run the oidc-provider interop suite; a node from elsewhere (nvm, nodesource) is fine
command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
