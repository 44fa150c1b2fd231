#!/usr/bin/env bash
# Smoke test of the oidc-provider interop harness: throwaway PKI, server on a free loopback port,
# then curl through mTLS client_credentials, introspection (JSON and RFC 9701 JWT), RFC 9068 JWT
# access tokens and revocation. Exits non-zero on the first failed assertion; prints PASS last.
#   bash interop/oidc-provider/smoke.sh        (needs node >= 20, npm, curl, openssl)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RESOURCE=${RESOURCE:-https://api.example.com}
GATEWAY_SECRET=gw-$(openssl rand -hex 24)

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
fail() { echo "FAIL: $*" >&2; echo "--- server stderr:" >&2; cat "$WORK/server.err" >&2 2>/dev/null || true; exit 1; }
ok() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; ok "$1"; }

# jget PATH <json  — dotted path lookup (keys may contain '#'); objects printed as JSON
jget() {
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v;try{v=process.argv[1].split(".").reduce((o,k)=>o==null?o:o[k],JSON.parse(s))}catch{v=undefined}process.stdout.write(v==null?"":typeof v==="object"?JSON.stringify(v):String(v))})' "$1"
}
# jwt_part N JWT — base64url-decoded header (0) or payload (1)
jwt_part() { node -e 'process.stdout.write(Buffer.from(process.argv[1].split(".")[+process.argv[2]]||"","base64url"))' "$2" "$1"; }
# jwt_verify JWT JWKS_JSON — verifies the JWS signature with the key named by its kid
jwt_verify() {
  node -e '
    const crypto = require("node:crypto");
    const [jwt, jwks] = process.argv.slice(1);
    const [h, p, s] = jwt.split(".");
    const hdr = JSON.parse(Buffer.from(h, "base64url"));
    const jwk = JSON.parse(jwks).keys.find((k) => k.kid === hdr.kid);
    if (!jwk) { console.error("no key for kid"); process.exit(1); }
    const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
    const algs = { ES256: [{ key, dsaEncoding: "ieee-p1363" }], RS256: [{ key }],
      PS256: [{ key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }] };
    if (!algs[hdr.alg]) { console.error("unexpected alg " + hdr.alg); process.exit(1); }
    const good = crypto.verify("sha256", Buffer.from(`${h}.${p}`), algs[hdr.alg][0], Buffer.from(s, "base64url"));
    process.exit(good ? 0 : 1);' "$1" "$2"
}
is_jwt() { [[ "$1" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]]; }

