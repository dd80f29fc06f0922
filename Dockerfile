# syntax=docker/dockerfile:1.7
# The trust-rotation operator image: a static (musl) binary on distroless `static` (CA
# certificates, no libc, no shell, no package manager), run as the nonroot user. Multi-arch:
# the build stage runs on the builder's own platform and cross-compiles with cargo-zigbuild
# to each target platform's musl triple, so no emulation is needed.
#
#   docker build -t trust-rotation-operator:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t trust-rotation-operator:dev .
#
# The chart runs it with a read-only root filesystem and every capability dropped; the
# operator writes nothing to disk. TLS is rustls with ring (no OpenSSL), so nothing else is
# linked in.
ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
# cargo-zigbuild and Zig from PyPI (pinned): zig is the C compiler and linker for ring's C
# and assembly, for either architecture.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/zig \
 && /opt/zig/bin/pip install -q --disable-pip-version-check cargo-zigbuild==0.24.1 ziglang==0.16.0 \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
ENV PATH=/opt/zig/bin:$PATH
WORKDIR /src
COPY . .
# The workspace's Cargo.lock pins every dependency (--locked); BuildKit caches the
# registry and target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH (amd64, arm64)" >&2; exit 1 ;; \
    esac \
 && cargo zigbuild --release --locked --target "$triple" -p trust-rotation-operator --bin trust-rotation-operator \
 && install -D -m 0755 "target/$triple/release/trust-rotation-operator" /out/trust-rotation-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="trust-rotation-operator" \
      org.opencontainers.image.description="Rotates a Linkerd service mesh's trust anchor end to end without breaking mTLS" \
      org.opencontainers.image.source="https://github.com/linkerd-trust/trust-rotation-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/trust-rotation-operator /usr/local/bin/trust-rotation-operator
# 65532 is distroless's nonroot user; the chart's securityContext uses the same ids.
USER 65532:65532
EXPOSE 9990
ENTRYPOINT ["/usr/local/bin/trust-rotation-operator"]
