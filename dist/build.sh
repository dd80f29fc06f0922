#!/usr/bin/env bash
# The release archives for one target, with their SHA-256 checksums: what `make dist` runs and
# what .github/workflows/release.yml runs on each of its builders, so `make dist` tests the
# workflow's packaging.
#
#   dist/build.sh             build DIST_TARGET and package it into DIST_DIR
#   dist/build.sh checksums   (re)write DIST_DIR/checksums.txt over every archive there
#                             (the release job, after it gathers every builder's archives)
#
# Environment:
#   DIST_TARGET   Rust target triple (default: the host's, from `rustc -vV`)
#   DIST_PROFILE  cargo profile (default: release; `make test` uses dev, reusing its build)
#   CARGO         the cargo command, words split (default: cargo; the release workflow uses
#                 "cargo zigbuild" for the static musl Linux builds)
#   DIST_DIR      output directory (default: target/dist)
#
# Output, for version V (the workspace's) and target T:
#   linkerd-trust-vV-T.tar.gz            linkerd-trust-vV-T/{linkerd-trust,README.md,LICENSE*}
#   trust-rotation-operator-vV-T.tar.gz  (Linux targets only) the operator binary, README.md
#   <archive>.sha256                     `sha256sum` format: "<hex>  <archive>"
#   install.sh                           the one-line installer, served from the release
#   checksums.txt                        every archive's and install.sh's line, sorted by name
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a cargo <<<"${CARGO:-cargo}"
DIST_PROFILE=${DIST_PROFILE:-release}
DIST_DIR=${DIST_DIR:-target/dist}

die() { echo "dist: $*" >&2; exit 1; }

# sha256sum on Linux, shasum on macOS: both print "<hex>  <name>".
sha256() {
    if command -v sha256sum >/dev/null; then sha256sum "$@"
    elif command -v shasum >/dev/null; then shasum -a 256 "$@"
    else die "neither sha256sum nor shasum found"
    fi
}

write_checksums() {
    cp dist/install.sh "$DIST_DIR/install.sh"
    (
        cd "$DIST_DIR"
        shopt -s nullglob
        files=(*.tar.gz install.sh)
        [ "${#files[@]}" -gt 1 ] || die "no archives in $DIST_DIR"
        sha256 "${files[@]}" | LC_ALL=C sort -k2 >checksums.txt
    )
    echo "dist: $DIST_DIR/checksums.txt"
    cat "$DIST_DIR/checksums.txt"
}

if [ "${1:-}" = checksums ]; then
    mkdir -p "$DIST_DIR"
    write_checksums
    exit 0
fi
[ $# -eq 0 ] || die "usage: dist/build.sh [checksums]"

host=$(rustc -vV | sed -n 's/^host: //p')
DIST_TARGET=${DIST_TARGET:-$host}

# The workspace's version and target directory, jq-free.
read -r version target_dir < <("${cargo[0]}" metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
v = {p["name"]: p["version"] for p in m["packages"]}
print(v["linkerd-trust"], m["target_directory"])')
[ -n "$version" ] || die "could not read the workspace version"

bins=(linkerd-trust)
case "$DIST_TARGET" in
    *-linux-*) bins+=(trust-rotation-operator) ;;
esac

# The profile's directory under target/: dev builds land in debug/.
case "$DIST_PROFILE" in
    dev) profile_dir=debug ;;
    *) profile_dir=$DIST_PROFILE ;;
esac
# `cargo zigbuild` is itself the build command; plain cargo needs `build`.
case "${cargo[${#cargo[@]}-1]}" in
    zigbuild) build=(--locked --profile "$DIST_PROFILE") ;;
    *) build=(build --locked --profile "$DIST_PROFILE") ;;
esac
for b in "${bins[@]}"; do build+=(--bin "$b"); done
# No --bin narrows the packages, so features unify as in the whole workspace's `cargo build
# --bins`. An explicit --target, even the host's, would build into target/<triple>/ with host
# and target dependencies apart, all over again: the host's build goes without it and reuses
# the build the tests already made.
if [ "$DIST_TARGET" = "$host" ]; then
    out=$target_dir/$profile_dir
else
    build+=(--target "$DIST_TARGET")
    out=$target_dir/$DIST_TARGET/$profile_dir
fi
echo "dist: ${cargo[*]} ${build[*]}"
"${cargo[@]}" "${build[@]}"

mkdir -p "$DIST_DIR"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# package NAME BIN README: NAME.tar.gz holding NAME/{BIN,README.md,LICENSE*}, and NAME.tar.gz.sha256.
package() {
    local name=$1 bin=$2 readme=$3
    local exe=$out/$bin
    case "$DIST_TARGET" in *-windows-*) exe=$exe.exe ;; esac
    [ -x "$exe" ] || die "$exe was not built"
    mkdir -p "$stage/$name"
    cp "$exe" "$stage/$name/"
    cp "$readme" "$stage/$name/README.md"
    for f in LICENSE* NOTICE*; do
        [ -f "$f" ] && cp "$f" "$stage/$name/"
    done
    chmod 0755 "$stage/$name/$(basename "$exe")"
    tar -C "$stage" -czf "$DIST_DIR/$name.tar.gz" "$name"
    (cd "$DIST_DIR" && sha256 "$name.tar.gz" >"$name.tar.gz.sha256")
    echo "dist: $DIST_DIR/$name.tar.gz"
}

package "linkerd-trust-v$version-$DIST_TARGET" linkerd-trust trust-cli/README.md
if [[ " ${bins[*]} " == *" trust-rotation-operator "* ]]; then
    package "trust-rotation-operator-v$version-$DIST_TARGET" trust-rotation-operator README.md
fi
write_checksums
