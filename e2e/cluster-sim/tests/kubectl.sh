#!/usr/bin/env bash
# kubectl against the cluster simulator: the commands our docs and scripts use, checked for
# what a user would see. Run by tests/api_kubectl.rs with KUBECONFIG pointing at a fresh
# simulator (and HOME at a scratch directory, so kubectl's discovery cache starts empty).
#
#   KUBECONFIG=... CRD=crds/trust.linkerd.io_trustanchorrotations.yaml bash tests/kubectl.sh
set -euo pipefail

: "${KUBECONFIG:?KUBECONFIG must point at a running cluster-sim}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CRD="${CRD:-$here/../../../crds/trust.linkerd.io_trustanchorrotations.yaml}"
NS=kubectl-script

k() { kubectl --request-timeout=30s "$@"; }

pass=0
expect() { # expect DESCRIPTION ACTUAL EXPECTED
    if [[ "$2" != "$3" ]]; then
        echo "FAIL: $1" >&2
        echo "  expected: [$3]" >&2
        echo "  actual:   [$2]" >&2
        exit 1
    fi
    pass=$((pass + 1))
    echo "ok: $1"
}

expect_fail() { # expect_fail DESCRIPTION EXPECTED_SUBSTRING COMMAND...
    local desc="$1" want="$2" out
    shift 2
    if out="$("$@" 2>&1)"; then
        echo "FAIL: $desc: the command succeeded: $out" >&2
        exit 1
    fi
    if [[ "$out" != *"$want"* ]]; then
        echo "FAIL: $desc: expected an error containing [$want], got [$out]" >&2
        exit 1
    fi
    pass=$((pass + 1))
    echo "ok: $desc"
}

# --- discovery and version ---
expect "server version" "$(k version -o json 2>/dev/null | grep -c '"gitVersion"')" "2"
resources="$(k api-resources -o name)"
grep -qx 'certificates.cert-manager.io' <<<"$resources" \
    || { echo "FAIL: cert-manager's kinds are not discovered: $resources" >&2; exit 1; }

# --- the project's CRD and a TrustAnchorRotation ---
crd_out="$(k apply -f "$CRD" 2>&1)"
if grep -q '^Warning:' <<<"$crd_out"; then
    echo "FAIL: applying the CRD printed warnings:" >&2
    echo "$crd_out" >&2
    exit 1
fi
pass=$((pass + 1))
echo "ok: the CRD applies without warnings"
k wait --for condition=established --timeout=10s crd/trustanchorrotations.trust.linkerd.io
cat <<'YAML' | k apply -f -
apiVersion: trust.linkerd.io/v1alpha1
kind: TrustAnchorRotation
metadata:
  name: cluster
spec: {}
YAML
expect "read a TrustAnchorRotation by its short name" "$(k get tar cluster -o jsonpath='{.metadata.name}')" "cluster"
expect "schema defaults applied" "$(k get tar cluster -o jsonpath='{.spec.trustDomain}')" "cluster.local"
k patch tar cluster --subresource=status --type=merge -p '{"status":{"phase":"Synced"}}'
k wait --for=jsonpath='{.status.phase}'=Synced --timeout=10s tar/cluster
expect "printer column shows the phase" "$(k get tar cluster --no-headers | awk '{print $2}')" "Synced"
k patch tar cluster --type=merge -p '{"status":{"phase":"RemovingOldTrustRoots"}}' >/dev/null
expect "status is only written through /status" "$(k get tar cluster -o jsonpath='{.status.phase}')" "Synced"
expect_fail "kubectl wait times out on a condition that never holds" "timed out" \
    k wait --for=jsonpath='{.status.phase}'=Completed --timeout=1s tar/cluster
paused() {
    cat <<'YAML'
apiVersion: trust.linkerd.io/v1alpha1
kind: TrustAnchorRotation
metadata:
  name: cluster
spec:
  paused: true
YAML
}
# spec.paused (defaulted at create) belongs to the client-side apply: a second manager
# conflicts, as on a real server, until it forces.
expect_fail "server-side apply conflicts with another manager" 'conflict with "kubectl-client-side-apply": .spec.paused' \
    bash -c "$(declare -f paused); paused | kubectl --request-timeout=30s apply --server-side --field-manager=script -f -"
