"""Prints the side-by-side table of one benches/run.sh run (median over rounds)."""
import collections
import os
import statistics
import sys

res, start, cpu_log, burst, mem, rss, many = sys.argv[1:8]
rows = [l.rstrip("\n").split("\t") for l in open(res).readlines()[int(start):]
        if l.strip() and not l.startswith("date")]
by = collections.defaultdict(list)
for r in rows:
    by[(r[1], r[2])].append(r)
scmap = {"passthru": "passthru_mtls", "auth": "auth_cnf", "auth_lua": "auth_cnf_lua",
         "auth_lua_lru": "auth_cnf_lua_lru", "handshake": "handshake_full"}
cpu = collections.defaultdict(list)   # % of a core, all of the proxy's CPU
ucpu = collections.defaultdict(list)  # % of a core in user space (absent in older logs)
for l in open(cpu_log):
    f = l.rstrip("\n").split("\t")
    cpu[(f[0], scmap.get(f[1], f[1]))].append(float(f[2]))
    ucpu[(f[0], scmap.get(f[1], f[1]))].append(float(f[3]) if len(f) > 3 else float("nan"))


def med(rs, i):
    v = [float(r[i]) for r in rs if r[i] not in ("-", "")]
    return statistics.median(v) if v else float("nan")


best_nginx = {"passthru_mtls": "passthru_mtls", "auth_cnf": "auth_cnf_lua_lru",
              "handshake_full": "handshake_full"}
print()


def cpu_us(peer, sc, table=cpu):
    """Median over rounds of the proxy's CPU time per request, µs (the rounds' load rows
    and CPU readings were recorded in the same order)."""
    pairs = zip(by.get((peer, sc), []), table.get((peer, sc), []))
    v = [pct / 100 / float(r[6]) * 1e6 for r, pct in pairs if float(r[6]) > 0]
    return statistics.median(v) if v else float("nan")


def split_us(peer, sc):
    """'user + kernel' µs per request: where the CPU goes (the kernel part is mostly the
    loopback TCP path, the user part the proxy's own work and TLS)."""
    u, t = cpu_us(peer, sc, ucpu), cpu_us(peer, sc)
    return "-" if u != u else f"{u:.1f} + {t - u:.1f}"


print("| scenario | proxy | req/s | p50 ms | p99 ms | proxy CPU % of a core | proxy CPU µs per request | user + kernel µs | success | Gatehouse / NGINX |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for sc in ["passthru_mtls", "auth_cnf", "auth_cnf_lua", "auth_cnf_lua_lru", "handshake_full"]:
    for peer in ["nginx", "gatehouse", "gatehouse-b"]:
        rs = by.get((peer, sc))
        if not rs:
            continue
        rps = med(rs, 6)
        ratio = ""
        ref = ("nginx", best_nginx.get(sc, sc))
        if peer.startswith("gatehouse") and ref in by:
            ratio = (f"{rps / med(by[ref], 6):.2f}x req/s, p99 {med(rs, 8):.2f} vs {med(by[ref], 8):.2f} ms,"
                     f" CPU per request {cpu_us(peer, sc):.1f} vs {cpu_us(*ref):.1f} µs (vs {ref[1]})")
        if peer == "gatehouse-b" and ("gatehouse", sc) in by:
            a = by[("gatehouse", sc)]
            ratio += (f"; A/B: gatehouse {med(a, 6) / rps:.3f}x the req/s of gatehouse-b,"
                      f" CPU per request {cpu_us('gatehouse', sc):.1f} vs {cpu_us(peer, sc):.1f} µs")
        c = cpu.get((peer, sc))
        cpu_s = f"{statistics.median(c):.0f}" if c else "-"
        print(f"| {sc} | {peer} | {rps:.0f} | {med(rs, 7):.2f} | {med(rs, 8):.2f} | {cpu_s} | {cpu_us(peer, sc):.1f} | {split_us(peer, sc)} | {rs[-1][9]} | {ratio} |")
if "gatehouse-b" in {p for p, _ in by}:
    print("\n(gatehouse = target/release/gatehouse, gatehouse-b = $GH_B, loaded right after it in every round)")
print()
print("cache-miss burst (100 concurrent first uses of one fresh token): introspection calls")
for l in open(burst):
    p, n = l.split()
    print(f"  {p}: {n}")
print()
if os.path.getsize(many) == 0:
    print(f"Gatehouse RSS at the end of the run: {int(rss) / 1024:.1f} MiB ((e) skipped)")
    sys.exit(0)
store_file = os.path.join(os.path.dirname(many), "many-store.txt")
store = open(store_file).read().strip() if os.path.exists(store_file) else "moka"
print(f"(e) many distinct tokens through the full chain, cache.store: {store} (tokenload,")
print("    random token per request; medians of the interleaved rounds):")
print()
print("| cached tokens | prime req/s (each a miss) | req/s (rounds) | p50 ms | p99 ms | non-200 | RSS growth per cached token | beyond the JWT | req/s vs 1k |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
runs = collections.OrderedDict()
for l in open(many):
    f = l.rstrip("\n").split("\t")
    # n, prime(mode n reqs secs rps p50 p99 non200), load(same), bytes, jwt
    runs.setdefault(f[0], []).append(f)
base = None
for n, fs in runs.items():
    prime = fs[0][1:9]
    loads = [f[9:17] for f in fs]
    per, jwt = int(fs[0][17]), int(fs[0][18])
    rps = statistics.median(float(x[4]) for x in loads)
    base = base or rps
    p50 = statistics.median(float(x[5]) for x in loads)
    p99 = statistics.median(float(x[6]) for x in loads)
    bad = int(prime[7]) + sum(int(x[7]) for x in loads)
    each = " / ".join(f"{float(x[4]):.0f}" for x in loads)
    print(f"| {int(n):,} | {float(prime[4]):.0f} | {rps:.0f} ({each}) | {p50:.2f} | {p99:.2f} | {bad} | {per} | {per - jwt} | {rps / base:.2f}x |")
print()
print("token cache memory (target/release/cache_memory):")
for l in open(mem):
    print("  " + l.rstrip())
print(f"\nGatehouse RSS at the end of the run: {int(rss) / 1024:.1f} MiB")
