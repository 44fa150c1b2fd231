#!/usr/bin/env bash
# Soak: a bounded load through the full chain (mTLS + phantom token + cnf + claims) with a
# mix of valid requests, rotating tokens (new cache entries all the time) and invalid
# requests (no token, no certificate). Prints resident memory over time (start, end, max)
# and any unexpected 5xx. Loopback only. Uses the same NGINX backend/stub as benches/run.sh.
#   benches/soak.sh                  # 10 minutes
#   SOAK=120 benches/soak.sh         # 2 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-$(pwd)/../shared/peers/nginx}
export WORK=${WORK:-/tmp/peers-nginx}
SOAK=${SOAK:-600}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $PEERS_DIR/bench.sh ]] || { echo "NGINX peer harness not found in $PEERS_DIR" >&2; exit 1; }
./scripts/pingora-patches.sh   # the patched engine, as every build
OPENSSL_NO_VENDOR=0 cargo build --release --quiet -p gatehouse   # as benches/run.sh and the image
KEEP=1 START_PEER=0 "$PEERS_DIR/bench.sh" start >/dev/null
C=$WORK/certs
CERT_DIR=$C BENCH_INTROSPECT_SECRET=gateway-secret GATEHOUSE_LOG=warn \
  target/release/gatehouse run -c benches/nginx-harness.yaml > "$WORK/soak-gatehouse.log" 2>&1 &
GH=$!
trap 'kill $GH 2>/dev/null; "$PEERS_DIR/bench.sh" stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:29100/readyz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' "/proc/$GH/status"; }
URL=https://localhost:28443/api/soak
CC=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key")
echo "t_s	rss_kib	cache_entries"
start_rss=$(rss); max_rss=$start_rss
# valid traffic on one cached token, at a fixed rate so the other loads get CPU too
"$OHA" --no-tui --output-format json -z "${SOAK}s" -c 16 -q 2000 "${CC[@]}" -H "Authorization: Bearer soak-token" "$URL" > "$WORK/soak-valid.json" 2>&1 &
V=$!
# invalid traffic: no token (401) and no client certificate (403)
"$OHA" --no-tui --output-format json -z "${SOAK}s" -c 4 -q 200 "${CC[@]}" "$URL" > "$WORK/soak-notoken.json" 2>&1 &
N=$!
"$OHA" --no-tui --output-format json -z "${SOAK}s" -c 2 -q 20 --cacert "$C/ca.pem" "$URL" > "$WORK/soak-nocert.json" 2>&1 &
X=$!
t0=$(date +%s); i=0; : > "$WORK/soak-rotating.codes"; ROT=()
while (( $(date +%s) - t0 < SOAK )); do
  # rotating tokens: 200 new tokens every 2 s, each introspected once then cached
  for j in $(seq 1 200); do echo "rot-$i-$j"; done | while read -r tok; do
    curl -s -o /dev/null -w '%{http_code}\n' "${CC[@]}" -H "Authorization: Bearer $tok" "$URL" || true
  done >> "$WORK/soak-rotating.codes" &
  ROT+=($!)
  i=$((i+1)); sleep 2
  r=$(rss); (( r > max_rss )) && max_rss=$r
  if (( i % 15 == 0 )); then
    printf '%s\t%s\t%s\n' "$(( $(date +%s) - t0 ))" "$r" "$(curl -s http://127.0.0.1:29100/metrics | awk '/^gatehouse_token_cache_entries/{print $2}')"
  fi
done
wait $V $N $X 2>/dev/null || true
# only the load generators: a bare `wait` would also wait for Gatehouse itself
wait "${ROT[@]}" 2>/dev/null || true
end_rss=$(rss)
python3 - "$WORK" "$start_rss" "$end_rss" "$max_rss" <<'PY'
import json, sys, collections
work, s, e, m = sys.argv[1], *map(int, sys.argv[2:5])
def load(name):
    try:
        return json.load(open(f"{work}/{name}"))
    except Exception as ex:
        return {"summary": {"requestsPerSec": 0}, "statusCodeDistribution": {}, "error": str(ex)}
for name, expect in [("soak-valid.json", "200"), ("soak-notoken.json", "401"), ("soak-nocert.json", "403")]:
    d = load(name)
    codes = d.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if k != expect}
    print(f"{name}: {d['summary']['requestsPerSec']:.0f} req/s, codes {codes}, unexpected {bad or 'none'}")
rot = collections.Counter(open(f"{work}/soak-rotating.codes").read().split())
print(f"rotating tokens: {dict(rot)}")
print(f"RSS start {s/1024:.1f} MiB, end {e/1024:.1f} MiB, max {m/1024:.1f} MiB")
fivexx = sum(v for d in ["soak-valid.json", "soak-notoken.json", "soak-nocert.json"]
             for k, v in load(d).get("statusCodeDistribution", {}).items() if k.startswith("5"))
fivexx += sum(v for k, v in rot.items() if k.startswith("5"))
print(f"unexpected 5xx: {fivexx}")
sys.exit(1 if fivexx else 0)
PY
