"""The kind end-to-end run and the walkthrough in DRY_RUN mode: every command, in the
order the user guide gives them (these scripts cannot run on CI machines, so their
command sequence is what we can check)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from render import REPO

PHASE_WAIT = r"^kubectl wait --for=jsonpath=\{\.status\.phase\}=%s trustanchorrotations\.trust\.linkerd\.io/%s --timeout=\S+$"


def dry_run(script: str, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("LINKERD_TRUST", "USE_CMCTL", "WORKLOAD_NAMESPACES")}
    full.update(DRY_RUN="1", **env)
    out = subprocess.run([str(REPO / script)], env=full, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]


def assert_in_order(commands: list[str], patterns: list[str]) -> None:
    """Each pattern matches a command, in this order (other commands may come between)."""
    i = 0
    for pattern in patterns:
        rx = re.compile(pattern)
        while i < len(commands) and not rx.search(commands[i]):
            i += 1
        assert i < len(commands), f"no command matching {pattern!r} after the previous step:\n" + "\n".join(commands)
        i += 1


def walkthrough_steps(renew_anchor: str, renew_issuer: str, rotation: str = "cluster", ns: str = "emojivoto",
                      cli: str = r"\S*linkerd-trust") -> list[str]:
    restart = [rf"^kubectl -n {ns} rollout restart deploy$", rf"^kubectl -n {ns} rollout status "]
    return [
        rf"^{cli} check --pre --wait \S+$",
        PHASE_WAIT % ("Synced", rotation),
        renew_anchor,
        PHASE_WAIT % ("PropagatingTrustRoots", rotation),
        *restart,
        PHASE_WAIT % ("WaitingForIdentityRotation", rotation),
        rf"^{cli} inspect",
        renew_issuer,
        r"=RenewingWorkloadCerts .* &$",
        *restart,
        PHASE_WAIT % ("RemovingOldTrustRoots", rotation),
        *restart,
        PHASE_WAIT % ("Synced", rotation),
        rf"^{cli} inspect",
    ]


@pytest.mark.parametrize("use_cmctl", ["1", "0"])
def test_kind_e2e_runs_the_guide_in_order(use_cmctl: str) -> None:
    cmds = dry_run("e2e/kind/run.sh", USE_CMCTL=use_cmctl)
    if use_cmctl == "1":
        anchor, issuer = r"^cmctl renew -n cert-manager linkerd-trust-anchor$", r"^cmctl renew -n linkerd linkerd-identity-issuer$"
    else:
        anchor, issuer = r"linkerd-trust renew anchor$", r"linkerd-trust renew issuer$"
    assert_in_order(cmds, [
        r"^kind create cluster --name trust-rotation-e2e\b",
        r"^helm repo add jetstack https://charts\.jetstack\.io",
        r"^helm install cert-manager jetstack/cert-manager --namespace cert-manager --create-namespace .*--set crds\.enabled=true .*--wait",
        r"^helm install linkerd-cert-manager -n linkerd --create-namespace \S*/helm/linkerd-cert-manager .*--wait",
        r"^kubectl -n cert-manager wait certificate/linkerd-trust-anchor --for=condition=Ready",
        r"linkerd-trust bundle \| kubectl apply -f -$",
        r"^kubectl apply -f https://github\.com/kubernetes-sigs/gateway-api/releases/download/v1\.2\.1/experimental-install\.yaml$",
        r"^helm repo add linkerd-edge https://helm\.linkerd\.io/edge",
        r"^helm install linkerd-crds -n linkerd .*linkerd-edge/linkerd-crds",
        r"^helm install linkerd-control-plane -n linkerd linkerd-edge/linkerd-control-plane .*--set identity\.externalCA=true .*--set identity\.issuer\.scheme=kubernetes\.io/tls",
        r"^docker build -t trust-rotation-operator:e2e ",
        r"^kind load docker-image trust-rotation-operator:e2e --name trust-rotation-e2e$",
        r"^helm install -n linkerd trust-rotation-operator-crds \S*/helm/trust-rotation-operator-crds .*--wait",
        r"^helm install -n linkerd trust-rotation-operator \S*/helm/trust-rotation-operator --set image\.repository=trust-rotation-operator --set image\.tag=e2e --set image\.pullPolicy=Never .*--wait",
        r"^kubectl annotate namespace emojivoto linkerd\.io/inject=enabled$",
        r"^kubectl apply -n emojivoto -f https://run\.linkerd\.io/emojivoto\.yml$",
        r"linkerd-trust check --wait",
        *walkthrough_steps(anchor, issuer),
        r"^kind delete cluster --name trust-rotation-e2e$",
    ])
    # The PKI and the bundle exist before Linkerd is installed, as the guide requires.
    first = {k: next(i for i, c in enumerate(cmds) if k in c) for k in ("linkerd-cert-manager", "bundle |", "linkerd-control-plane")}
    assert first["linkerd-cert-manager"] < first["bundle |"] < first["linkerd-control-plane"]


def test_kind_e2e_honours_image_and_cluster_overrides() -> None:
    cmds = dry_run("e2e/kind/run.sh", CLUSTER="ci-1", IMAGE="local/tro:abc", USE_CMCTL="1",
                   LINKERD_VERSION="2026.11.1")
    assert "kind load docker-image local/tro:abc --name ci-1" in cmds
    assert any("--set image.repository=local/tro --set image.tag=abc" in c for c in cmds)
    assert sum("--version 2026.11.1" in c for c in cmds) == 2, "both Linkerd charts pinned"
    assert cmds[-1] == "kind delete cluster --name ci-1"


def test_walkthrough_follows_configured_names() -> None:
    cmds = dry_run("e2e/walkthrough.sh", ROTATION="mesh-a", WORKLOAD_NAMESPACES="shop", USE_CMCTL="1",
                   CERT_MANAGER_NS="pki", LINKERD_NS="l5d", TRUST_ANCHOR="root", IDENTITY_ISSUER="issuer",
                   LINKERD_TRUST="linkerd trust")
    assert_in_order(cmds, walkthrough_steps(r"^cmctl renew -n pki root$", r"^cmctl renew -n l5d issuer$",
                                            rotation="mesh-a", ns="shop", cli="linkerd trust"))


def test_walkthrough_restarts_every_listed_namespace() -> None:
    cmds = dry_run("e2e/walkthrough.sh", WORKLOAD_NAMESPACES="a b", USE_CMCTL="0", LINKERD_TRUST="linkerd-trust")
    restarts = [c for c in cmds if "rollout restart" in c]
    assert restarts == ["kubectl -n a rollout restart deploy", "kubectl -n b rollout restart deploy"] * 3


@pytest.mark.parametrize("script", ["e2e/walkthrough.sh", "e2e/kind/run.sh"])
def test_scripts_never_sleep(script: str) -> None:
    text = (REPO / script).read_text()
    assert not re.search(r"^\s*[^#]*\bsleep\s+[0-9]", text, re.M), f"{script} waits with sleep"


def test_dockerfile_is_multi_stage_static_locked_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (.+?)(?: AS \S+)?$", text, re.M)
    assert len(stages) == 2
    # The build runs on the builder's platform and cross-compiles (no emulation per arch)...
    assert stages[0].startswith("--platform=$BUILDPLATFORM "), stages[0]
    # ...to a static musl binary, on an image with no libc: distroless static, non-root.
    assert stages[-1] == "gcr.io/distroless/static-debian12:nonroot", stages[-1]
    assert re.search(
        r"cargo zigbuild --release --locked --target \"\$triple\" -p trust-rotation-operator", text
    )
    assert "amd64) triple=x86_64-unknown-linux-musl" in text
    assert "arm64) triple=aarch64-unknown-linux-musl" in text
    [user] = re.findall(r"^USER (\S+)$", text, re.M)
    # The chart's pod security context runs the same ids the image declares.
    from render import render
    [dep] = [d for d in render("trust-rotation-operator") if d["kind"] == "Deployment"]
    psc = dep["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{psc['runAsUser']}:{psc['runAsGroup']}"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/trust-rotation-operator"\]$', text, re.M)


@pytest.mark.parametrize("use_cmctl", ["1", "0"])
def test_hands_free_renews_the_anchor_and_then_runs_nothing(use_cmctl: str) -> None:
    cmds = dry_run("e2e/hands-free.sh", USE_CMCTL=use_cmctl, LINKERD_TRUST="linkerd-trust")
    anchor = (r"^cmctl renew -n cert-manager linkerd-trust-anchor$" if use_cmctl == "1"
              else r"^linkerd-trust renew anchor$")
    assert_in_order(cmds, [
        r"^linkerd-trust check --pre --wait \S+$",
        PHASE_WAIT % ("Synced", "cluster"),
        r"^linkerd-trust plan$",
        anchor,
    ])
    # The anchor renewal is the last command: after it a person does nothing.
    assert re.search(anchor, cmds[-1]), cmds
    assert not [c for c in cmds if "rollout restart" in c or "renew issuer" in c or "identity-issuer" in c], cmds
