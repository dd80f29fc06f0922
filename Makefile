# Every target installs what it needs (crates.io, PyPI, Debian, npm only).
#
#   make demo         a full trust-anchor rotation on the cluster simulator, shown live
#   make demo AUTO=1  the same, hands-free: the operator renews and restarts by itself
#   make test         every test (what CI runs)
#
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo
# make demo AUTO=1: the hands-free rotation (spec.automation on) instead of the guide's steps.
AUTO ?= 0
export CARGO_TERM_COLOR ?= never

# Python tools (the Helm engine, pytest, a recent kubectl) live in a local virtualenv.
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS := e2e/charts/requirements.txt
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum $(REQUIREMENTS) 2>/dev/null | cut -c1-12)
# Scripts find the venv's kubectl and python first.
E2E_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHON="$(CURDIR)/$(PY)"

CRD := crds/trust.linkerd.io_trustanchorrotations.yaml
CHART_CRD := helm/trust-rotation-operator-crds/templates/trust.linkerd.io_trustanchorrotations.yaml
SCRIPTS := e2e/walkthrough.sh e2e/hands-free.sh e2e/demo.sh e2e/kind/run.sh e2e/charts/apply-to-sim.sh .ci/run \
	dist/build.sh dist/install.sh e2e/check_one_build.sh
# faketime: the operator's chaos tests run a replica whose clock is 30 s ahead, and its schedule
# tests (e2e_schedule) move its clock hours ahead to reach renewals and maintenance windows
# (libfaketime).
DEBIAN_TOOLS := shellcheck curl faketime

# What a first `make demo` costs on a clean clone (measured: README, "Two commands").
FIRST_BUILD_CRATES := 330
FIRST_BUILD_MINUTES := 11

# `make bench` runs every `[[bench]]` target of the workspace (cluster-sim's,
# linkerd-trust's, the steps' and the operator's, e.g. mesh_scale, inspect, probe_cost,
# rotation_scale); a new bench target is picked up by itself. Narrow it with e.g. `make bench
# BENCH_ARGS="-p linkerd-trust"`.
BENCH_ARGS ?= --workspace

.PHONY: help
help: ## List targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# --- tools -------------------------------------------------------------------------

.PHONY: toolchain
toolchain:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt

$(VENV_STAMP): $(REQUIREMENTS)
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r $(REQUIREMENTS)
	rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## Python virtualenv: helm-python-sdk, pytest, kubectl

