#!/usr/bin/env python3
"""Render a chart with the real Helm engine (helm-python-sdk), like `helm template`.

Usage: render.py CHART RELEASE NAMESPACE [VALUES_JSON]
Prints the manifests as one multi-document YAML stream in Helm's install order
(CRDs and namespaces first, then RBAC, then workloads, then custom resources).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "helm"

# Helm's own install order (pkg/release/util/kind_sorter.go), abridged to what we render.
_ORDER = [
    "Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap",
    "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment",
]


def render(chart: str, values: dict[str, Any] | None = None, *, release: str | None = None,
           namespace: str = "linkerd") -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt and empty documents dropped)."""
    path = HELM / chart if not os.path.isabs(chart) else Path(chart)
    with helm.Chart.load(str(path)) as c:
        out = c.render(values or {}, name=release or c.name, namespace=namespace,
                       is_install=True)
    docs: list[dict[str, Any]] = []
    for template in sorted(out):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(out[template]):
            if doc:
                doc.setdefault("metadata", {})
                docs.append(doc)
    docs.sort(key=lambda d: _ORDER.index(d["kind"]) if d["kind"] in _ORDER else len(_ORDER))
    return docs


# The operator chart's values for `make demo AUTO=1` (e2e/demo.sh): the automation switched on.
HANDS_FREE = {"trustAnchorRotation": {"automation": {
    "issuerRenewal": "Automatic", "workloadRestarts": "Automatic", "maxConcurrentWorkloads": 2}}}


def demo_values() -> dict[str, Any]:
    """The operator chart's values e2e/demo.sh renders: HANDS_FREE when AUTO=1."""
    return HANDS_FREE if os.environ.get("AUTO") == "1" else {}


def notes(chart: str, values: dict[str, Any] | None = None, *, namespace: str = "linkerd") -> str:
    with helm.Chart.load(str(HELM / chart)) as c:
        out = c.render(values or {}, name=c.name, namespace=namespace, is_install=True)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    values = json.loads(argv[4]) if len(argv) == 5 else {}
    docs = render(argv[1], values, release=argv[2], namespace=argv[3])
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