paused | k apply --server-side --field-manager=script --force-conflicts -f -
expect "server-side apply with --force-conflicts" "$(k get tar cluster -o jsonpath='{.spec.paused}')" "true"

# --- custom resources are validated as a real server validates them ---
tar() { # tar SPEC-YAML-LINE
    printf 'apiVersion: trust.linkerd.io/v1alpha1\nkind: TrustAnchorRotation\nmetadata:\n  name: cluster\nspec:\n  %s\n' "$1"
}
expect_fail "kubectl apply refuses an unknown field (strict field validation)" \
    'strict decoding error: unknown field "spec.bogus"' \
    bash -c "$(declare -f tar); tar 'bogus: 1' | kubectl --request-timeout=30s apply -f -"
expect_fail "kubectl create refuses an unknown field too" \
    'TrustAnchorRotation in version "v1alpha1" cannot be handled as a TrustAnchorRotation: strict decoding error: unknown field "spec.bogus"' \
    bash -c "$(declare -f tar); printf 'apiVersion: trust.linkerd.io/v1alpha1\nkind: TrustAnchorRotation\nmetadata:\n  name: other\nspec:\n  bogus: 1\n' | kubectl --request-timeout=30s create -f -"
warn_out="$(tar 'bogus: 1' | k apply --validate=warn -f - 2>&1)"
expect "--validate=warn prints the server's warning and prunes" \
    "$(grep -c '^Warning: unknown field "spec.bogus"' <<<"$warn_out")/$(k get tar cluster -o jsonpath='{.spec.bogus}')" "1/"
expect_fail "a value outside the schema is 422 Invalid" \
    'The TrustAnchorRotation "cluster" is invalid: spec.workloadCertificateRefreshInterval: Invalid value: "1h30m"' \
    bash -c "$(declare -f tar); tar 'workloadCertificateRefreshInterval: 1h30m' | kubectl --request-timeout=30s apply -f -"
expect_fail "a status outside the status schema is 422 Invalid" \
    'status.phase: Unsupported value: "Done"' \
    k patch tar cluster --subresource=status --type=merge -p '{"status":{"phase":"Done"}}'

# --- ConfigMaps and Secrets: create (protobuf), label, patch, delete ---
k create namespace "$NS"
k create configmap settings -n "$NS" --from-literal=mode=fast
k create configmap other -n "$NS" --from-literal=x=1
k create secret generic creds -n "$NS" --from-literal=user=admin
k label configmap settings -n "$NS" tier=front
k label configmap other -n "$NS" tier=back
k annotate configmap settings -n "$NS" owner=script
expect "equality selector" "$(k get cm -n "$NS" -l tier=front -o name)" "configmap/settings"
expect "set-based selector" "$(k get cm -n "$NS" -l 'tier in (back,middle)' -o name)" "configmap/other"
expect "exists selector" "$(k get cm -n "$NS" -l 'tier' -o name | sort | tr '\n' ' ')" "configmap/other configmap/settings "
expect "field selector" "$(k get cm -n "$NS" --field-selector metadata.name=other -o name)" "configmap/other"
k patch configmap settings -n "$NS" --type=merge -p '{"data":{"mode":"slow"}}'
expect "merge patch" "$(k get cm settings -n "$NS" -o jsonpath='{.data.mode}')" "slow"
k patch configmap settings -n "$NS" --type=strategic -p '{"data":{"extra":"1"}}'
expect "strategic patch" "$(k get cm settings -n "$NS" -o jsonpath='{.data.extra}')" "1"
k patch secret creds -n "$NS" --type=json -p '[{"op":"add","path":"/data/pass","value":"c2VjcmV0"}]'
expect "JSON patch on a Secret" "$(k get secret creds -n "$NS" -o jsonpath='{.data.pass}' | base64 -d)" "secret"
expect "annotation" "$(k get cm settings -n "$NS" -o jsonpath='{.metadata.annotations.owner}')" "script"
expect "table output" "$(k get cm settings -n "$NS" --no-headers | awk '{print $1, $2}')" "settings 2"
expect_fail "missing object" 'configmaps "missing" not found' k get configmap missing -n "$NS"
expect_fail "missing namespace" 'namespaces "nowhere" not found' k create configmap x -n nowhere
expect_fail "invalid name" "Invalid value" k create configmap Bad_Name -n "$NS"
expect_fail "duplicate" 'configmaps "settings" already exists' k create configmap settings -n "$NS"
k delete configmap settings -n "$NS"
k delete secret creds -n "$NS"
expect "deleted" "$(k get cm settings -n "$NS" --ignore-not-found -o name)" ""
for i in 1 2 3 4 5; do k create configmap "page$i" -n "$NS" >/dev/null; done
expect "kubectl get pages through continue tokens" \
    "$(k get cm -n "$NS" --chunk-size=2 -o name | grep -c '^configmap/page')" "5"

