"""Chart checks with the real Helm engine: lint, schema, render with default and
non-default values, and the properties a platform team relies on (least-privilege RBAC,
a locked-down pod, the guide's default TrustAnchorRotation and PKI)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from render import HELM, REPO, notes, render

OPERATOR = "trust-rotation-operator"
CHARTS = ["trust-rotation-operator-crds", "trust-rotation-operator", "linkerd-cert-manager"]

# The metric names the user guide promises (its "Observability" section).
GUIDE_METRICS = [
    "trust_rotation_phase",
    "trust_rotation_trust_bundle_converged_pods",
    "trust_rotation_trust_bundle_target_pods",
    "trust_rotation_workload_certificates_converged_pods",
    "trust_rotation_workload_certificates_target_pods",
    "trust_rotation_active_issuer_info",
    "trust_rotation_previous_anchor_info",
    "trust_rotation_workload_certificate_refresh_interval_seconds",
]


def defaults_rs() -> dict[str, str]:
    """The default names from crds/src/defaults.rs, the single source of truth."""
    text = (REPO / "crds/src/defaults.rs").read_text()
    return dict(re.findall(r'pub const (DEFAULT_[A-Z_]+): &str = "([^"]*)";', text))


D = defaults_rs()


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rbac_grants(docs: list[dict[str, Any]]) -> dict[tuple, set[str]]:
    """(namespace or '*cluster*', apiGroup, resource, resourceName or '') -> verbs."""
    grants: dict[tuple, set[str]] = {}
    for kind in ("ClusterRole", "Role"):
        for role in by_kind(docs, kind):
            ns = role["metadata"].get("namespace", "*cluster*")
            for rule in role["rules"]:
                for g in rule["apiGroups"]:
                    for r in rule["resources"]:
                        for n in rule.get("resourceNames") or [""]:
                            grants.setdefault((ns, g, r, n), set()).update(rule["verbs"])
    return grants


# === lint and schema ===

@pytest.mark.parametrize("chart", CHARTS)
def test_lint_strict_has_no_errors_or_warnings(chart: str) -> None:
    report = helm.lint(str(HELM / chart), strict=True, namespace="linkerd")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and bad == [], report


@pytest.mark.parametrize("values", [
    {"probe": {"mode": "sideways"}},
    {"trustAnchorRotation": {"workloadCertificateRefreshInterval": "1h30m"}},
    {"log": {"format": "xml"}},
    {"replicaCount": 0},
    {"imageTag": "typo-at-top-level"},
    {"probe": {"timeout": "5 seconds"}},
    {"probe": {"timeout": "1m30s"}},
    {"resyncInterval": "1h30m"},
])
def test_schema_refuses_values_the_operator_or_proxy_would_reject(values: dict) -> None:
    with helm.Chart.load(str(HELM / OPERATOR)) as c:
        with pytest.raises(helm.HelmError):
            c.validate_schema(values)


def test_lint_reports_schema_violations() -> None:
    report = helm.lint(str(HELM / OPERATOR), {"probe": {"mode": "sideways"}}, namespace="linkerd")
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"]), report


def test_schema_accepts_documented_non_default_values() -> None:
    with helm.Chart.load(str(HELM / OPERATOR)) as c:
        c.validate_schema(NON_DEFAULT)


# === the operator chart, default values ===

@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render(OPERATOR, namespace="linkerd")


def test_default_render_has_exactly_the_expected_objects(default_docs) -> None:
    kinds = sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in default_docs)
    assert kinds == sorted([
        ("ServiceAccount", "linkerd", OPERATOR),
        ("ConfigMap", "linkerd", f"{OPERATOR}-dashboard"),
        ("ClusterRole", "", OPERATOR),
        ("ClusterRoleBinding", "", OPERATOR),
        ("Role", "cert-manager", OPERATOR),
        ("RoleBinding", "cert-manager", OPERATOR),
        ("Role", "linkerd", OPERATOR),
        ("RoleBinding", "linkerd", OPERATOR),
        ("Role", "linkerd", f"{OPERATOR}-leader-election"),
        ("RoleBinding", "linkerd", f"{OPERATOR}-leader-election"),
        ("Service", "linkerd", OPERATOR),
        ("Deployment", "linkerd", OPERATOR),
        ("TrustAnchorRotation", "", D["DEFAULT_ROTATION_NAME"]),
        ("Secret", D["DEFAULT_CERT_MANAGER_NAMESPACE"], D["DEFAULT_PREVIOUS_ANCHOR"]),
    ])


def test_rbac_has_no_wildcards_anywhere(default_docs) -> None:
    for d in by_kind(default_docs, "ClusterRole") + by_kind(default_docs, "Role"):
        for rule in d["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(field) or []), (d["metadata"], rule)


def test_rbac_is_exactly_least_privilege(default_docs) -> None:
    cm, l5d = D["DEFAULT_CERT_MANAGER_NAMESPACE"], D["DEFAULT_LINKERD_NAMESPACE"]
    read = {"get", "list", "watch"}
    expected = {
        ("*cluster*", "trust.linkerd.io", "trustanchorrotations", ""): read,
        ("*cluster*", "trust.linkerd.io", "trustanchorrotations/status", ""): {"get", "patch", "update"},
        ("*cluster*", "", "pods", ""): read,
        ("*cluster*", "", "namespaces", ""): read,
        ("*cluster*", "cert-manager.io", "certificates", ""): {"list"},
        ("*cluster*", "events.k8s.io", "events", ""): {"create", "patch"},
        (cm, "", "secrets", D["DEFAULT_TRUST_ANCHOR"]): read,
        (cm, "", "secrets", D["DEFAULT_PREVIOUS_ANCHOR"]): read | {"update", "patch"},
        (l5d, "", "secrets", D["DEFAULT_IDENTITY_ISSUER"]): read,
        (l5d, "", "configmaps", D["DEFAULT_TRUST_ROOTS"]): read | {"update", "patch"},
        (l5d, "", "events", ""): read,
        (l5d, "apps", "replicasets", ""): {"get", "list"},
        (l5d, "coordination.k8s.io", "leases", OPERATOR): {"get", "update"},
        (l5d, "coordination.k8s.io", "leases", ""): {"create"},
    }
    for dep in ("DEFAULT_IDENTITY_DEPLOYMENT", "DEFAULT_DESTINATION_DEPLOYMENT", "DEFAULT_INJECTOR_DEPLOYMENT"):
        expected[(l5d, "apps", "deployments", D[dep])] = read | {"patch"}
    assert rbac_grants(default_docs) == expected


def test_no_secret_is_readable_without_a_name(default_docs) -> None:
    for (ns, group, resource, name), verbs in rbac_grants(default_docs).items():
        if resource == "secrets":
            assert ns != "*cluster*", "Secrets must never be granted cluster-wide"
            assert name, f"unnamed Secret access in {ns}: {verbs}"


# Every combination of the values that change the RBAC.
RBAC_VARIANTS = [
    {},
    {"probe": {"mode": "port-forward"}},
    {"trustAnchorRotation": {"manageProxyRefreshEnv": True}},
    {"leaderElection": {"enabled": False}},
    {"trustAnchorRotation": {"previousAnchor": {"namespace": "linkerd", "name": "prev", "create": False}}},
]


@pytest.mark.parametrize("values", RBAC_VARIANTS + [{"__custom__": True}], ids=lambda v: json.dumps(v))
def test_the_operator_cannot_create_secrets_or_tokens_anywhere(values: dict) -> None:
    """No escalation path: with `create secrets` (and `get` on any Secret) the operator could mint
    a token for another ServiceAccount, e.g. cert-manager's. No rendered rule grants creating a
    Secret in any namespace, nor a ServiceAccount token, nor the RBAC verbs that grant more."""
    docs = NON_DEFAULT if values.get("__custom__") else values
    grants = rbac_grants(render(OPERATOR, docs, namespace="linkerd"))
    for (ns, group, resource, name), verbs in grants.items():
        if group == "" and resource in ("secrets", "serviceaccounts/token"):
            assert not verbs & {"create", "deletecollection", "*"}, (ns, resource, name, verbs)
        assert resource not in ("serviceaccounts/token", "serviceaccounts", "roles", "rolebindings",
                                "clusterroles", "clusterrolebindings"), (ns, resource)
        assert not verbs & {"escalate", "bind", "impersonate", "*"}, (ns, resource, verbs)


def test_the_chart_creates_the_previous_anchor_secret_empty_and_keeps_it(default_docs) -> None:
    secret = one(default_docs, "Secret")
    assert secret["type"] == "Opaque"
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == (
        D["DEFAULT_CERT_MANAGER_NAMESPACE"], D["DEFAULT_PREVIOUS_ANCHOR"])
    assert "data" not in secret and "stringData" not in secret, "the operator fills it in"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    docs = render(OPERATOR, {"trustAnchorRotation": {"previousAnchor": {
        "namespace": "cert-manager", "name": "linkerd-previous-anchor", "create": False}}})
    assert by_kind(docs, "Secret") == []


def test_bindings_point_at_the_operator_service_account(default_docs) -> None:
    for b in by_kind(default_docs, "ClusterRoleBinding") + by_kind(default_docs, "RoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": "linkerd"}]
        role_kind = b["roleRef"]["kind"]
        roles = [r for r in by_kind(default_docs, role_kind) if r["metadata"]["name"] == b["roleRef"]["name"]
                 and r["metadata"].get("namespace") == b["metadata"].get("namespace")]
        assert len(roles) == 1, f"binding {b['metadata']} points at a missing {role_kind}"


def test_pod_is_locked_down_and_unmeshed(default_docs) -> None:
    dep = one(default_docs, "Deployment")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"]["linkerd.io/inject"] == "disabled"
    psc = pod["spec"]["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["spec"]["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_deployment_runs_the_operator_with_its_flags_and_probes(default_docs) -> None:
    dep = one(default_docs, "Deployment")
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/linkerd-trust/trust-rotation-operator:0.1.0"
    assert c["args"] == [
        "--admin-addr=0.0.0.0:9990", "--log-level=info", "--log-format=json",
        "--leader-election=true", "--lease-namespace=linkerd",
        f"--lease-name={OPERATOR}", "--probe=direct", "--probe-concurrency=50",
        "--probe-timeout=5s", "--resync-interval=30s",
    ]
    assert c["ports"] == [{"name": "admin-http", "containerPort": 9990, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "admin-http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin-http"}
    env = {e["name"]: e for e in c["env"]}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env, "no endpoint configured: export must be off"
    svc = one(default_docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "admin-http"


def test_default_trust_anchor_rotation_is_the_guides(default_docs) -> None:
    tar = one(default_docs, "TrustAnchorRotation")
    assert tar["apiVersion"] == "trust.linkerd.io/v1alpha1"
    assert tar["metadata"]["name"] == "cluster"
    assert "namespace" not in tar["metadata"], "TrustAnchorRotation is cluster-scoped"
    cm, l5d = D["DEFAULT_CERT_MANAGER_NAMESPACE"], D["DEFAULT_LINKERD_NAMESPACE"]
    assert tar["spec"] == {
        "paused": False,
        "workloadCertificateRefreshInterval": D["DEFAULT_REFRESH_INTERVAL"],
        "stallTimeout": D["DEFAULT_STALL_TIMEOUT"],
        "manageProxyRefreshEnv": False,
        "trustDomain": D["DEFAULT_TRUST_DOMAIN"],
        "automation": {"issuerRenewal": "Manual",
                       "approvals": {"beforeIssuerRenewal": False, "beforeRootRemoval": False},
                       "workloadRestarts": "Manual", "maxConcurrentWorkloads": 1},
        "trustAnchor": {"namespace": cm, "certificate": D["DEFAULT_TRUST_ANCHOR"], "secret": D["DEFAULT_TRUST_ANCHOR"]},
        "previousAnchor": {"namespace": cm, "name": D["DEFAULT_PREVIOUS_ANCHOR"]},
        "identityIssuer": {"namespace": l5d, "certificate": D["DEFAULT_IDENTITY_ISSUER"], "secret": D["DEFAULT_IDENTITY_ISSUER"]},
        "trustRoots": {"namespace": l5d, "name": D["DEFAULT_TRUST_ROOTS"], "key": D["DEFAULT_TRUST_ROOTS_KEY"]},
        "controlPlane": {
            "namespace": l5d,
            "identityDeployment": D["DEFAULT_IDENTITY_DEPLOYMENT"],
            "proxyInjectorDeployment": D["DEFAULT_INJECTOR_DEPLOYMENT"],
            "otherDeployments": [D["DEFAULT_DESTINATION_DEPLOYMENT"]],
        },
    }


def test_trust_anchor_rotation_validates_against_the_crd(default_docs) -> None:
    crd = yaml.safe_load_all((REPO / "crds/trust.linkerd.io_trustanchorrotations.yaml").read_text())
    [crd] = [d for d in crd if d]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for values in ({}, NON_DEFAULT):
        tar = one(render(OPERATOR, values, namespace="linkerd"), "TrustAnchorRotation")
        jsonschema.validate(tar, schema)


def test_monitoring_is_off_by_default(default_docs) -> None:
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert by_kind(default_docs, kind) == []


def test_notes_point_to_linkerd_trust_check() -> None:
    text = notes(OPERATOR)
    assert "linkerd trust check" in text and "linkerd trust inspect" in text


# === the operator chart, non-default values ===

NON_DEFAULT: dict[str, Any] = {
    "replicaCount": 2,
    "image": {"repository": "registry.example/tro", "digest": "sha256:" + "ab" * 32},
    "log": {"level": "debug", "format": "plain"},
    "otlp": {"endpoint": "http://otel-collector.observability:4317",
             "headersSecret": {"name": "otlp-auth", "key": "headers"}},
    "leaderElection": {"leaseName": "tro-lease"},
    "resyncInterval": "1m",
    "probe": {"mode": "port-forward", "concurrency": 200, "timeout": "2s"},
    "adminPort": 9100,
    "trustAnchorRotation": {
        "workloadCertificateRefreshInterval": "300s",
        "manageProxyRefreshEnv": True,
        "automation": {"issuerRenewal": "Automatic",
                       "approvals": {"beforeIssuerRenewal": True, "beforeRootRemoval": True},
                       "workloadRestarts": "Automatic", "maxConcurrentWorkloads": 2,
                       "namespaceSelector": {"matchLabels": {"linkerd.io/is-control-plane": "false"}},
                       "workloadSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                       "schedule": {"renewAnchorBefore": "720h", "maintenanceWindows": [
                           {"weekdays": ["Tue", "Thu"], "start": "02:00", "duration": "4h",
                            "timeZone": "Europe/Berlin"}]}},
        "trustAnchor": {"namespace": "pki", "certificate": "root", "secret": "root-tls"},
        "previousAnchor": {"namespace": "pki", "name": "root-previous"},
        "identityIssuer": {"namespace": "mesh", "certificate": "issuer", "secret": "issuer-tls"},
        "trustRoots": {"namespace": "mesh", "name": "roots", "key": "bundle.pem"},
        "controlPlane": {"namespace": "mesh", "identityDeployment": "id",
                         "proxyInjectorDeployment": "inj", "otherDeployments": ["dst", "policy"]},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"namespace": "grafana"},
}


@pytest.fixture(scope="module")
def custom_docs() -> list[dict[str, Any]]:
    return render(OPERATOR, NON_DEFAULT, release="tro", namespace="ops")


def test_custom_values_reach_the_deployment(custom_docs) -> None:
    dep = one(custom_docs, "Deployment")
    assert dep["metadata"]["namespace"] == "ops" and dep["spec"]["replicas"] == 2
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example/tro@sha256:" + "ab" * 32
    assert c["args"] == [
        "--admin-addr=0.0.0.0:9100", "--log-level=debug", "--log-format=plain",
        "--leader-election=true", "--lease-namespace=ops", "--lease-name=tro-lease",
        "--probe=port-forward", "--probe-concurrency=200", "--probe-timeout=2s",
        "--resync-interval=1m",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {"secretKeyRef": {"name": "otlp-auth", "key": "headers"}}
    assert c["ports"][0]["containerPort"] == 9100


def test_custom_names_move_rbac_with_them(custom_docs) -> None:
    grants = rbac_grants(custom_docs)
    read = {"get", "list", "watch"}
    assert grants[("pki", "", "secrets", "root-tls")] == read
    assert grants[("pki", "", "secrets", "root-previous")] == read | {"update", "patch"}
    assert grants[("mesh", "", "secrets", "issuer-tls")] == read
    assert grants[("mesh", "", "configmaps", "roots")] == read | {"update", "patch"}
    for dep in ("inj", "id", "dst", "policy"):
        assert grants[("mesh", "apps", "deployments", dep)] == read | {"patch"}
    assert grants[("ops", "coordination.k8s.io", "leases", "tro-lease")] == {"get", "update"}
    assert grants[("mesh", "apps", "replicasets", "")] == {"get", "list"}
    # port-forward probing and namespace env management are granted only when asked for.
    assert grants[("*cluster*", "", "pods/portforward", "")] == {"create"}
    assert grants[("*cluster*", "", "namespaces", "")] == read | {"patch"}
    assert grants[("mesh", "", "events", "")] == read
    # issuerRenewal: Automatic re-issues the identity issuer's Certificate, by name only.
    assert grants[("mesh", "cert-manager.io", "certificates", "issuer")] == {"get"}
    assert grants[("mesh", "cert-manager.io", "certificates/status", "issuer")] == {"update"}
    # schedule.renewAnchorBefore re-issues the trust anchor's Certificate, by name only.
    assert grants[("pki", "cert-manager.io", "certificates", "root")] == {"get"}
    assert grants[("pki", "cert-manager.io", "certificates/status", "root")] == {"update"}
    assert not [k for k in grants if k[1] == "cert-manager.io" and k[3] not in ("", "issuer", "root")]
    # workloadRestarts: Automatic restarts meshed workloads anywhere (a template patch, never
    # create or delete) and reads the PodDisruptionBudgets that may forbid it.
    for kind in ("deployments", "statefulsets", "daemonsets"):
        assert grants[("*cluster*", "apps", kind, "")] == {"get", "patch"}
    assert grants[("*cluster*", "policy", "poddisruptionbudgets", "")] == {"list"}
    # Nothing is left pointing at the default names.
    assert not [k for k in grants if k[0] in ("cert-manager", "linkerd")]


def test_optional_grants_are_absent_by_default(default_docs) -> None:
    grants = rbac_grants(default_docs)
    assert "pods/portforward" not in {k[2] for k in grants}
    assert "patch" not in grants[("*cluster*", "", "namespaces", "")]
    assert "certificates/status" not in {k[2] for k in grants}
    assert not [k for k in grants if k[0] == "*cluster*" and k[1] in ("apps", "policy")]


def test_custom_trust_anchor_rotation(custom_docs) -> None:
    tar = one(custom_docs, "TrustAnchorRotation")
    assert tar["metadata"]["name"] == "cluster", "the only name the CRD admits"
    secret = one(custom_docs, "Secret")
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == ("pki", "root-previous")
    spec = tar["spec"]
    assert spec["workloadCertificateRefreshInterval"] == "300s"
    assert spec["manageProxyRefreshEnv"] is True
    assert spec["trustRoots"] == {"namespace": "mesh", "name": "roots", "key": "bundle.pem"}
    assert spec["controlPlane"]["otherDeployments"] == ["dst", "policy"]
    assert spec["automation"] == NON_DEFAULT["trustAnchorRotation"]["automation"]


def test_monitoring_objects_select_the_operator(custom_docs) -> None:
    dep = one(custom_docs, "Deployment")
    sm = one(custom_docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kps"
    svc = one(custom_docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert one(custom_docs, "ConfigMap")["metadata"]["namespace"] == "grafana"


def test_pod_monitor_targets_the_admin_port() -> None:
    docs = render(OPERATOR, {"podMonitor": {"enabled": True}})
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "admin-http"
    assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_prometheus_rules_cover_stalled_blocked_and_expiry(custom_docs) -> None:
    rule = one(custom_docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"LinkerdTrustRotationStalled", "LinkerdTrustRotationBlocked",
                           "LinkerdTrustRotationStepErrors", "LinkerdTrustRotationNoLeader",
                           "LinkerdTrustRotationWatchFailing",
                           "LinkerdTrustAnchorExpiringSoon", "LinkerdIdentityIssuerExpiringSoon"}
    assert "trust_rotation_trust_anchor_expiry_timestamp_seconds" in alerts["LinkerdTrustAnchorExpiringSoon"]["expr"]
    assert "< 2592000" in alerts["LinkerdTrustAnchorExpiringSoon"]["expr"]
    assert "trust_rotation_identity_issuer_expiry_timestamp_seconds" in alerts["LinkerdIdentityIssuerExpiringSoon"]["expr"]
    assert "cmctl renew -n pki root" in alerts["LinkerdTrustAnchorExpiringSoon"]["annotations"]["description"]
    assert "trust_rotation_phase" in alerts["LinkerdTrustRotationStalled"]["expr"]
    # Every metric an alert reads is one the operator registers.
    registered = operator_metric_families()
    for alert in alerts.values():
        for metric in re.findall(r"\b(trust_rotation_[a-z_]+)", alert["expr"]):
            family = re.sub(r"_(total|bucket|sum|count)$", "", metric)
            assert family in registered, f"{alert['alert']} reads {metric}, which the operator does not export"
    # Prometheus templates survive Helm rendering verbatim.
    assert "{{ $labels.phase }}" in alerts["LinkerdTrustRotationStalled"]["annotations"]["description"]


@pytest.mark.parametrize("values, message", [
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "leaderElection"),
    ({"otlp": {"headers": "a=b", "headersSecret": {"name": "s", "key": "k"}}}, "not both"),
    ({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}, "service.enabled"),
])
def test_unsafe_combinations_fail_with_a_clear_message(values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(OPERATOR, values)


def test_no_trust_anchor_rotation_when_disabled() -> None:
    docs = render(OPERATOR, {"trustAnchorRotation": {"create": False}})
    assert by_kind(docs, "TrustAnchorRotation") == []
    assert "create one" in notes(OPERATOR, {"trustAnchorRotation": {"create": False}})


# === the Grafana dashboard ===

def operator_metric_families() -> set[str]:
    """Every metric family the operator registers: the rotation's (steps/src/metrics.rs, the
    leader only) and every replica's own (operator/src/metrics.rs, incl. its collectors)."""
    families: set[str] = set()
    for src in ("steps/src/metrics.rs", "operator/src/metrics.rs"):
        text = (REPO / src).read_text()
        families |= set(re.findall(r'registry\.register\(\s*"([a-z_]+)"', text))
        families |= set(re.findall(r'encode_descriptor\(\s*"([a-z_]+)"', text))
    return families


