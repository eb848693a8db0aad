"""The Grafana dashboard and Prometheus config refer to metrics the service really exposes, in valid PromQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeTripService

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "payment-service.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "clamp_min", "le", "status", "endpoint", "outcome",
                "method", "operation", "limit", "type", "result"}  # fmt: skip


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exposed_sample_names(app: Flask) -> set[str]:
    client = app.test_client()
    # Make every labelled counter appear at least once.
    client.get("/v1/payments")
    text = client.get("/metrics/prometheus").get_data(as_text=True)
    names = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    return names | {family.name for family in text_string_to_metric_families(text)}


def test_every_dashboard_query_uses_metrics_the_service_exposes(charge_app: Flask, trips: FakeTripService) -> None:
    trips.trip(101)
    client = charge_app.test_client()
    paid = client.post("/v1/payments/charge", json={"idempotency_key": "d", "trip_id": 101, "method": "CARD"})
    client.post(f"/v1/payments/{paid.get_json()['payment_id']}/refund", json={"amount": 1})
    client.post("/v1/payments/charge", json={"idempotency_key": "d", "trip_id": 101, "method": "CARD"})
    exposed = exposed_sample_names(charge_app)
    # Counters that only appear once something happened: rate limiting and notification delivery.
    may_be_absent = {"rate_limited_requests_total", "rate_limit_store_errors_total", "notifications_total"}

    referenced = set()
    for expr in dashboard_expressions():
        strings_removed = re.sub(r'"[^"]*"', "", expr)
        durations_removed = re.sub(r"\[[^\]]*\]", "", strings_removed)
        numbers_removed = re.sub(r"(?<![a-z_])\d[\d.]*(?:e-?\d+)?", "", durations_removed)
        referenced |= {w for w in re.findall(r"[a-z_][a-z0-9_]*", numbers_removed) if w not in PROMQL_WORDS}

    assert referenced - exposed - may_be_absent == set()
    assert len(referenced) >= 10


def test_dashboard_queries_are_valid_promql() -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not available (.ci/run fetches it into .ci/tools)")
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query{n}\n        expr: {json.dumps(expr)}\n"
        for n, expr in enumerate(dashboard_expressions())
    )

    result = subprocess.run([promtool, "check", "rules", "/dev/stdin"], input=rules.encode(), capture_output=True)

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_prometheus_config_is_valid_and_scrapes_the_exposition_path() -> None:
    assert "metrics_path: /metrics/prometheus" in PROMETHEUS.read_text()
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not available (.ci/run fetches it into .ci/tools)")

    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS)], capture_output=True)

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
