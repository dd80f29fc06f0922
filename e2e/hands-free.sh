#!/usr/bin/env bash
# A hands-free trust-anchor rotation: the TrustAnchorRotation has
# `spec.automation.issuerRenewal: Automatic` and `workloadRestarts: Automatic`, so after the
# trust anchor is renewed nobody runs another command. Against whatever cluster KUBECONFIG
# points at (the simulator in `make demo AUTO=1`, kind, or a real cluster with the operator
# running and the automation switched on).
#
# It shows `linkerd trust plan` first (what the operator is about to do), renews the anchor
# the way cert-manager does on its own schedule (`linkerd trust renew anchor`, or `cmctl
# renew`), then only watches: it fails unless the rotation ends Synced, by itself, with the
# new anchor as the single root in Linkerd's trust bundle and every restart it made recorded.
#
#   e2e/hands-free.sh              run it
#   DRY_RUN=1 e2e/hands-free.sh    print every command without touching a cluster
#
# Environment (defaults follow the guide): LINKERD_NS, CERT_MANAGER_NS, ROTATION,
# TRUST_ANCHOR, TRUST_ROOTS, TRUST_ROOTS_KEY, TIMEOUT (for the whole rotation, in seconds:
# 300), LINKERD_TRUST, KUBECTL, USE_CMCTL (auto | 1 | 0), DRY_RUN.
set -euo pipefail

LINKERD_NS=${LINKERD_NS:-linkerd}
CERT_MANAGER_NS=${CERT_MANAGER_NS:-cert-manager}
ROTATION=${ROTATION:-cluster}
TRUST_ANCHOR=${TRUST_ANCHOR:-linkerd-trust-anchor}
TRUST_ROOTS=${TRUST_ROOTS:-linkerd-identity-trust-roots}
TRUST_ROOTS_KEY=${TRUST_ROOTS_KEY:-ca-bundle.crt}
TIMEOUT=${TIMEOUT:-300}
TIMEOUT=${TIMEOUT%s}
KUBECTL=${KUBECTL:-kubectl}
USE_CMCTL=${USE_CMCTL:-auto}
DRY_RUN=${DRY_RUN:-0}
if [[ -z ${LINKERD_TRUST:-} ]]; then
  if command -v linkerd-trust >/dev/null 2>&1; then LINKERD_TRUST=linkerd-trust; else LINKERD_TRUST="linkerd trust"; fi
fi
read -r -a TRUST_CLI <<<"$LINKERD_TRUST"
read -r -a KUBE <<<"$KUBECTL"
TAR="trustanchorrotations.trust.linkerd.io/$ROTATION"
if [[ $USE_CMCTL == auto ]]; then
  if command -v cmctl >/dev/null 2>&1; then USE_CMCTL=1; else USE_CMCTL=0; fi
fi

step() { printf '\n==> %s\n' "$*"; }
run() {
  printf '+ %s\n' "$*"
  [[ $DRY_RUN == 1 ]] || "$@"
}
die() {
  printf 'hands-free: FAILED: %s\n' "$*" >&2
  [[ $DRY_RUN == 1 ]] || "${KUBE[@]}" get "$TAR" -o yaml >&2 || true
  exit 1
}
field() { "${KUBE[@]}" get "$TAR" -o jsonpath="{$1}"; }
trust_roots() {
  "${KUBE[@]}" -n "$LINKERD_NS" get configmap "$TRUST_ROOTS" \
    -o go-template="{{index .data \"$TRUST_ROOTS_KEY\"}}"
}
count_roots() { grep -c -- '-----BEGIN CERTIFICATE-----' || true; }

step "Check the prerequisites, and that the automation is on"
run "${TRUST_CLI[@]}" check --pre --wait "${TIMEOUT}s" || die "linkerd trust check --pre failed"
run "${KUBE[@]}" wait --for=jsonpath='{.status.phase}'=Synced "$TAR" --timeout="${TIMEOUT}s" ||
  die "the rotation is not Synced before the anchor is renewed"
if [[ $DRY_RUN != 1 ]]; then
  for knob in issuerRenewal workloadRestarts; do
    [[ $(field ".spec.automation.$knob") == Automatic ]] ||
      die "spec.automation.$knob is not Automatic: a person would have to act (set it, or run e2e/walkthrough.sh)"
  done
  before=$(trust_roots)
  previous=$(field '.status.history[0].id')
fi

step "What the operator will do (linkerd trust plan)"
run "${TRUST_CLI[@]}" plan || die "linkerd trust plan failed"

step "The trust anchor is renewed (as cert-manager does on its own schedule); nobody acts after this"
if [[ $USE_CMCTL == 1 ]]; then
  run cmctl renew -n "$CERT_MANAGER_NS" "$TRUST_ANCHOR"
else
  run "${TRUST_CLI[@]}" renew anchor
fi
[[ $DRY_RUN == 1 ]] && exit 0

# Only watching from here: one look a second until a new rotation is in the history.
deadline=$((SECONDS + TIMEOUT)) last=""
while :; do
  phase=$(field '.status.phase') newest=$(field '.status.history[0].id')
  if [[ $phase == Synced && -n $newest && $newest != "$previous" ]]; then break; fi
  message=$(field '.status.blockingMessage')
  now="phase $phase${message:+; blocked: $message}"
  [[ $now == "$last" ]] || echo "$now"
  last=$now
  ((SECONDS < deadline)) || die "the rotation did not finish by itself within ${TIMEOUT}s ($now)"
  sleep 1
done

step "Assert: Synced by itself, the new anchor the single root, the restarts recorded"
after=$(trust_roots)
[[ $(count_roots <<<"$after") == 1 ]] || die "expected a single root in $TRUST_ROOTS"
[[ $after != "$before" ]] || die "the trust bundle still holds the old root"
anchor=$("${KUBE[@]}" -n "$CERT_MANAGER_NS" get secret "$TRUST_ANCHOR" -o jsonpath='{.data.tls\.crt}' | base64 -d)
[[ $(tr -d '[:space:]' <<<"$after") == "$(tr -d '[:space:]' <<<"$anchor")" ]] ||
  die "the single root in $TRUST_ROOTS is not the current anchor"
[[ -n $(field '.status.history[0].issuerRenewal.triggeredAt') ]] ||
  die "the rotation finished without the operator re-issuing the identity issuer"
echo "the operator re-issued the identity issuer at $(field '.status.history[0].issuerRenewal.triggeredAt')"
# One Event per restart, read as a person would (kube's recorder writes them through
# events.k8s.io; the API server serves the same objects as core Events).
restarted=$("${KUBE[@]}" get events --all-namespaces \
  --field-selector involvedObject.kind=TrustAnchorRotation,reason=WorkloadRestarted -o name | wc -l)
((restarted > 0)) || die "no WorkloadRestarted Event: the operator restarted nothing"
id=$(field '.status.history[0].id')
records=$(field ".status.workloadRestarts[?(@.rotationId==\"$id\")].state")
[[ -n $records && ! $records =~ Pending|Restarting ]] ||
  die "status.workloadRestarts of rotation $id is not settled: $records"
echo "the operator restarted workloads (one WorkloadRestarted Event each, $restarted in all): $records"
run "${TRUST_CLI[@]}" inspect || die "linkerd trust inspect failed"
echo "rotation complete, hands-free: one root, the new anchor; phase Synced"