# --- deps, PKI, server ------------------------------------------------------------------------
if [ ! -d "$HERE/node_modules/oidc-provider" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null) || fail "npm ci"
fi
PKI="$WORK/pki"
OUT="$PKI" "$REPO/certs/gen-certs.sh" >"$WORK/pki.log" 2>&1 || { cat "$WORK/pki.log" >&2; fail "gen-certs.sh"; }
PA_SUBJECT=$(openssl x509 -in "$PKI/partner-a.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
PB_SUBJECT=$(openssl x509 -in "$PKI/partner-b.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
eq "partner-a subject (RFC 4514, from openssl)" "$PA_SUBJECT" "CN=partner-a,O=partner-a Ltd"

PORT=0 TLS_CERT="$PKI/server.pem" TLS_KEY="$PKI/server.key" CLIENT_CA="$PKI/root-ca.pem" \
  GATEWAY_SECRET="$GATEWAY_SECRET" PARTNER_A_SUBJECT="$PA_SUBJECT" PARTNER_B_SUBJECT="$PB_SUBJECT" \
  RESOURCE="$RESOURCE" node "$HERE/server.mjs" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q '^READY ' "$WORK/server.out" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited before READY"
  sleep 0.1
done
grep -q '^READY ' "$WORK/server.out" || fail "no READY line within 10 s"
ISSUER=$(sed -n 's/^READY //p' "$WORK/server.out")
echo "server: $ISSUER (pid $SERVER_PID)"

CURL=(curl -sS --max-time 10 --cacert "$PKI/root-ca.pem")
A=(--cert "$PKI/partner-a.pem" --key "$PKI/partner-a.key")
B=(--cert "$PKI/partner-b.pem" --key "$PKI/partner-b.key")
GW=(-u "gateway:$GATEWAY_SECRET")

DISCO=$("${CURL[@]}" "$ISSUER/.well-known/openid-configuration")
eq "discovery issuer" "$(jget issuer <<<"$DISCO")" "$ISSUER"
eq "token_endpoint" "$(jget token_endpoint <<<"$DISCO")" "$ISSUER/token"
eq "introspection_endpoint" "$(jget introspection_endpoint <<<"$DISCO")" "$ISSUER/token/introspection"
eq "revocation_endpoint" "$(jget revocation_endpoint <<<"$DISCO")" "$ISSUER/token/revocation"
eq "jwks_uri" "$(jget jwks_uri <<<"$DISCO")" "$ISSUER/jwks"
JWKS=$("${CURL[@]}" "$ISSUER/jwks")

# x5t#S256 of partner-a's leaf certificate (RFC 8705 §3.1)
X5T=$(openssl x509 -in "$PKI/partner-a.pem" -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n')

# --- (a) client_credentials with tls_client_auth -> opaque, certificate-bound ------------------
TOK=$("${CURL[@]}" "${A[@]}" -d grant_type=client_credentials -d client_id=partner-a -d scope=transactions "$ISSUER/token")
AT=$(jget access_token <<<"$TOK")
[ -n "$AT" ] || fail "(a) no access_token: $TOK"
is_jwt "$AT" && fail "(a) token without resource should be opaque, got a JWT"
ok "(a) partner-a got an opaque token over mTLS"
eq "(a) token_type" "$(jget token_type <<<"$TOK")" "Bearer"
eq "(a) expires_in" "$(jget expires_in <<<"$TOK")" "300"
eq "(a) scope" "$(jget scope <<<"$TOK")" "transactions"

# negative: partner-b's certificate cannot authenticate as partner-a; no certificate at all fails
CODE=$("${CURL[@]}" "${B[@]}" -o "$WORK/neg.json" -w '%{http_code}' -d grant_type=client_credentials -d client_id=partner-a "$ISSUER/token")
eq "(a-) partner-b cert as partner-a -> 401" "$CODE" "401"
eq "(a-) error" "$(jget error <"$WORK/neg.json")" "invalid_client"
CODE=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -d grant_type=client_credentials -d client_id=partner-a "$ISSUER/token")
eq "(a-) no client cert -> 401" "$CODE" "401"
TOKB=$("${CURL[@]}" "${B[@]}" -d grant_type=client_credentials -d client_id=partner-b -d scope=transactions "$ISSUER/token")
[ -n "$(jget access_token <<<"$TOKB")" ] || fail "(a) partner-b: $TOKB"
ok "(a) partner-b got a token with its own certificate"

# --- (b) introspection as gateway, JSON ---------------------------------------------------------
INTRO=$("${CURL[@]}" "${GW[@]}" -H 'Accept: application/json' -d "token=$AT" "$ISSUER/token/introspection")
eq "(b) active" "$(jget active <<<"$INTRO")" "true"
eq "(b) client_id" "$(jget client_id <<<"$INTRO")" "partner-a"
eq "(b) scope" "$(jget scope <<<"$INTRO")" "transactions"
eq "(b) cnf.x5t#S256 == base64url(sha256(DER(partner-a leaf)))" "$(jget 'cnf.x5t#S256' <<<"$INTRO")" "$X5T"
CODE=$("${CURL[@]}" -u "gateway:wrong-secret" -o /dev/null -w '%{http_code}' -d "token=$AT" "$ISSUER/token/introspection")
eq "(b-) wrong gateway secret -> 401" "$CODE" "401"

# --- (c) introspection as gateway, RFC 9701 JWT response ----------------------------------------
"${CURL[@]}" "${GW[@]}" -H 'Accept: application/token-introspection+jwt' -D "$WORK/c.hdr" -o "$WORK/c.body" \
  -d "token=$AT" "$ISSUER/token/introspection"
CTYPE=$(tr -d '\r' <"$WORK/c.hdr" | sed -n 's/^[Cc]ontent-[Tt]ype: *//p' | cut -d';' -f1)
eq "(c) content-type" "$CTYPE" "application/token-introspection+jwt"
IJWT=$(cat "$WORK/c.body")
is_jwt "$IJWT" || fail "(c) body is not a compact JWS: $IJWT"
ok "(c) body is a JWT"
eq "(c) header typ" "$(jwt_part 0 "$IJWT" | jget typ)" "token-introspection+jwt"
eq "(c) iss" "$(jwt_part 1 "$IJWT" | jget iss)" "$ISSUER"
eq "(c) aud" "$(jwt_part 1 "$IJWT" | jget aud)" "gateway"
eq "(c) token_introspection.active" "$(jwt_part 1 "$IJWT" | jget token_introspection.active)" "true"
eq "(c) token_introspection.cnf.x5t#S256" "$(jwt_part 1 "$IJWT" | jget 'token_introspection.cnf.x5t#S256')" "$X5T"
jwt_verify "$IJWT" "$JWKS" || fail "(c) signature does not verify against $ISSUER/jwks"
ok "(c) signature verifies against jwks_uri"

# --- (d) resource indicator -> RFC 9068 JWT access token ----------------------------------------
TOKJ=$("${CURL[@]}" "${A[@]}" -d grant_type=client_credentials -d client_id=partner-a -d scope=transactions \
  --data-urlencode "resource=$RESOURCE" "$ISSUER/token")
JAT=$(jget access_token <<<"$TOKJ")
is_jwt "$JAT" || fail "(d) resource token is not a JWT: $TOKJ"
ok "(d) token with resource=$RESOURCE is a JWT"
eq "(d) header typ" "$(jwt_part 0 "$JAT" | jget typ)" "at+jwt"
eq "(d) aud" "$(jwt_part 1 "$JAT" | jget aud)" "$RESOURCE"
eq "(d) iss" "$(jwt_part 1 "$JAT" | jget iss)" "$ISSUER"
eq "(d) client_id" "$(jwt_part 1 "$JAT" | jget client_id)" "partner-a"
eq "(d) scope" "$(jwt_part 1 "$JAT" | jget scope)" "transactions"
eq "(d) cnf.x5t#S256" "$(jwt_part 1 "$JAT" | jget 'cnf.x5t#S256')" "$X5T"
jwt_verify "$JAT" "$JWKS" || fail "(d) signature does not verify against $ISSUER/jwks"
ok "(d) signature verifies against jwks_uri"
CODE=$("${CURL[@]}" "${A[@]}" -o /dev/null -w '%{http_code}' -d grant_type=client_credentials -d client_id=partner-a \
  -d resource=https://unknown.example.com "$ISSUER/token")
eq "(d-) unknown resource -> 400" "$CODE" "400"

# --- (e) revocation -----------------------------------------------------------------------------
# RFC 7009 §2.1: the AS refuses to revoke a token issued to another client, so the gateway can't.
CODE=$("${CURL[@]}" "${GW[@]}" -o "$WORK/e.json" -w '%{http_code}' -d "token=$AT" "$ISSUER/token/revocation")
eq "(e-) gateway revoking partner-a's token -> 400" "$CODE" "400"
eq "(e-) error" "$(jget error <"$WORK/e.json")" "invalid_request"
CODE=$("${CURL[@]}" "${A[@]}" -o /dev/null -w '%{http_code}' -d client_id=partner-a -d "token=$AT" -d token_type_hint=access_token "$ISSUER/token/revocation")
eq "(e) partner-a revokes its token -> 200" "$CODE" "200"
INTRO=$("${CURL[@]}" "${GW[@]}" -d "token=$AT" "$ISSUER/token/introspection")
eq "(e) introspection after revocation: active" "$(jget active <<<"$INTRO")" "false"
INTRO=$("${CURL[@]}" "${GW[@]}" -d "token=$(jget access_token <<<"$TOKB")" "$ISSUER/token/introspection")
eq "(e) partner-b's token still active" "$(jget active <<<"$INTRO")" "true"

# --- stdout contract and SIGTERM ----------------------------------------------------------------
kill -TERM "$SERVER_PID"
RC=0; wait "$SERVER_PID" || RC=$?
SERVER_PID=
eq "server exit status after SIGTERM" "$RC" "0"
eq "server stdout is exactly the READY line" "$(cat "$WORK/server.out")" "READY $ISSUER"
grep -qF "$GATEWAY_SECRET" "$WORK/server.err" && fail "gateway secret appears in server stderr"
ok "no secret in server stderr"

echo "$PASSED passed, 0 failed"
echo PASS
