# Every target installs what it needs (crates.io, PyPI, Debian, npm only).
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help
help: ## List targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: toolchain
toolchain:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt

.PHONY: build
build: toolchain ## Release binaries: linkerd-trust, trust-rotation-operator, cluster-sim
	$(CARGO) build --locked --release --bins

.PHONY: fmt
fmt: toolchain ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: toolchain ## rustfmt check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

.PHONY: generate
generate: toolchain ## Regenerate the CRD YAML from the Rust types
	$(CARGO) run --locked -q -p trust-rotation-crds --bin crdgen > crds/trust.linkerd.io_trustanchorrotations.yaml

.PHONY: unit
unit: toolchain
	$(CARGO) test --locked --workspace

.PHONY: test
test: lint unit ## Every test: lint, unit, simulator, CLI, operator end to end, charts, walkthrough
