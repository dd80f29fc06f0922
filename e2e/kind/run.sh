#!/usr/bin/env bash
# `make e2e`: the user guide end to end on a throwaway kind cluster with open-source Linkerd.
#
# Creates a kind cluster, installs cert-manager (jetstack chart), this repository's
# linkerd-cert-manager chart, seeds the trust bundle with `linkerd trust bundle`, installs
# Linkerd from the edge Helm charts with an external CA, builds and loads the operator
# image, installs both operator charts and emojivoto, runs e2e/walkthrough.sh, and
# deletes the cluster (KEEP_CLUSTER=1 keeps it).
#
# Needs docker, kind, helm and kubectl on PATH, and network access to the chart
# repositories; `make e2e` builds the binaries first. DRY_RUN=1 prints every command
# instead (nothing is needed for that, and `make test` checks the sequence).
#
# Environment:
#   CLUSTER              kind cluster name                         (trust-rotation-e2e)
#   IMAGE                operator image to build and load          (trust-rotation-operator:e2e)
#   CERT_MANAGER_VERSION jetstack/cert-manager chart version       (v1.19.1)
#   LINKERD_VERSION      linkerd-edge chart version, empty = latest edge
#   GATEWAY_API_VERSION  Gateway API CRDs Linkerd needs            (v1.2.1)
#   TIMEOUT              per wait                                  (300s)
#   BIN_DIR              where linkerd-trust was built             (target/release)
#   KEEP_CLUSTER         1: do not delete the cluster at the end
#   DRY_RUN              1: print the commands only
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${CLUSTER:-trust-rotation-e2e}
IMAGE=${IMAGE:-trust-rotation-operator:e2e}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.19.1}
LINKERD_VERSION=${LINKERD_VERSION:-}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.2.1}
TIMEOUT=${TIMEOUT:-300s}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
DRY_RUN=${DRY_RUN:-0}
export DRY_RUN TIMEOUT

IMAGE_REPO=${IMAGE%:*}
IMAGE_TAG=${IMAGE##*:}
LINKERD_TRUST="$BIN_DIR/linkerd-trust"
EMOJIVOTO_URL=https://run.linkerd.io/emojivoto.yml
VERSION_FLAGS=()
if [[ -n $LINKERD_VERSION ]]; then VERSION_FLAGS=(--version "$LINKERD_VERSION"); fi

run() {
  printf '+ %s\n' "$*"
  [[ $DRY_RUN == 1 ]] || "$@"
}

# A pipeline, printed as written; `run_pipe 'a | b'`.
run_pipe() {
  printf '+ %s\n' "$1"
  [[ $DRY_RUN == 1 ]] || bash -o pipefail -c "$1"
}

step() { printf '\n==> %s\n' "$*"; }

if [[ $DRY_RUN != 1 ]]; then
  missing=()
  for tool in docker kind helm kubectl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [[ -x $LINKERD_TRUST ]] || missing+=("$LINKERD_TRUST (run make build)")
  if ((${#missing[@]})); then
    printf 'e2e: missing: %s\n' "${missing[*]}" >&2
    printf 'e2e: install docker, kind (https://kind.sigs.k8s.io), helm and kubectl, then rerun make e2e\n' >&2
    exit 1
  fi
  WORK=$(mktemp -d)
  export KUBECONFIG="$WORK/kubeconfig"
else
  export KUBECONFIG='<tmp>/kubeconfig'
fi

cleanup() {
  local rc=$?
  if [[ $KEEP_CLUSTER == 1 ]]; then
    echo "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG)"
  else
    step "Delete the cluster"
    run kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$rc"
}
trap cleanup EXIT

step "Create the kind cluster"
run kind create cluster --name "$CLUSTER" --config "$ROOT/e2e/kind/cluster.yaml" --wait 120s

step "Install cert-manager (jetstack chart)"
run helm repo add jetstack https://charts.jetstack.io --force-update
run helm install cert-manager jetstack/cert-manager --namespace cert-manager --create-namespace \
  --version "$CERT_MANAGER_VERSION" --set crds.enabled=true --wait --timeout "$TIMEOUT"

step "Install the Linkerd PKI (linkerd-cert-manager chart)"
run helm install linkerd-cert-manager -n linkerd --create-namespace \
  "$ROOT/helm/linkerd-cert-manager" --wait --timeout "$TIMEOUT"
run kubectl -n cert-manager wait certificate/linkerd-trust-anchor --for=condition=Ready --timeout="$TIMEOUT"
run kubectl -n linkerd wait certificate/linkerd-identity-issuer --for=condition=Ready --timeout="$TIMEOUT"

step "Seed the trust bundle"
run_pipe "$LINKERD_TRUST bundle | kubectl apply -f -"

step "Install open-source Linkerd (edge channel) with the external CA"
run kubectl apply -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/experimental-install.yaml"
run helm repo add linkerd-edge https://helm.linkerd.io/edge --force-update
run helm install linkerd-crds -n linkerd --create-namespace linkerd-edge/linkerd-crds --devel \
  "${VERSION_FLAGS[@]}" --wait --timeout "$TIMEOUT"
run helm install linkerd-control-plane -n linkerd linkerd-edge/linkerd-control-plane --devel \
  "${VERSION_FLAGS[@]}" \
  --set identity.externalCA=true \
  --set identity.issuer.scheme=kubernetes.io/tls \
  --wait --timeout "$TIMEOUT"

step "Build the operator image and load it into kind"
run docker build -t "$IMAGE" "$ROOT"
run kind load docker-image "$IMAGE" --name "$CLUSTER"

step "Install the trust-rotation operator (CRD chart, then operator chart)"
run helm install -n linkerd trust-rotation-operator-crds "$ROOT/helm/trust-rotation-operator-crds" \
  --wait --timeout "$TIMEOUT"
run helm install -n linkerd trust-rotation-operator "$ROOT/helm/trust-rotation-operator" \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --set log.format=plain --wait --timeout "$TIMEOUT"

step "Deploy emojivoto, meshed"
run kubectl create namespace emojivoto
run kubectl annotate namespace emojivoto linkerd.io/inject=enabled
run kubectl apply -n emojivoto -f "$EMOJIVOTO_URL"
run kubectl -n emojivoto wait deploy --all --for=condition=Available --timeout="$TIMEOUT"

step "Check the installation"
run "$LINKERD_TRUST" check --wait "${TIMEOUT%s}s"

step "Run the guide's walkthrough"
# Run even with DRY_RUN=1: the walkthrough then prints its own commands.
printf '+ %s\n' "$ROOT/e2e/walkthrough.sh"
LINKERD_TRUST="$LINKERD_TRUST" WORKLOAD_NAMESPACES=emojivoto USE_CMCTL="${USE_CMCTL:-auto}" "$ROOT/e2e/walkthrough.sh"
