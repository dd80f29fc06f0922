#!/usr/bin/env bash
# `make one-build`: after `cargo test --workspace` has built everything, every later cargo
# build that `make test` and `make demo` run must find its dependencies already compiled.
#
# Cargo compiles a crate again whenever a build enables a different set of its features, and
# `cargo build --bins`, `cargo build -p cluster-sim` and `cargo run -p trust-rotation-crds`
# each resolve features on their own (dev-dependencies count only for tests). The
# workspace-hack crate (managed by cargo-hakari) makes every build see the union, so k8s-openapi,
# kube and the rest compile once per profile. This check fails, naming the crates, when that
# stops being true (a new dependency or feature without `cargo hakari generate`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}

# The cargo builds that follow `cargo test --workspace` in `make test` (see the Makefile) and
# `make demo`.
builds=(
  "--bins"
  "-p cluster-sim --bin cluster-sim"
  "-p trust-rotation-crds --bin crdgen"
  # make install-test's `make dist DIST_PROFILE=dev` (dist/build.sh)
  "--profile dev --bin linkerd-trust --bin trust-rotation-operator"
)

status=0
for args in "${builds[@]}"; do
  # shellcheck disable=SC2086 # args is a list of words
  rebuilt=$($CARGO build --locked $args --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
root = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    # Workspace members (path dependencies under the root) may link new binaries; no
    # dependency from a registry may compile a second time.
    if m.get("reason") == "compiler-artifact" and not m.get("fresh", True) \
            and not m["package_id"].startswith("path+file://" + root):
        print(m["package_id"].split("#")[-1], m["target"]["name"])
' "$ROOT")
  if [[ -n $rebuilt ]]; then
    echo "cargo build $args compiled dependencies again (their features differ from cargo test's):" >&2
    # shellcheck disable=SC2001 # indent every line
    sed 's/^/  /' <<<"$rebuilt" >&2
    status=1
  else
    echo "cargo build $args: every dependency already built"
  fi
done
if [[ $status -ne 0 ]]; then
  echo "Run 'cargo hakari generate' (cargo install cargo-hakari) and commit workspace-hack/." >&2
fi
exit $status
