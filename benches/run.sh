#!/usr/bin/env bash
# Gatehouse vs NGINX, same machine, same load, one run. See benches/README.md.
#   benches/run.sh                    # all scenarios, 10 s each, 64 connections
#   DURATION=20s ROUNDS=3 benches/run.sh
#   SKIP_NGINX=1 benches/run.sh       # Gatehouse only
#   ONLY_E=1 ROUNDS=3 benches/run.sh  # only (e), many distinct tokens
#   E_STORE=moka benches/run.sh       # (e) with the default token store (else compact)
#   GH_B=/path/to/gatehouse-before [GH_B_CONFIG=its-config.yaml] benches/run.sh
#                                     # same-run A/B: a second Gatehouse binary ("gatehouse-b",
#                                     # e.g. built from an earlier commit) loaded in every round
#                                     # right after target/release/gatehouse
#   SKIP_E=1 benches/run.sh           # without (e) (the many-token runs take minutes)
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

log "building release (with Pingora's vendored OpenSSL 3.6, as the container image: see README)"
OPENSSL_NO_VENDOR=0 cargo build --release --quiet -p gatehouse -p gatehouse-benches --bins

mkdir -p "$WORK"
run_start=$( (wc -l < "$RESULTS") 2>/dev/null || echo 0)
GH_PID=""
GHB_PID=""
MANY_PIDS=()
cleanup() {
  [[ -n $GH_PID ]] && kill "$GH_PID" 2>/dev/null || true
  [[ -n $GHB_PID ]] && kill "$GHB_PID" 2>/dev/null || true
  [[ ${#MANY_PIDS[@]} -gt 0 ]] && kill "${MANY_PIDS[@]}" 2>/dev/null || true
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
GHB_URL=https://localhost:28446
if [[ -n ${GH_B:-} ]]; then
  log "starting Gatehouse B ($GH_B) on :28446"
  # GH_B_CONFIG: B's own copy of the harness config, for a B that predates a config key
  sed -e "s/127.0.0.1:28443/127.0.0.1:28446/" -e "s/127.0.0.1:29100/127.0.0.1:29103/" \
    "${GH_B_CONFIG:-benches/nginx-harness.yaml}" > "$WORK/gatehouse-b.yaml"
  CERT_DIR=$CERT_DIR BENCH_INTROSPECT_SECRET=gateway-secret GATEHOUSE_LOG=warn \
    "$GH_B" run -c "$WORK/gatehouse-b.yaml" > "$WORK/gatehouse-b.log" 2>&1 &
  GHB_PID=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:29103/readyz >/dev/null && break; sleep 0.1; done
  curl -sf http://127.0.0.1:29103/readyz >/dev/null \
    || { log "Gatehouse B did not start: $(cat "$WORK/gatehouse-b.log")"; exit 1; }
fi

log "functional check of Gatehouse with the harness's own expectations"
# The harness expects a failed handshake or 400 without a client certificate (NGINX's
# behaviour); Gatehouse completes the handshake and answers 403 with a reason, by design.
START_BACKEND=0 START_PEER=0 PEER_NAME=gatehouse PASSTHRU_URL=$GH_URL/passthrough/bench PROXY_URL=$GH_URL/api/bench \
  HANDSHAKE_HOSTPORT=127.0.0.1:28443 "$PEERS_DIR/bench.sh" check > "$WORK/gatehouse-check.out" 2>&1 || true
cat "$WORK/gatehouse-check.out"
if grep -P '^check\tFAIL' "$WORK/gatehouse-check.out" | grep -v 'got 403 want 400|000' | grep -q .; then
  log "functional check failed"; exit 1
fi

nginx_pids() { local m; m=$(cat "$WORK/peer/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
# CPU ticks of the given processes, one read of each /proc/<pid>/stat: "all user"
sum_ticks() {
  local t=0 u=0 p a b
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    t=$((t + a + b)); u=$((u + a))
  done
  echo "$t $u"
}
CPU_LOG=$WORK/proxy-cpu.tsv; : > "$CPU_LOG"

# one scenario against one proxy; records the proxy's CPU (% of one core, and the user-space
# part of it) next to the row
load() { # peer scenario env...
  local peer=$1 sc=$2; shift 2
  local pids t0 t1 u0 u1 w0 w1
  case $peer in
    nginx) pids=$(nginx_pids) ;;
    gatehouse-b) pids=$GHB_PID ;;
    *) pids=$GH_PID ;;
  esac
  # shellcheck disable=SC2086
  read -r t0 u0 < <(sum_ticks $pids); w0=$(date +%s.%N)
  env "$@" SCENARIOS="$sc" PEER_NAME="$peer" "$PEERS_DIR/bench.sh" load > "$WORK/load-$peer-$sc.out" 2>&1 || { cat "$WORK/load-$peer-$sc.out"; return 1; }
  # shellcheck disable=SC2086
  read -r t1 u1 < <(sum_ticks $pids); w1=$(date +%s.%N)
  python3 -c "import sys; w=float(sys.argv[6])-float(sys.argv[5]); print(f'{sys.argv[1]}\t{sys.argv[2]}\t{(int(sys.argv[4])-int(sys.argv[3]))/w:.0f}\t{(int(sys.argv[8])-int(sys.argv[7]))/w:.0f}')" \
    "$peer" "$sc" "$t0" "$t1" "$w0" "$w1" "$u0" "$u1" >> "$CPU_LOG"
}

GH_ENV=(START_BACKEND=0 START_PEER=0 PEER_PIDS="$GH_PID" PASSTHRU_URL=$GH_URL/passthrough/bench PROXY_URL=$GH_URL/api/bench
        HANDSHAKE_URL=$GH_URL/passthrough/bench HANDSHAKE_HOSTPORT=127.0.0.1:28443)
GHB_ENV=(START_BACKEND=0 START_PEER=0 PEER_PIDS="$GHB_PID" PASSTHRU_URL=$GHB_URL/passthrough/bench PROXY_URL=$GHB_URL/api/bench
         HANDSHAKE_URL=$GHB_URL/passthrough/bench HANDSHAKE_HOSTPORT=127.0.0.1:28446)
NGINX_ENV=(START_BACKEND=0 START_PEER=0)
for round in $(seq 1 "$ROUNDS"); do
  [[ ${ONLY_E:-0} == 1 ]] && break
  log "round $round/$ROUNDS"
  for sc in passthru auth handshake; do
    if [[ ${SKIP_NGINX:-0} != 1 ]]; then
      load nginx "$sc" "${NGINX_ENV[@]}"
      [[ $sc == auth ]] && { load nginx auth_lua "${NGINX_ENV[@]}"; load nginx auth_lua_lru "${NGINX_ENV[@]}"; }
    fi
    load gatehouse "$sc" "${GH_ENV[@]}"
    [[ -n $GHB_PID ]] && load gatehouse-b "$sc" "${GHB_ENV[@]}"
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
if [[ ${ONLY_E:-0} == 1 ]]; then : > "$WORK/burst.tsv"; else
  { burst gatehouse "$GH_URL/api/bench"; [[ ${SKIP_NGINX:-0} == 1 ]] || burst nginx https://localhost:18443/api/bench; } > "$WORK/burst.tsv"
fi

GH_RSS=$(awk '/VmRSS/{print $2}' "/proc/$GH_PID/status")
[[ -n $GHB_PID ]] && { kill "$GHB_PID" 2>/dev/null; wait "$GHB_PID" 2>/dev/null || true; GHB_PID=""; }

# (e) many distinct tokens, end to end: two fresh Gatehouses side by side (cache TTL long
# enough to keep what is primed), one filled with 1k tokens and one with BIG_CACHE tokens
# through the real chain (each introspected once at the stub), RSS before and after; then
# interleaved rounds of load with tokens drawn at random from each one's set (tokenload:
# oha sends one fixed header).
kill "$GH_PID" 2>/dev/null; wait "$GH_PID" 2>/dev/null || true
GH_PID=""
E_STORE=${E_STORE:-compact}
start_many() { # n port admin_port
  sed -e "s/max_ttl: 30s.*/max_ttl: 1h\n      store: $E_STORE/" -e "s/127.0.0.1:28443/127.0.0.1:$2/" -e "s/127.0.0.1:29100/127.0.0.1:$3/" \
    benches/nginx-harness.yaml > "$WORK/gatehouse-many-$1.yaml"
  CERT_DIR=$CERT_DIR BENCH_INTROSPECT_SECRET=gateway-secret GATEHOUSE_LOG=warn \
    target/release/gatehouse run -c "$WORK/gatehouse-many-$1.yaml" >> "$WORK/gatehouse.log" 2>&1 &
  MANY_PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$3/readyz" >/dev/null && break; sleep 0.1; done
}
prime_many() { # n port pid -> "rss_growth_bytes_per_token"
  local rss0 rss1
  rss0=$(awk '/VmRSS/{print $2}' "/proc/$3/status")
  log "(e) priming $1 tokens"
  CERT_DIR=$CERT_DIR TOKEN_PREFIX="many-$1" target/release/tokenload prime "https://localhost:$2/api/bench" "$1" > "$WORK/prime-$1.tsv"
  rss1=$(awk '/VmRSS/{print $2}' "/proc/$3/status")
  echo $(( (rss1 - rss0) * 1024 / $1 ))
}
BIG=${BIG_CACHE:-1000000}
if [[ ${SKIP_E:-0} == 1 ]]; then
  : > "$WORK/many-tokens.tsv"; : > "$WORK/cache-memory.tsv"
  python3 benches/summary.py "$RESULTS" "$run_start" "$CPU_LOG" "$WORK/burst.tsv" "$WORK/cache-memory.tsv" "$GH_RSS" "$WORK/many-tokens.tsv"
  exit 0
fi
start_many 1000 28444 29101
start_many "$BIG" 28445 29102
PER_SMALL=$(prime_many 1000 28444 "${MANY_PIDS[0]}")
PER_BIG=$(prime_many "$BIG" 28445 "${MANY_PIDS[1]}")
JWT_LEN=$(wc -c < "$WORK/stub.jwt")
{
  for round in $(seq 1 "$ROUNDS"); do
    for nport in "1000:28444:$PER_SMALL" "$BIG:28445:$PER_BIG"; do
      IFS=: read -r n port per <<< "$nport"
      printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$(cat "$WORK/prime-$n.tsv")" \
        "$(CERT_DIR=$CERT_DIR TOKEN_PREFIX="many-$n" CONNS=$CONNS target/release/tokenload load "https://localhost:$port/api/bench" "$n" "${DURATION%s}")" \
        "$per" "$JWT_LEN"
    done
  done
} > "$WORK/many-tokens.tsv"
kill "${MANY_PIDS[@]}" 2>/dev/null || true

# (e) in isolation: bytes per cached entry and raw lookups/s over a primed cache
{
  for store in moka compact; do
    target/release/cache_memory "$BIG" all "$store"
    target/release/cache_memory "$BIG" hot "$store"
  done
} > "$WORK/cache-memory.tsv"
echo "$E_STORE" > "$WORK/many-store.txt"

python3 benches/summary.py "$RESULTS" "$run_start" "$CPU_LOG" "$WORK/burst.tsv" "$WORK/cache-memory.tsv" "$GH_RSS" "$WORK/many-tokens.tsv"
