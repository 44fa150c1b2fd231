#!/usr/bin/env bash
# User-space instructions per request, Gatehouse binary A vs binary B, under valgrind's
# callgrind: counts instructions, not time, so the figures repeat on a busy 2-core machine
# where req/s moves ±10 % between rounds. Each binary serves N1 and then N2 requests of a
# scenario (fresh process each, `oha -c 4`, keep-alive) behind the NGINX harness's backend;
# (Ir(N2) - Ir(N1)) / (N2 - N1) is the per-request cost with start-up, the 4 handshakes and
# shutdown cancelled out.
#   benches/callgrind.sh BIN_A BIN_B               # both scenarios, N1=500, N2=2500
#   N1=1000 N2=5000 SCENARIOS="passthru" benches/callgrind.sh target/release/gatehouse /tmp/gh-old
#   CONFIG_B=old-harness.yaml benches/callgrind.sh A B   # B predates a key of the harness config
# Needs what benches/run.sh needs (the NGINX peer harness for its backend and certificates,
# oha) and valgrind (apt).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?binary A}; B=${2:?binary B}
PEERS_DIR=${PEERS_DIR:-$(pwd)/../shared/peers/nginx}
export WORK=${WORK:-/tmp/peers-nginx}
N1=${N1:-500}; N2=${N2:-2500}
SCENARIOS=${SCENARIOS:-"passthru auth"}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
[[ -x $PEERS_DIR/bench.sh ]] || { echo "NGINX peer harness not found in $PEERS_DIR" >&2; exit 1; }
KEEP=1 START_PEER=0 "$PEERS_DIR/bench.sh" start >/dev/null
trap '"$PEERS_DIR/bench.sh" stop >/dev/null 2>&1 || true' EXIT
C=$WORK/certs
OUT=$WORK/callgrind; mkdir -p "$OUT"

# instructions for one process lifetime serving n requests of scenario sc
instructions() { # bin sc n tag config
  local bin=$1 sc=$2 n=$3 tag=$4 config=$5 url pid
  case $sc in
    passthru) url=https://localhost:28443/passthrough/bench ;;
    auth) url=https://localhost:28443/api/bench ;;
  esac
  rm -f "$OUT/$tag.out"
  CERT_DIR=$C BENCH_INTROSPECT_SECRET=gateway-secret GATEHOUSE_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.out" "$bin" run -c "$config" \
    > "$OUT/$tag.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:29100/readyz >/dev/null && break; sleep 0.1; done
  # the cached token: one miss first, as in benches/run.sh's warm-up
  local auth=(-H "Authorization: Bearer bench-opaque-token-0001")
  "$OHA" --no-tui -n 4 -c 1 --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" "${auth[@]}" "$url" >/dev/null
  "$OHA" --no-tui -n "$n" -c 4 --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" "${auth[@]}" "$url" \
    > "$OUT/$tag.oha" 2>&1
  grep -qP "Success rate:\s+100" "$OUT/$tag.oha" || { echo "callgrind: $tag: not every request succeeded" >&2; cat "$OUT/$tag.oha" >&2; }
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # the process's total (all threads): the "summary:" lines of every part file
  cat "$OUT/$tag.out"* | awk '/^summary:/{s+=$2} END{print s}'
}

printf 'scenario\tbinary\tIr(%s)\tIr(%s)\tinstructions per request\n' "$N1" "$N2"
for sc in $SCENARIOS; do
  for side in A B; do
    bin=$A; config=benches/nginx-harness.yaml
    [[ $side == B ]] && { bin=$B; config=${CONFIG_B:-benches/nginx-harness.yaml}; }
    i1=$(instructions "$bin" "$sc" "$N1" "$sc-$side-$N1" "$config")
    i2=$(instructions "$bin" "$sc" "$N2" "$sc-$side-$N2" "$config")
    printf '%s\t%s (%s)\t%s\t%s\t%s\n' "$sc" "$side" "$bin" "$i1" "$i2" $(( (i2 - i1) / (N2 - N1) ))
  done
done
