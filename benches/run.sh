#!/usr/bin/env bash
# Gatehouse vs NGINX, same machine, same load, one run. See benches/README.md.
#   benches/run.sh                    # all scenarios, 10 s each, 64 connections
#   DURATION=20s ROUNDS=3 benches/run.sh
#   SKIP_NGINX=1 benches/run.sh       # Gatehouse only
# Needs: the NGINX peer harness (PEERS_DIR, default ../shared/peers/nginx next to this repo),
# oha (cargo install oha --locked), nginx + njs + lua modules (apt), node (stub JWT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers/nginx}
export WORK=${WORK:-/tmp/peers-nginx}
export DURATION=${DURATION:-10s} CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-1}
export RESULTS=${RESULTS:-$WORK/results.tsv}
GH_URL=https://localhost:28443
log() { echo "[gatehouse-bench] $*" >&2; }

[[ -x $PEERS_DIR/bench.sh ]] || { log "NGINX peer harness not found in $PEERS_DIR (set PEERS_DIR)"; exit 1; }
./scripts/setup.sh
command -v oha >/dev/null || [[ -x $HOME/.cargo/bin/oha ]] || cargo install oha --locked --version 1.16.0
export OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
if [[ ! -x /usr/sbin/nginx || ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx libnginx-mod-http-js libnginx-mod-http-lua lua-cjson >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

log "building release"
cargo build --release --quiet -p gatehouse -p gatehouse-benches --bins

mkdir -p "$WORK"
run_start=$( (wc -l < "$RESULTS") 2>/dev/null || echo 0)
GH_PID=""
cleanup() {
  [[ -n $GH_PID ]] && kill "$GH_PID" 2>/dev/null || true
  "$PEERS_DIR/bench.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "starting the NGINX backend (upstream :18080, introspection stub :18081) and peer (:18443)"
KEEP=1 "$PEERS_DIR/bench.sh" start >/dev/null
CERT_DIR=$WORK/certs
export C=$CERT_DIR

log "starting Gatehouse on :28443"
CERT_DIR=$CERT_DIR BENCH_INTROSPECT_SECRET=gateway-secret GATEHOUSE_LOG=warn \
  target/release/gatehouse run -c benches/nginx-harness.yaml > "$WORK/gatehouse.log" 2>&1 &
GH_PID=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:29100/readyz >/dev/null && break; sleep 0.1; done

log "functional check of Gatehouse with the harness's own expectations"
# The harness expects a failed handshake or 400 without a client certificate (NGINX's
# behaviour); Gatehouse completes the handshake and answers 403 with a reason, by design.
START_BACKEND=0 START_PEER=0 PEER_NAME=gatehouse PASSTHRU_URL=$GH_URL/passthrough/bench PROXY_URL=$GH_URL/api/bench \
  HANDSHAKE_HOSTPORT=127.0.0.1:28443 "$PEERS_DIR/bench.sh" check > "$WORK/gatehouse-check.out" 2>&1 || true
cat "$WORK/gatehouse-check.out"
if grep -P '^check\tFAIL' "$WORK/gatehouse-check.out" | grep -v 'got 403 want 400|000' | grep -q .; then
  log "functional check failed"; exit 1
fi

ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
nginx_pids() { local m; m=$(cat "$WORK/peer/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
sum_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo $t; }
CPU_LOG=$WORK/proxy-cpu.tsv; : > "$CPU_LOG"

# one scenario against one proxy; records the proxy's CPU (% of one core) next to the row
load() { # peer scenario env...
  local peer=$1 sc=$2; shift 2
  local pids t0 t1 w0 w1
  if [[ $peer == nginx ]]; then pids=$(nginx_pids); else pids=$GH_PID; fi
  # shellcheck disable=SC2086
  t0=$(sum_ticks $pids); w0=$(date +%s.%N)
  env "$@" SCENARIOS="$sc" PEER_NAME="$peer" "$PEERS_DIR/bench.sh" load > "$WORK/load-$peer-$sc.out" 2>&1 || { cat "$WORK/load-$peer-$sc.out"; return 1; }
  # shellcheck disable=SC2086
  t1=$(sum_ticks $pids); w1=$(date +%s.%N)
  python3 -c "import sys; print(f'{sys.argv[1]}\t{sys.argv[2]}\t{(int(sys.argv[4])-int(sys.argv[3]))/(float(sys.argv[6])-float(sys.argv[5])):.0f}')" \
    "$peer" "$sc" "$t0" "$t1" "$w0" "$w1" >> "$CPU_LOG"
}

GH_ENV=(START_BACKEND=0 START_PEER=0 PEER_PIDS="$GH_PID" PASSTHRU_URL=$GH_URL/passthrough/bench PROXY_URL=$GH_URL/api/bench
        HANDSHAKE_URL=$GH_URL/passthrough/bench HANDSHAKE_HOSTPORT=127.0.0.1:28443)
NGINX_ENV=(START_BACKEND=0 START_PEER=0)
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS"
  for sc in passthru auth handshake; do
    if [[ ${SKIP_NGINX:-0} != 1 ]]; then
      load nginx "$sc" "${NGINX_ENV[@]}"
      [[ $sc == auth ]] && { load nginx auth_lua "${NGINX_ENV[@]}"; load nginx auth_lua_lru "${NGINX_ENV[@]}"; }
    fi
    load gatehouse "$sc" "${GH_ENV[@]}"
  done
done

# (d) cache-miss burst: 100 concurrent first uses of one fresh token
burst() { # peer url
  local before after tok
  tok="burst-$(date +%s%N)"
  before=$(wc -l < "$WORK/backend/stub-access.log")
  "$OHA" --no-tui -n 100 -c 100 --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" \
    -H "Authorization: Bearer $tok" "$2" > "$WORK/burst-$1.out" 2>&1
  sleep 0.5
  after=$(wc -l < "$WORK/backend/stub-access.log")
  printf '%s\t%s\n' "$1" "$((after - before))"
}
{ burst gatehouse "$GH_URL/api/bench"; [[ ${SKIP_NGINX:-0} == 1 ]] || burst nginx https://localhost:18443/api/bench; } > "$WORK/burst.tsv"

# (e) many distinct tokens: bytes per cached entry and lookups/s with 1k vs 1M entries
target/release/cache_memory "${BIG_CACHE:-1000000}" > "$WORK/cache-memory.tsv"

GH_RSS=$(awk '/VmRSS/{print $2}' "/proc/$GH_PID/status")
python3 benches/summary.py "$RESULTS" "$run_start" "$CPU_LOG" "$WORK/burst.tsv" "$WORK/cache-memory.tsv" "$GH_RSS"
