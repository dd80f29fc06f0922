#!/usr/bin/env bash
# `make demo` and `make e2e-sim`: a full trust-anchor rotation on the cluster simulator.
#
# Starts `cluster-sim serve --topology demo-all-kinds` (cert-manager, Linkerd and the
# meshed emojivoto Deployments plus a StatefulSet, a DaemonSet and a CronJob on three Nodes,
# all simulated on loopback), installs the CRD and the default TrustAnchorRotation from
# this repository's charts, runs `trust-rotation-operator` out of cluster with the flags
# the chart gives it (leader election off: there is one replica), then runs
# e2e/walkthrough.sh, the user guide's steps, against it. Every process it starts is
# stopped on exit.
#
#   LIVE=1  (make demo)    also shows `linkerd trust status --watch` while it runs
#   LIVE=0  (make e2e-sim) assertions only; also checks the operator's /metrics against
#                          the Grafana dashboard and the guide
#   RBAC=1  (make rbac-sim) the operator talks to the simulator through
#           e2e/charts/rbac_proxy.py, which enforces the chart's rendered RBAC: any request
#           the chart does not allow is refused with 403 and fails the run
#   AUTO=1  (make demo AUTO=1) hands-free: the chart is rendered with the automation on
#           (issuerRenewal and workloadRestarts Automatic, two workloads at a time, and
#           the RBAC that needs), and e2e/hands-free.sh runs instead of the walkthrough:
#           `linkerd trust plan`, the anchor renewed, then nobody acts until Synced
#
# Environment: BIN_DIR (target/debug), PYTHON (.venv/bin/python), TIMEOUT per wait (90s),
# SIM_ARGS extra `cluster-sim serve` flags, KEEP_WORK=1 keeps logs and kubeconfig.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/debug}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LIVE=${LIVE:-0}
RBAC=${RBAC:-0}
AUTO=${AUTO:-0}
TIMEOUT=${TIMEOUT:-90s}
SIM_ARGS=${SIM_ARGS:-}
KEEP_WORK=${KEEP_WORK:-0}
KUBECTL=${KUBECTL:-kubectl}

for bin in cluster-sim trust-rotation-operator linkerd-trust; do
  [[ -x $BIN_DIR/$bin ]] || { echo "demo: $BIN_DIR/$bin not built (run cargo build --bins)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/trust-rotation-demo.XXXXXX")
export KUBECONFIG="$WORK/kubeconfig"
PIDS=()
STATUS=fail
# The chart's values: the defaults, or the automation on (render.py's demo_values).
export AUTO

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $STATUS != ok ]]; then
    for log in sim operator status denials; do
      [[ -s $WORK/$log.log ]] || continue
      echo "---- last lines of $log.log ----" >&2
      tail -n 40 "$WORK/$log.log" >&2
    done
  fi
  if [[ $KEEP_WORK == 1 || $STATUS != ok ]]; then
    echo "demo: logs and kubeconfig kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

banner() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

