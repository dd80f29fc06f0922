# syntax=docker/dockerfile:1.7
# The trust-rotation operator image: a release build in the official Rust image, shipped on
# distroless (glibc, CA certificates, no shell, no package manager) as the nonroot user.
#
#   docker build -t trust-rotation-operator:dev .
#
# The chart runs it with a read-only root filesystem and every capability dropped; the
# operator writes nothing to disk.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The workspace's Cargo.lock pins every dependency (--locked); BuildKit caches the
# registry and target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trust-rotation-operator --bin trust-rotation-operator \
 && install -D -m 0755 target/release/trust-rotation-operator /out/trust-rotation-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="trust-rotation-operator" \
      org.opencontainers.image.description="Rotates a Linkerd service mesh's trust anchor end to end without breaking mTLS" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/trust-rotation-operator /usr/local/bin/trust-rotation-operator
# 65532 is distroless's nonroot user; the chart's securityContext uses the same ids.
USER 65532:65532
EXPOSE 9990
ENTRYPOINT ["/usr/local/bin/trust-rotation-operator"]
