#!/usr/bin/env bash
# Installs the system packages Gatehouse's build and tests need, if they are missing.
# Debian/Ubuntu: cmake (Pingora's zlib-ng), pkg-config + libssl-dev (we link the system
# OpenSSL), openssl (CLI, used by certs/gen-certs.sh), patch (Gatehouse's Pingora patches).
# Pass extra package names as arguments. Last, it materialises the patched Pingora crates
# (scripts/pingora-patches.sh): every cargo command needs them.
set -euo pipefail
want=(cmake pkg-config libssl-dev openssl prometheus patch "$@")
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
  # packages like prometheus ship a service: don't start it (policy-rc.d 101 = "not now")
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $had_policy = 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi
command -v cargo >/dev/null || { echo "setup: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
# the patched Pingora crates [patch.crates-io] points at (patches/README.md)
"$(dirname "$0")/pingora-patches.sh"