def dashboard_exprs() -> str:
    dash = json.loads((HELM / OPERATOR / "files/dashboard.json").read_text())
    return " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))


def test_dashboard_plots_every_metric_the_operator_registers() -> None:
    registered = operator_metric_families()
    assert set(GUIDE_METRICS) <= registered, "the operator must register the guide's metrics"
    exprs = dashboard_exprs()
    assert [m for m in sorted(registered) if m not in exprs] == []

def test_dashboard_is_valid_json_for_the_sidecar_and_plots_every_guide_metric(default_docs) -> None:
    cm = one(default_docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(key, body)] = cm["data"].items()
    assert key.endswith(".json")
    dash = json.loads(body)
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    missing = [m for m in GUIDE_METRICS if m not in exprs]
    assert missing == [], f"dashboard does not plot {missing}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# === the CRD chart ===

def test_crd_chart_is_the_generated_crd() -> None:
    generated = (REPO / "crds/trust.linkerd.io_trustanchorrotations.yaml").read_text()
    copy = (HELM / "trust-rotation-operator-crds/templates/trust.linkerd.io_trustanchorrotations.yaml").read_text()
    assert copy == generated, "helm CRD copy is stale: run `make generate`"
    [crd] = render("trust-rotation-operator-crds")
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "trustanchorrotations.trust.linkerd.io"
    assert crd["spec"]["scope"] == "Cluster"