# Polls for a condition with a deadline, failing early if the process it depends on died.
await() { # await SECONDS PID DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) pid=$2 what=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "demo: $what: the process exited" >&2; return 1; }
    ((SECONDS < deadline)) || { echo "demo: $what: timed out" >&2; return 1; }
    read -r -t 0.1 <> <(:) || true # a 100ms pause without spawning a process
  done
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

started=$SECONDS
banner "Starting the cluster simulator (demo topology with every workload kind)"
read -r -a sim_extra <<<"$SIM_ARGS"
"$BIN_DIR/cluster-sim" serve --topology demo-all-kinds --kubeconfig "$KUBECONFIG" "${sim_extra[@]}" >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")
await 60 "${PIDS[0]}" "waiting for $KUBECONFIG" test -s "$KUBECONFIG"
"$KUBECTL" get pods --all-namespaces -l linkerd.io/control-plane-ns=linkerd \
  -o custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,IP:.status.podIP | head -n 12

banner "Installing the CRD, the default TrustAnchorRotation and the empty previous-anchor Secret from the charts"
"$PYTHON" "$ROOT/e2e/charts/render.py" trust-rotation-operator-crds trust-rotation-operator-crds linkerd |
  "$KUBECTL" apply -f -
"$KUBECTL" wait --for=condition=Established crd/trustanchorrotations.trust.linkerd.io --timeout=30s
"$PYTHON" - "$ROOT" <<'EOF' | "$KUBECTL" apply -f -
import sys, yaml
sys.path.insert(0, sys.argv[1] + "/e2e/charts")
from render import demo_values, render
docs = [d for d in render("trust-rotation-operator", demo_values(), namespace="linkerd")
        if d["kind"] in ("TrustAnchorRotation", "Secret")]
print(yaml.safe_dump_all(docs))
EOF

operator_kubeconfig=$KUBECONFIG
if [[ $RBAC == 1 ]]; then
  banner "Enforcing the chart's RBAC on the operator (rbac_proxy.py)"
  "$PYTHON" - "$ROOT" >"$WORK/rbac.yaml" <<'EOF'
import sys, yaml
sys.path.insert(0, sys.argv[1] + "/e2e/charts")
from render import demo_values, render
print(yaml.safe_dump_all([d for d in render("trust-rotation-operator", demo_values(),
                                            namespace="linkerd")
                          if d["kind"] in ("ClusterRole", "Role")]))
EOF
  : >"$WORK/denials.log"
  "$PYTHON" "$ROOT/e2e/charts/rbac_proxy.py" "$KUBECONFIG" "$WORK/rbac.yaml" \
    "$WORK/operator.kubeconfig" "$WORK/denials.log" >"$WORK/proxy.log" 2>&1 &
  PIDS+=("$!")
  await 30 "$!" "waiting for the RBAC proxy" test -s "$WORK/operator.kubeconfig"
  operator_kubeconfig=$WORK/operator.kubeconfig
fi

banner "Starting the operator as the chart runs it (out of cluster, leader election off)"
port=$(free_port)
"$BIN_DIR/trust-rotation-operator" --kubeconfig "$operator_kubeconfig" --admin-addr "127.0.0.1:$port" \
  --leader-election=false --log-format plain --log-level info \
  --probe direct --probe-concurrency 50 --probe-timeout 5s >"$WORK/operator.log" 2>&1 &
PIDS+=("$!")
operator_pid=$!
await 60 "$operator_pid" "waiting for the operator's /ready" curl -fsS "http://127.0.0.1:$port/ready"
echo "operator ready; admin on 127.0.0.1:$port"

if [[ $LIVE == 1 ]]; then
  banner "Watching the rotation (linkerd trust status --watch)"
  # $! must be linkerd-trust itself (not a pipeline's last process), so cleanup stops it.
  "$BIN_DIR/linkerd-trust" status --watch > >(sed -u 's/^/    [status] /') 2>&1 &
  PIDS+=("$!")
fi

if [[ $AUTO == 1 ]]; then
  banner "A hands-free rotation: the operator renews the issuer and restarts the workloads itself"
  LINKERD_TRUST="$BIN_DIR/linkerd-trust" USE_CMCTL=0 TIMEOUT="${AUTO_TIMEOUT:-300}" \
    "$ROOT/e2e/hands-free.sh"
else
  banner "Running the user guide's walkthrough"
  LINKERD_TRUST="$BIN_DIR/linkerd-trust" WORKLOAD_NAMESPACES=auto USE_CMCTL=0 TIMEOUT="$TIMEOUT" \
    INSPECT_ARGS="${INSPECT_ARGS:-}" "$ROOT/e2e/walkthrough.sh"
fi

banner "Checking the operator's metrics"
curl -fsS "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt"
grep -E '^trust_rotation_phase\{.*phase="Synced".*\} 1(\.0)?$' "$WORK/metrics.txt" ||
  { echo "demo: /metrics does not report phase Synced" >&2; exit 1; }
"$PYTHON" "$ROOT/e2e/charts/check_metrics.py" "$WORK/metrics.txt"

banner "Asking the simulator's mTLS oracle whether any pair of pods lost mTLS"
kubectl get --raw /metrics >"$WORK/sim-metrics.txt"
grep -E '^cluster_sim_mtls_ok_ratio_min ' "$WORK/sim-metrics.txt"
grep -qE '^cluster_sim_mtls_ok_ratio_min 1(\.0+)?$' "$WORK/sim-metrics.txt" ||
  { echo "demo: mTLS broke between meshed pods during the rotation (cluster_sim_mtls_ok_ratio_min < 1)" >&2; exit 1; }

kill -0 "$operator_pid" 2>/dev/null || { echo "demo: the operator exited during the rotation" >&2; exit 1; }
if [[ $RBAC == 1 ]]; then
  if [[ -s $WORK/denials.log ]]; then
    echo "demo: the chart's RBAC refused these operator requests:" >&2
    sort "$WORK/denials.log" | uniq -c >&2
    exit 1
  fi
  echo "rbac: every operator request was allowed by the chart's RBAC"
fi
STATUS=ok
banner "Done: full rotation in $((SECONDS - started))s"
