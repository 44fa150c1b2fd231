#!/usr/bin/env bash
# One command: every check and test Gatehouse has (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== rustfmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== dev PKI script"
pki=$(mktemp -d); OUT=$pki certs/gen-certs.sh >/dev/null 2>&1
openssl verify -CAfile "$pki/root-ca.pem" -untrusted "$pki/intermediate-ca.pem" "$pki/partner-a.crt" "$pki/partner-b.crt" "$pki/server.crt"
rm -rf "$pki"
echo "== npm dependencies of the oidc-provider interop suite"
(cd interop/oidc-provider && npm ci --no-audit --no-fund --silent)
echo "== tests"; cargo test --workspace --quiet
echo "== fuzzing: every target for 15 s (long runs: scripts/fuzz.sh 3600)"; ./scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
echo "== deploy manifests (kubernetes-validate, yamllint, hadolint, dashboard JSON)"
./scripts/validate-deploy.sh
echo "== all checks passed"
