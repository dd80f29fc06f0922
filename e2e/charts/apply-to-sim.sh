#!/usr/bin/env bash
# `make chart-sim`: apply the three charts, rendered by the real Helm engine, to the cluster
# simulator with kubectl, the way `helm install` would send them, and read every object
# back. A second apply must change nothing. The simulator starts empty; cert-manager's real
# CRDs (e2e/cluster-sim/crds) and the two namespaces are created first, as the guide's
# prerequisites would have (the simulator may already serve cert-manager's CRDs).
#
# Environment: BIN_DIR (target/debug), PYTHON (.venv/bin/python), KUBECTL (kubectl).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/debug}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
KUBECTL=${KUBECTL:-kubectl}

[[ -x $BIN_DIR/cluster-sim ]] || { echo "chart-sim: $BIN_DIR/cluster-sim not built" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chart-sim.XXXXXX")
export KUBECONFIG="$WORK/kubeconfig"
SIM_PID=

cleanup() {
  local rc=$?
  if [[ -n $SIM_PID ]]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi
  if ((rc != 0)) && [[ -s $WORK/sim.log ]]; then tail -n 30 "$WORK/sim.log" >&2; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

"$BIN_DIR/cluster-sim" serve --topology empty --kubeconfig "$KUBECONFIG" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
deadline=$((SECONDS + 60))
until [[ -s $KUBECONFIG ]]; do
  kill -0 "$SIM_PID" 2>/dev/null || { echo "chart-sim: cluster-sim exited" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "chart-sim: no kubeconfig after 60s" >&2; exit 1; }
  read -r -t 0.1 <> <(:) || true
done

render() { # render CHART FILE [VALUES_JSON]
  "$PYTHON" "$ROOT/e2e/charts/render.py" "$1" "$1" linkerd "${3:-{\}}" >"$WORK/$2"
}

render trust-rotation-operator-crds crds.yaml
render linkerd-cert-manager pki.yaml
# Monitoring objects need prometheus-operator's CRDs, which the simulator does not serve.
render trust-rotation-operator operator.yaml '{"grafanaDashboard": {"enabled": true}}'

echo "==> prerequisites: namespaces and cert-manager's CRDs"
"$KUBECTL" create namespace cert-manager
"$KUBECTL" create namespace linkerd
for crd in "$ROOT"/e2e/cluster-sim/crds/cert-manager.io_*.yaml; do
  name=$("$PYTHON" -c 'import sys, yaml; print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d)["metadata"]["name"])' "$crd")
  "$KUBECTL" get "crd/$name" -o name 2>/dev/null || "$KUBECTL" create -f "$crd"
done

for f in crds pki operator; do
  echo "==> kubectl apply -f $f.yaml"
  "$KUBECTL" apply -f "$WORK/$f.yaml"
  if [[ $f == crds ]]; then
    "$KUBECTL" wait --for=condition=Established crd/trustanchorrotations.trust.linkerd.io --timeout=30s
  fi
done

echo "==> every object reads back"
for f in crds pki operator; do
  "$KUBECTL" get -f "$WORK/$f.yaml" -o name
done

echo "==> a second apply changes nothing"
changed=$(for f in crds pki operator; do "$KUBECTL" apply -f "$WORK/$f.yaml"; done | grep -v ' unchanged$' || true)
[[ -z $changed ]] || { printf 'chart-sim: second apply changed:\n%s\n' "$changed" >&2; exit 1; }

phase_spec=$("$KUBECTL" get trustanchorrotations.trust.linkerd.io cluster -o jsonpath='{.spec.trustRoots.name}')
[[ $phase_spec == linkerd-identity-trust-roots ]] || { echo "chart-sim: TrustAnchorRotation spec not stored" >&2; exit 1; }
echo "chart-sim: all three charts applied and read back"