# --- kubectl get -w sees a change ---
watch_out="$(mktemp)"
kubectl get configmaps -n "$NS" -w --request-timeout=4s >"$watch_out" 2>&1 &
watch_pid=$!
sleep 1
k create configmap watched -n "$NS" >/dev/null
wait "$watch_pid" || true
grep -q '^watched' "$watch_out" || { echo "FAIL: kubectl get -w did not show the new ConfigMap:" >&2; cat "$watch_out" >&2; exit 1; }
rm -f "$watch_out"
pass=$((pass + 1))
echo "ok: kubectl get -w"

# --- a Deployment: apply twice (client-side), rollout restart, rollout status ---
deploy() {
    cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: $NS
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: example/web:1
        env: [{name: MODE, value: "$1"}]
YAML
}
deploy a | k apply -f -
deploy b | k apply -f -
expect "client-side apply updates" "$(k get deploy web -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].env[0].value}')" "b"
k rollout status deployment/web -n "$NS" --timeout=60s
k rollout restart deployment/web -n "$NS"
[[ -n "$(k get deploy web -n "$NS" -o jsonpath='{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}')" ]] \
    || { echo "FAIL: rollout restart did not set restartedAt" >&2; exit 1; }
k rollout status deployment/web -n "$NS" --timeout=60s
expect "generation moved with each template change" "$(k get deploy web -n "$NS" -o jsonpath='{.metadata.generation}')" "3"
k create deployment made -n "$NS" --image=example/made:1 --port=8080 --replicas=2
expect "kubectl create deployment (protobuf)" \
    "$(k get deploy made -n "$NS" -o jsonpath='{.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}')" \
    "2 example/made:1 8080"
k rollout status deployment/made -n "$NS" --timeout=60s

# --- Events: one object, two APIs (what kube's recorder writes, kubectl get events shows) ---
k apply -f - <<YAML
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: cluster.rotation-1, namespace: $NS}
eventTime: "2026-12-02T16:00:00.000000Z"
reportingController: trust-rotation-operator
reportingInstance: trust-rotation-operator-0
action: Restart
reason: WorkloadRestarted
type: Normal
note: restarted emojivoto/deployment/web
regarding: {apiVersion: trust.linkerd.io/v1alpha1, kind: TrustAnchorRotation, name: cluster}
YAML
mirrored() { k get events -n "$NS" --field-selector involvedObject.kind=TrustAnchorRotation \
    -o jsonpath='{range .items[*]}{.reason}: {.message}{end}'; }
for _ in $(seq 50); do [[ -n "$(mirrored)" ]] && break; sleep 0.1; done
expect "an events.k8s.io Event is a core Event for kubectl get events (involvedObject, message)" \
    "$(mirrored)" "WorkloadRestarted: restarted emojivoto/deployment/web"
k delete events.v1.events.k8s.io cluster.rotation-1 -n "$NS"
for _ in $(seq 50); do [[ -z "$(mirrored)" ]] && break; sleep 0.1; done
expect "deleting it through events.k8s.io removes it from kubectl get events" "$(mirrored)" ""

# --- cleanup ---
k delete namespace "$NS"
k delete tar cluster
echo "kubectl.sh: all $pass checks passed"