# === linkerd-cert-manager: the guide's PKI ===

def cert_manager_schema(kind_file: str) -> dict[str, Any]:
    [crd] = [d for d in yaml.safe_load_all((REPO / "e2e/cluster-sim/crds" / kind_file).read_text()) if d]
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def pki_docs() -> list[dict[str, Any]]:
    return render("linkerd-cert-manager", namespace="linkerd")


def test_pki_objects_are_the_guides(pki_docs) -> None:
    cm, l5d = D["DEFAULT_CERT_MANAGER_NAMESPACE"], D["DEFAULT_LINKERD_NAMESPACE"]
    root_issuer = one(pki_docs, "Issuer")
    assert (root_issuer["metadata"]["namespace"], root_issuer["metadata"]["name"]) == (cm, D["DEFAULT_TRUST_ROOT_ISSUER"])
    assert root_issuer["spec"] == {"selfSigned": {}}

    anchor = one(pki_docs, "Certificate", D["DEFAULT_TRUST_ANCHOR"])
    assert anchor["metadata"]["namespace"] == cm
    assert anchor["spec"] == {
        "isCA": True, "commonName": "root.linkerd.cluster.local",
        "secretName": D["DEFAULT_TRUST_ANCHOR"],
        "duration": "8760h0m0s", "renewBefore": "7320h0m0s",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "issuerRef": {"name": D["DEFAULT_TRUST_ROOT_ISSUER"], "kind": "Issuer", "group": "cert-manager.io"},
    }

    ci = one(pki_docs, "ClusterIssuer")
    assert ci["metadata"]["name"] == D["DEFAULT_IDENTITY_CLUSTER_ISSUER"]
    assert ci["spec"] == {"ca": {"secretName": D["DEFAULT_TRUST_ANCHOR"]}}

    issuer = one(pki_docs, "Certificate", D["DEFAULT_IDENTITY_ISSUER"])
    assert issuer["metadata"]["namespace"] == l5d
    spec = issuer["spec"]
    assert spec["isCA"] is True and spec["secretName"] == D["DEFAULT_IDENTITY_ISSUER"]
    assert (spec["duration"], spec["renewBefore"]) == ("48h0m0s", "25h0m0s")
    assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
    assert spec["commonName"] == "identity.linkerd.cluster.local"
    assert spec["issuerRef"] == {"name": D["DEFAULT_IDENTITY_CLUSTER_ISSUER"], "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "cert sign" in spec["usages"]


def test_pki_objects_validate_against_cert_managers_crds(pki_docs) -> None:
    files = {"Issuer": "cert-manager.io_issuers.yaml", "ClusterIssuer": "cert-manager.io_clusterissuers.yaml",
             "Certificate": "cert-manager.io_certificates.yaml"}
    for doc in pki_docs:
        jsonschema.validate(doc, cert_manager_schema(files[doc["kind"]]))


def test_pki_follows_release_namespace_and_trust_domain() -> None:
    docs = render("linkerd-cert-manager", {"trustDomain": "example.org", "certManagerNamespace": "cm"}, namespace="l5d")
    issuer = one(docs, "Certificate", D["DEFAULT_IDENTITY_ISSUER"])
    assert issuer["metadata"]["namespace"] == "l5d"
    assert issuer["spec"]["commonName"] == "identity.linkerd.example.org"
    anchor = one(docs, "Certificate", D["DEFAULT_TRUST_ANCHOR"])
    assert anchor["metadata"]["namespace"] == "cm"
    assert anchor["spec"]["commonName"] == "root.linkerd.example.org"


def test_pki_refuses_an_issuer_key_linkerd_cannot_use() -> None:
    with helm.Chart.load(str(HELM / "linkerd-cert-manager")) as c:
        with pytest.raises(helm.HelmError):
            c.validate_schema({"identityIssuer": {"privateKey": {"algorithm": "RSA"}}})


# === the chart's README documents what the chart really has ===

def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("resources", "podSecurityContext", "securityContext", "nodeSelector", "labels"):
            out += leaf_paths(v, path + ".")
        else:
            out.append(path)
    return out


def test_readme_documents_every_value_and_metric() -> None:
    readme = (HELM / OPERATOR / "README.md").read_text()
    values = yaml.safe_load((HELM / OPERATOR / "values.yaml").read_text())
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    undocumented = []
    for path in leaf_paths(values):
        *parents, leaf = path.split(".")
        parent = ".".join(parents)
        # A row names the path, or its parent with this leaf in a `{a,b}` or ` / .b` group.
        if not any(f"`{path}`" in r or (parent and f"`{parent}" in r and re.search(rf"[{{,./ ]{leaf}\b", r)) for r in rows):
            undocumented.append(path)
    assert undocumented == []
    missing = [m for m in operator_metric_families() if m not in readme]
    assert missing == [], f"README does not list {missing}"


# === the rendered flags are ones the operator accepts ===

OPERATOR_BIN = REPO / "target/debug/trust-rotation-operator"


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_the_operator_accepts_the_charts_arguments(values: dict) -> None:
    """Runs the real binary with the rendered args: it must get past flag parsing (clap
    exits 2 on a usage error) and fail only on the missing kubeconfig."""
    import os
    import subprocess
    if not OPERATOR_BIN.exists():
        pytest.fail(f"{OPERATOR_BIN} is not built: run `cargo build --bins` (make chart-test does)")
    [dep] = by_kind(render(OPERATOR, values), "Deployment")
    [c] = dep["spec"]["template"]["spec"]["containers"]
    args = [a.replace("0.0.0.0:", "127.0.0.1:") for a in c["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUST_ROTATION_", "OTEL_", "KUBECONFIG"))}
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    out = subprocess.run([str(OPERATOR_BIN), *args, "--kubeconfig=/nonexistent/kubeconfig"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode not in (0, 2), out.stderr
    assert "kubeconfig" in out.stderr and "unexpected argument" not in out.stderr, out.stderr
