"""The RBAC proxy that confines the operator to the chart's RBAC on the simulator
(`make rbac-sim`) authorizes requests the way the API server's RBAC does."""
from __future__ import annotations

import pytest

from rbac_proxy import Attrs, Rbac, request_attrs
from render import render


@pytest.mark.parametrize("method, target, expected", [
    ("GET", "/api/v1/namespaces/linkerd/secrets/x", Attrs("get", "", "secrets", "linkerd", "x")),
    ("GET", "/api/v1/namespaces/linkerd/secrets?limit=500", Attrs("list", "", "secrets", "linkerd", None)),
    ("GET", "/api/v1/namespaces/linkerd/secrets?watch=true&fieldSelector=metadata.name%3Dx",
     Attrs("watch", "", "secrets", "linkerd", "x")),
    ("GET", "/api/v1/pods?labelSelector=a%3Db", Attrs("list", "", "pods", None, None)),
    ("PATCH", "/apis/apps/v1/namespaces/linkerd/deployments/linkerd-identity",
     Attrs("patch", "apps", "deployments", "linkerd", "linkerd-identity")),
    ("PATCH", "/apis/trust.linkerd.io/v1alpha1/trustanchorrotations/cluster/status",
     Attrs("patch", "trust.linkerd.io", "trustanchorrotations/status", None, "cluster")),
    ("POST", "/apis/events.k8s.io/v1/namespaces/default/events", Attrs("create", "events.k8s.io", "events", "default", None)),
    ("PATCH", "/api/v1/namespaces/emojivoto", Attrs("patch", "", "namespaces", None, "emojivoto")),
    ("DELETE", "/api/v1/namespaces/a/pods", Attrs("deletecollection", "", "pods", "a", None)),
    ("GET", "/apis/apps/v1", None),
    ("GET", "/version", None),
])
def test_request_attributes(method: str, target: str, expected: Attrs | None) -> None:
    assert request_attrs(method, target) == expected


@pytest.fixture(scope="module")
def chart_rbac() -> Rbac:
    return Rbac([d for d in render("trust-rotation-operator", namespace="linkerd") if d["kind"] in ("ClusterRole", "Role")])


@pytest.mark.parametrize("attrs, allowed", [
    (Attrs("get", "", "secrets", "cert-manager", "linkerd-trust-anchor"), True),
    (Attrs("watch", "", "secrets", "cert-manager", "linkerd-trust-anchor"), True),
    # A Role's grant does not leak into other namespaces, nor to other names.
    (Attrs("get", "", "secrets", "linkerd", "linkerd-trust-anchor"), False),
    (Attrs("get", "", "secrets", "cert-manager", "cert-manager-webhook-ca"), False),
    (Attrs("list", "", "secrets", "cert-manager", None), False),
    (Attrs("patch", "", "secrets", "cert-manager", "linkerd-trust-anchor"), False),
    (Attrs("patch", "", "secrets", "cert-manager", "linkerd-previous-anchor"), True),
    (Attrs("patch", "apps", "deployments", "linkerd", "linkerd-destination"), True),
    (Attrs("patch", "apps", "deployments", "emojivoto", "web"), False),
    (Attrs("patch", "", "namespaces", None, "emojivoto"), False),
    (Attrs("list", "", "pods", None, None), True),
    (Attrs("patch", "trust.linkerd.io", "trustanchorrotations/status", None, "cluster"), True),
    (Attrs("update", "coordination.k8s.io", "leases", "linkerd", "trust-rotation-operator"), True),
])
def test_chart_rbac_decisions(chart_rbac: Rbac, attrs: Attrs, allowed: bool) -> None:
    assert chart_rbac.allows(attrs) is allowed
