#!/usr/bin/env python3
"""Checks a scrape of the operator's /metrics (OpenMetrics or Prometheus text):
every metric the user guide names is exported, and the chart's Grafana dashboard plots
every metric family the operator exports.

Usage: check_metrics.py METRICS_FILE
"""
from __future__ import annotations

import json
import re
import sys

from render import HELM
from test_charts import GUIDE_METRICS

DASHBOARD = HELM / "trust-rotation-operator/files/dashboard.json"


def families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) \S+$", text, re.M))


def main(path: str) -> int:
    exported = families(open(path).read())
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    problems = [f"the guide's metric {m} is not exported" for m in GUIDE_METRICS if m not in exported]
    problems += [f"the dashboard does not plot {m}" for m in sorted(exported) if m not in exprs]
    for p in problems:
        print(f"check_metrics: {p}", file=sys.stderr)
    if not problems:
        print(f"metrics: {len(exported)} families exported, all plotted; the guide's {len(GUIDE_METRICS)} present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
