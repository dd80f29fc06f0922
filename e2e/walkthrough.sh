#!/usr/bin/env bash
# The user guide's trust-anchor rotation, step by step, against whatever cluster
# KUBECONFIG points at (kind, the simulator, or a real cluster with the operator running).
#
#   e2e/walkthrough.sh              run it
#   DRY_RUN=1 e2e/walkthrough.sh    print every command without touching a cluster
#
# It waits for each phase with `kubectl wait --for=jsonpath=...` (no sleeps), restarts the
# data plane when the guide says to, and fails unless the rotation ends Synced with the new
# anchor as the single root in Linkerd's trust bundle.
#
# Environment (defaults follow the guide):
#   LINKERD_NS          Linkerd control-plane namespace            (linkerd)
#   CERT_MANAGER_NS     namespace of the trust anchor Certificate  (cert-manager)
#   WORKLOAD_NAMESPACES meshed namespaces to restart, space-separated, or "auto" for
#                       every namespace with meshed pods outside the control plane (emojivoto)
#   ROTATION            TrustAnchorRotation name                   (cluster)
#   TRUST_ANCHOR        anchor Certificate/Secret name             (linkerd-trust-anchor)
#   IDENTITY_ISSUER     issuer Certificate name                    (linkerd-identity-issuer)
#   TRUST_ROOTS         trust-roots ConfigMap                      (linkerd-identity-trust-roots)
#   TIMEOUT             per wait, kubectl duration                 (300s)
#   LINKERD_TRUST       how to run the CLI: "linkerd-trust" or "linkerd trust"
#                       (default: linkerd-trust when on PATH, else "linkerd trust")
#   KUBECTL             kubectl command                            (kubectl)
#   USE_CMCTL           auto | 1 | 0: renew with cmctl (auto: when cmctl is on PATH)
#   INSPECT_ARGS        extra arguments for `linkerd trust inspect` (none)
#   DRY_RUN             1: print the commands instead of running them
set -euo pipefail

LINKERD_NS=${LINKERD_NS:-linkerd}
CERT_MANAGER_NS=${CERT_MANAGER_NS:-cert-manager}
WORKLOAD_NAMESPACES=${WORKLOAD_NAMESPACES:-emojivoto}
ROTATION=${ROTATION:-cluster}
TRUST_ANCHOR=${TRUST_ANCHOR:-linkerd-trust-anchor}
IDENTITY_ISSUER=${IDENTITY_ISSUER:-linkerd-identity-issuer}
TRUST_ROOTS=${TRUST_ROOTS:-linkerd-identity-trust-roots}
TRUST_ROOTS_KEY=${TRUST_ROOTS_KEY:-ca-bundle.crt}
TIMEOUT=${TIMEOUT:-300s}
KUBECTL=${KUBECTL:-kubectl}
USE_CMCTL=${USE_CMCTL:-auto}
INSPECT_ARGS=${INSPECT_ARGS:-}
DRY_RUN=${DRY_RUN:-0}
if [[ -z ${LINKERD_TRUST:-} ]]; then
  if command -v linkerd-trust >/dev/null 2>&1; then LINKERD_TRUST=linkerd-trust; else LINKERD_TRUST="linkerd trust"; fi
fi
read -r -a TRUST_CLI <<<"$LINKERD_TRUST"
read -r -a KUBE <<<"$KUBECTL"
read -r -a INSPECT_EXTRA <<<"$INSPECT_ARGS"
TAR="trustanchorrotations.trust.linkerd.io/$ROTATION"

if [[ $USE_CMCTL == auto ]]; then
  if command -v cmctl >/dev/null 2>&1; then USE_CMCTL=1; else USE_CMCTL=0; fi
fi

step() { printf '\n==> %s\n' "$*"; }

# Prints a command, then runs it (or only prints it with DRY_RUN=1).
run() {
  printf '+ %s\n' "$*"
  [[ $DRY_RUN == 1 ]] || "$@"
}

die() {
  printf 'walkthrough: FAILED: %s\n' "$*" >&2
  if [[ $DRY_RUN != 1 ]]; then
    "${KUBE[@]}" get "$TAR" -o yaml >&2 || true
  fi
  exit 1
}

wait_phase() {
  run "${KUBE[@]}" wait --for=jsonpath='{.status.phase}'="$1" "$TAR" --timeout="$TIMEOUT" ||
    die "phase $1 not reached within $TIMEOUT"
}

