#!/bin/sh
# Installs linkerd-trust, the `linkerd trust` CLI extension, next to the linkerd CLI:
#
#   curl -sSfL https://github.com/linkerd-trust/trust-rotation-operator/releases/latest/download/install.sh | sh
#
# It picks the release archive for this OS and CPU, verifies it against its published SHA-256
# checksum (and installs nothing when they differ), and puts the binary in
# ${LINKERD2_DIR:-$HOME/.linkerd2}/bin, where `curl -sL https://run.linkerd.io/install | sh`
# puts `linkerd`; `linkerd trust ...` runs it from your PATH.
#
# Environment:
#   LINKERD_TRUST_VERSION      release to install, e.g. 0.1.0 or v0.1.0 (default: the latest)
#   LINKERD_TRUST_RELEASE_URL  where the releases are (default: the GitHub repository's releases)
#   LINKERD2_DIR               install root (default: $HOME/.linkerd2); the binary goes in bin/
set -eu

REPOSITORY=https://github.com/linkerd-trust/trust-rotation-operator
RELEASE_URL=${LINKERD_TRUST_RELEASE_URL:-$REPOSITORY/releases}
RELEASE_URL=${RELEASE_URL%/}
VERSION=${LINKERD_TRUST_VERSION:-latest}
INSTALL_ROOT=${LINKERD2_DIR:-${HOME:?HOME is not set}/.linkerd2}
BIN_DIR=$INSTALL_ROOT/bin
SUPPORTED="Linux x86_64 (amd64), Linux aarch64 (arm64), Darwin x86_64, Darwin arm64"

say() { printf '%s\n' "$*"; }
fail() { printf 'linkerd-trust install: %s\n' "$*" >&2; exit 1; }

# The release's target triple for this machine.
os=$(uname -s)
arch=$(uname -m)
case "$os/$arch" in
    Linux/x86_64 | Linux/amd64) target=x86_64-unknown-linux-musl ;;
    Linux/aarch64 | Linux/arm64) target=aarch64-unknown-linux-musl ;;
    Darwin/x86_64) target=x86_64-apple-darwin ;;
    Darwin/arm64 | Darwin/aarch64) target=aarch64-apple-darwin ;;
    *) fail "no linkerd-trust release for $os $arch; releases exist for: $SUPPORTED (or build from source: $REPOSITORY)" ;;
esac

if command -v curl >/dev/null 2>&1; then
    downloader=curl
elif command -v wget >/dev/null 2>&1; then
    downloader=wget
else
    fail "neither curl nor wget found"
fi

# download URL FILE
download() {
    if [ "$downloader" = curl ]; then
        curl -sSfL -o "$2" "$1"
    else
        wget -q -O "$2" "$1"
    fi
}

# The latest release's tag, from where <releases>/latest redirects (<releases>/tag/vX.Y.Z).
latest_tag() {
    if [ "$downloader" = curl ]; then
        location=$(curl -sSfL -o /dev/null -w '%{url_effective}' "$RELEASE_URL/latest") || return 1
    else
        location=$(wget -S --spider "$RELEASE_URL/latest" 2>&1 | sed -n 's/^ *[Ll]ocation: *\([^ ]*\).*/\1/p' | tail -n 1) || return 1
    fi
    location=$(printf '%s' "$location" | tr -d '\r')
    case "$location" in
        */tag/v[0-9]*) printf '%s\n' "${location##*/tag/}" ;;
        *) return 1 ;;
    esac
}

if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
else
    fail "neither sha256sum nor shasum found: cannot verify the download"
fi

if [ "$VERSION" = latest ]; then
    tag=$(latest_tag) || fail "could not find the latest release at $RELEASE_URL/latest"
else
    tag=v${VERSION#v}
fi
archive=linkerd-trust-$tag-$target.tar.gz
url=$RELEASE_URL/download/$tag/$archive

tmp=$(mktemp -d 2>/dev/null || mktemp -d -t linkerd-trust)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

say "Downloading $url"
download "$url" "$tmp/$archive" ||
    fail "could not download $url: is $tag a release with a $target archive? (releases: $RELEASE_URL)"
download "$url.sha256" "$tmp/$archive.sha256" ||
    fail "could not download the checksum $url.sha256"

expected=$(cut -d ' ' -f 1 <"$tmp/$archive.sha256" | tr 'A-F' 'a-f')
actual=$(sha256 "$tmp/$archive")
case "$expected" in
    '' | *[!0-9a-f]*) fail "$archive.sha256 holds no SHA-256 checksum; nothing installed" ;;
esac
if [ "$expected" != "$actual" ]; then
    fail "checksum mismatch for $archive: expected $expected, got $actual; nothing installed"
fi
say "Checksum verified (SHA-256 $actual)"

tar -xzf "$tmp/$archive" -C "$tmp"
binary=$tmp/linkerd-trust-$tag-$target/linkerd-trust
[ -f "$binary" ] || fail "$archive holds no linkerd-trust-$tag-$target/linkerd-trust; nothing installed"

mkdir -p "$BIN_DIR"
# Copy, then rename: a running linkerd-trust is never overwritten half-way.
cp "$binary" "$BIN_DIR/.linkerd-trust.new"
chmod 0755 "$BIN_DIR/.linkerd-trust.new"
mv -f "$BIN_DIR/.linkerd-trust.new" "$BIN_DIR/linkerd-trust"

say ""
say "linkerd-trust $tag installed to $BIN_DIR/linkerd-trust"
case ":${PATH:-}:" in
    *":$BIN_DIR:"*) ;;
    *)
        say ""
        say "Add it to your PATH (where the linkerd CLI is too), e.g. in ~/.profile:"
        say ""
        say "  export PATH=\$PATH:$BIN_DIR"
        ;;
esac
say ""
say "Then check it, and the operator it talks to:"
say ""
say "  linkerd trust version"
say "  linkerd trust check"