.PHONY: debian-tools
debian-tools:
	@missing=""; for t in $(DEBIAN_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

# --- build -------------------------------------------------------------------------

.PHONY: build
build: toolchain ## Release binaries: linkerd-trust, trust-rotation-operator, cluster-sim
	$(CARGO) build --locked --release --bins
	@ls -1 target/release/linkerd-trust target/release/trust-rotation-operator target/release/cluster-sim

.PHONY: bins
bins: toolchain
	@[ -x target/debug/linkerd-trust ] || echo "First build: cargo compiles about $(FIRST_BUILD_CRATES) crates, \
	about $(FIRST_BUILD_MINUTES) minutes on a 2-core machine (cargo shows its progress below); later runs reuse them."
	$(CARGO) build --locked --bins

.PHONY: sim-bin
sim-bin: toolchain
	$(CARGO) build --locked -p cluster-sim --bin cluster-sim

# --- release -----------------------------------------------------------------------

# `make dist` packages the host's binaries exactly as .github/workflows/release.yml packages each
# target's (both run dist/build.sh): target/dist/linkerd-trust-v<version>-<target>.tar.gz, on
# Linux trust-rotation-operator-v<version>-<target>.tar.gz, each with its .sha256, install.sh
# and checksums.txt. The workflow sets e.g. CARGO="cargo zigbuild"
# DIST_TARGET=x86_64-unknown-linux-musl. `make test` packages the dev build (DIST_PROFILE=dev,
# see install-test): the tests have built it already, so nothing is compiled twice.
DIST_TARGET ?= $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
DIST_PROFILE ?= release

.PHONY: dist
dist: toolchain ## Release archives + SHA-256 checksums for the host in target/dist (DIST_PROFILE=dev: no release build)
	CARGO="$(CARGO)" DIST_TARGET="$(DIST_TARGET)" DIST_PROFILE="$(DIST_PROFILE)" dist/build.sh

# install.sh against the archives `make dist` built, served from 127.0.0.1 under the names a
# release gives them. The dev profile's archives by default: `make install-test
# DIST_PROFILE=release` tests the release build's.
.PHONY: install-test
install-test: DIST_PROFILE = dev
install-test: venv debian-tools dist ## install.sh from a loopback "release": install, checksum mismatch, unsupported OS/arch, 404
	$(E2E_ENV) $(PY) -m pytest -q -p no:cacheprovider e2e/install

.PHONY: workflow-lint
workflow-lint: venv debian-tools ## actionlint (with shellcheck on run: blocks) and zizmor on .github/workflows
	$(VENV)/bin/actionlint -shellcheck "$$(command -v shellcheck)"
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml .github/workflows

# --- code --------------------------------------------------------------------------

.PHONY: fmt
fmt: toolchain ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: toolchain ## rustfmt check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

.PHONY: generate
generate: toolchain ## Regenerate the CRD YAML from the Rust types (and the chart's copy)
	$(CARGO) run --locked -q -p trust-rotation-crds --bin crdgen > $(CRD)
	cp $(CRD) $(CHART_CRD)

.PHONY: unit
unit: toolchain debian-tools
	$(CARGO) test --locked --workspace

# Every crate compiles once per profile: workspace-hack/ (cargo-hakari) gives all builds one
# feature set, and this fails when a later build (bins, the simulator, crdgen) would compile a
# dependency again after `cargo test`.
.PHONY: one-build
one-build: unit
	e2e/check_one_build.sh

.PHONY: crd-fresh
crd-fresh: toolchain ## Fail when the committed CRD or the chart's copy differs from crdgen
	@$(CARGO) run --locked -q -p trust-rotation-crds --bin crdgen | diff -u $(CRD) - \
		|| { echo "$(CRD) is stale: run make generate"; exit 1; }
	@diff -u $(CRD) $(CHART_CRD) || { echo "$(CHART_CRD) is stale: run make generate"; exit 1; }
	@echo "CRD and chart copy are fresh"

# --- charts and scripts ------------------------------------------------------------

.PHONY: chart-test
chart-test: venv bins ## Helm lint/render/RBAC checks and the scripts' DRY_RUN command sequences
	$(E2E_ENV) $(PY) -m pytest -q -p no:cacheprovider e2e/charts

.PHONY: scripts-lint
scripts-lint: debian-tools ## shellcheck every script
	shellcheck $(SCRIPTS)

.PHONY: chart-sim
chart-sim: venv sim-bin debian-tools ## Apply the rendered charts to the simulator with kubectl
	$(E2E_ENV) e2e/charts/apply-to-sim.sh

# --- end to end --------------------------------------------------------------------

.PHONY: e2e-sim
e2e-sim: venv bins debian-tools ## The guide's walkthrough against the operator on the simulator
	$(E2E_ENV) LIVE=0 AUTO=0 e2e/demo.sh

.PHONY: rbac-sim
rbac-sim: venv bins debian-tools ## e2e-sim with the operator confined to the chart's RBAC (rbac_proxy.py), manual and hands-free
	$(E2E_ENV) LIVE=0 RBAC=1 AUTO=0 e2e/demo.sh
	$(E2E_ENV) LIVE=0 RBAC=1 AUTO=1 e2e/demo.sh

.PHONY: demo
demo: venv bins debian-tools ## A full rotation on the simulator, shown live (about 20 s once built; the first build takes about 11 minutes on 2 cores); AUTO=1: hands-free, the operator renews and restarts itself
	$(E2E_ENV) LIVE=1 AUTO=$(AUTO) e2e/demo.sh

.PHONY: e2e
e2e: $(if $(filter 1,$(DRY_RUN)),,build) ## The guide on a kind cluster (needs docker, kind, helm; DRY_RUN=1 prints the commands)
	e2e/kind/run.sh

.PHONY: bench
bench: toolchain ## Every benchmark (cargo bench targets of the workspace)
	$(CARGO) bench --locked --benches $(BENCH_ARGS)

# CI's smoke run of the operator's rotation_scale bench: 1,000 pods, built in the test profile
# (`cargo test --bench`, so `make test` compiles no dependency a second time, unlike `cargo
# bench`); it checks that the rotation completes with mTLS intact and that the table and
# target/bench/rotation_scale-1000.json are written, never how fast.
.PHONY: bench-smoke
bench-smoke: toolchain ## rotation_scale at 1,000 pods in the test profile (no timing assertion)
	ROTATION_BENCH_PODS=1000 $(CARGO) test --locked -p trust-rotation-operator --bench rotation_scale

# --- everything --------------------------------------------------------------------

.PHONY: test
test: lint unit one-build crd-fresh chart-test scripts-lint chart-sim e2e-sim bench-smoke rbac-sim workflow-lint install-test ## Every test: lint, unit, CRD freshness, charts, scripts, simulator end to end (also under the chart RBAC), the rotation bench's 1,000-pod smoke run, workflow lint, install.sh on make dist's archives
	@echo "make test: all checks passed"