# Waits until the rotation is in any of the given phases: one `kubectl wait` per phase,
# the first to succeed wins. For phases the operator may pass through on its own (with
# fast proxy refresh, RenewingWorkloadCerts can end before anyone looks).
wait_any_phase() {
  local phase
  for phase in "$@"; do
    printf '+ %s wait --for=jsonpath={.status.phase}=%s %s --timeout=%s &\n' "$KUBECTL" "$phase" "$TAR" "$TIMEOUT"
  done
  printf '+ wait -n  # the first phase reached wins\n'
  [[ $DRY_RUN == 1 ]] && return 0
  local pids=() pid ok=1
  for phase in "$@"; do
    "${KUBE[@]}" wait --for=jsonpath='{.status.phase}'="$phase" "$TAR" --timeout="$TIMEOUT" >/dev/null &
    pids+=("$!")
  done
  while ((${#pids[@]})); do
    if wait -n "${pids[@]}"; then ok=0; break; fi
    local alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    pids=("${alive[@]}")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ((ok == 0)) || die "none of the phases $* reached within $TIMEOUT"
  printf 'phase: %s\n' "$("${KUBE[@]}" get "$TAR" -o jsonpath='{.status.phase}')"
}

workload_namespaces() {
  if [[ $WORKLOAD_NAMESPACES == auto ]]; then
    "${KUBE[@]}" get pods --all-namespaces -l "linkerd.io/control-plane-ns=$LINKERD_NS" \
      -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}' | sort -u | grep -vx "$LINKERD_NS" || true
  else
    printf '%s\n' "$WORKLOAD_NAMESPACES" | tr ' ' '\n' | sed '/^$/d'
  fi
}

restart_data_plane() {
  local ns kind workload
  if [[ $DRY_RUN == 1 && $WORKLOAD_NAMESPACES == auto ]]; then
    run "${KUBE[@]}" -n '<each meshed namespace>' rollout restart deploy
    return
  fi
  for ns in $(workload_namespaces); do
    run "${KUBE[@]}" -n "$ns" rollout restart deploy
    if [[ $DRY_RUN == 1 ]]; then
      run "${KUBE[@]}" -n "$ns" rollout status deploy/'<each>' --timeout="$TIMEOUT"
      continue
    fi
    # The guide's mesh has Deployments only; StatefulSets and DaemonSets are restarted the
    # same way, each with its own kind (Jobs' pods get the new bundle on their next run).
    for kind in statefulset daemonset; do
      if [[ -n $("${KUBE[@]}" -n "$ns" get "$kind" -o name) ]]; then
        run "${KUBE[@]}" -n "$ns" rollout restart "$kind"
      fi
    done
    for workload in $("${KUBE[@]}" -n "$ns" get deploy,statefulset,daemonset -o name); do
      run "${KUBE[@]}" -n "$ns" rollout status "$workload" --timeout="$TIMEOUT" ||
        die "$ns/$workload did not finish rolling out"
    done
  done
}

renew() { # renew NAMESPACE CERTIFICATE anchor|issuer
  if [[ $USE_CMCTL == 1 ]]; then
    run cmctl renew -n "$1" "$2"
  else
    run "${TRUST_CLI[@]}" renew "$3"
  fi
}

inspect() {
  run "${TRUST_CLI[@]}" inspect "${INSPECT_EXTRA[@]}" || die "linkerd trust inspect failed"
}

trust_roots() {
  "${KUBE[@]}" -n "$LINKERD_NS" get configmap "$TRUST_ROOTS" \
    -o go-template="{{index .data \"$TRUST_ROOTS_KEY\"}}"
}

count_roots() { grep -c -- '-----BEGIN CERTIFICATE-----' || true; }

# === the guide ===

step "Check the prerequisites (cert-manager and the Linkerd PKI)"
run "${TRUST_CLI[@]}" check --pre --wait "$TIMEOUT" || die "linkerd trust check --pre failed"

step "Wait for the operator to report Synced before rotating"
wait_phase Synced
if [[ $DRY_RUN != 1 ]]; then
  before=$(trust_roots)
  [[ $(count_roots <<<"$before") == 1 ]] || die "expected one root in $TRUST_ROOTS before the rotation"
fi

step "Step 1: trigger trust-root renewal"
renew "$CERT_MANAGER_NS" "$TRUST_ANCHOR" anchor
# RefreshingControlPlane -> PropagatingTrustRoots, where it waits for the data plane.
wait_phase PropagatingTrustRoots
if [[ $DRY_RUN != 1 ]]; then
  n=$(trust_roots | count_roots)
  [[ $n == 2 ]] || die "expected old and new roots in $TRUST_ROOTS during propagation, found $n"
  echo "trust bundle now holds both roots"
fi

step "Step 2: restart the data plane so proxies pick up the expanded bundle"
restart_data_plane
wait_phase WaitingForIdentityRotation
inspect

step "Step 3: trigger identity-issuer renewal"
renew "$LINKERD_NS" "$IDENTITY_ISSUER" issuer
# RenewingWorkloadCerts; with fast proxy refresh the operator may already be further on.
wait_any_phase RenewingWorkloadCerts RemovingOldTrustRoots
echo "restarting workloads so proxies get certificates from the new issuer now"
restart_data_plane

step "Step 4: bundle reduction"
# RefreshingControlPlane -> RemovingOldTrustRoots, where it waits for the final restart.
wait_phase RemovingOldTrustRoots
if [[ $DRY_RUN != 1 ]]; then
  n=$(trust_roots | count_roots)
  [[ $n == 1 ]] || die "expected the bundle reduced to one root, found $n"
fi
restart_data_plane
wait_phase Synced
inspect

step "Assert: Synced with the new anchor as the single root"
if [[ $DRY_RUN != 1 ]]; then
  after=$(trust_roots)
  [[ $(count_roots <<<"$after") == 1 ]] || die "expected a single root in $TRUST_ROOTS"
  [[ $after != "$before" ]] || die "the trust bundle still holds the old root"
  anchor=$("${KUBE[@]}" -n "$CERT_MANAGER_NS" get secret "$TRUST_ANCHOR" -o jsonpath='{.data.tls\.crt}' | base64 -d)
  [[ $(tr -d '[:space:]' <<<"$after") == "$(tr -d '[:space:]' <<<"$anchor")" ]] ||
    die "the single root in $TRUST_ROOTS is not the current anchor in $CERT_MANAGER_NS/$TRUST_ANCHOR"
  echo "rotation complete: one root, the new anchor; phase Synced"
fi
