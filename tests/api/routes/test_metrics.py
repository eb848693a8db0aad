"""/metrics and /metrics/prometheus: numbers that match the database, exposition Prometheus accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg2
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from config import Config
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from tests.fakes import FakeTripService
from tests.helpers import closed_port

COLLECTED = ("SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED")
REFERENCE_GAUGES = ("payment_total", "payment_method_total")


def families(text: str) -> dict[str, list]:
    """Parse the exposition; map each metric family's name to its samples."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample_sum(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def seeded(test_config: Config, db: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    """The seed CSV loaded, plus refunds, so every figure is non-trivial."""
    conn = psycopg2.connect(test_config.get_database_uri())
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()
    return db


def test_the_json_summary_matches_a_direct_sql_aggregate(
    charge_client: FlaskClient, seeded: psycopg2.extensions.connection
) -> None:
    for payment_id in (1, 2, 4):
        charge_client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 1.5})

    body = charge_client.get("/metrics").get_json()

    with seeded.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM payments GROUP BY 1")
        by_status = dict(cur.fetchall())
        cur.execute("SELECT method, count(*) FROM payments GROUP BY 1")
        by_method = dict(cur.fetchall())
        cur.execute("SELECT sum(amount), count(*) FROM payments WHERE status = ANY(%s)", (list(COLLECTED),))
        revenue, collected = cur.fetchone()
        cur.execute("SELECT sum(amount_refunded) FROM payments")
        refunded = cur.fetchone()[0]
    assert {k: v for k, v in body["payments_by_status"].items() if v} == by_status
    assert {k: v for k, v in body["payments_by_method"].items() if v} == by_method
    assert Decimal(str(body["total_revenue"])) == revenue
    average = (revenue / collected).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert Decimal(str(body["average_payment_amount"])) == average
    assert Decimal(str(body["total_refunded"])) == refunded
    assert body["timestamp"].endswith("+00:00")


def test_an_empty_database_reports_zeros_for_every_status_and_method(client: FlaskClient) -> None:
    body = client.get("/metrics").get_json()

    assert body["payments_by_status"] == dict.fromkeys(
        ["SUCCESS", "PENDING", "FAILED", "REFUNDED", "PARTIALLY_REFUNDED", "AUTHORIZED", "VOIDED"], 0
    )
    assert body["payments_by_method"] == dict.fromkeys(["CARD", "WALLET", "UPI", "CASH"], 0)
    assert (body["average_payment_amount"], body["total_revenue"], body["total_refunded"]) == (0.0, 0.0, 0.0)


def test_the_prometheus_exposition_has_the_reference_series_and_the_request_metrics(
    charge_client: FlaskClient, seeded: psycopg2.extensions.connection
) -> None:
    charge_client.get("/v1/payments/3")
    charge_client.get("/v1/payments/4")

    response = charge_client.get("/metrics/prometheus")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    parsed = families(response.get_data(as_text=True))
    summary = charge_client.get("/metrics").get_json()
    for status, count in summary["payments_by_status"].items():
        assert sample_sum(parsed["payment_total"], "payment_total", status=status) == count
    for method, count in summary["payments_by_method"].items():
        assert sample_sum(parsed["payment_method_total"], "payment_method_total", method=method) == count
    assert parsed["payment_average_amount"][0].value == summary["average_payment_amount"]
    assert parsed["payment_total_revenue"][0].value == summary["total_revenue"]
    requests_samples = parsed["http_requests"]
    assert sample_sum(requests_samples, "http_requests_total", endpoint="/v1/payments/<payment_id>", status="200") >= 2
    assert not any(s.labels.get("endpoint") == "/v1/payments/3" for s in requests_samples)
    assert "http_request_duration_seconds" in parsed
    assert any(s.name == "http_request_duration_seconds_bucket" for s in parsed["http_request_duration_seconds"])


def test_business_counters_move_with_charges_refunds_receipts_and_replays(
    charge_client: FlaskClient, trips: FakeTripService, insert_payment: Callable[..., int]
) -> None:
    def scrape() -> dict[str, list]:
        return families(charge_client.get("/metrics/prometheus").get_data(as_text=True))

    trips.trip(101)
    before = scrape()
    body = {"idempotency_key": "m-1", "trip_id": 101, "method": "UPI"}
    paid = charge_client.post("/v1/payments/charge", json=body).get_json()
    charge_client.post("/v1/payments/charge", json=body)
    charge_client.post(f"/v1/payments/{paid['payment_id']}/refund", json={"amount": 2.5})
    charge_client.get(f"/v1/payments/{paid['payment_id']}/receipt")
    after = scrape()

    def delta(family: str, name: str, **labels: str) -> float:
        return sample_sum(after.get(family, []), name, **labels) - sample_sum(before.get(family, []), name, **labels)

    assert delta("payment_charges", "payment_charges_total", outcome="SUCCESS", method="UPI") == 1
    assert delta("idempotent_replays", "idempotent_replays_total", operation="charge") == 1
    assert delta("payment_refunds", "payment_refunds_total", method="UPI") == 1
    assert delta("payment_refunded_amount", "payment_refunded_amount_total") == 2.5
    assert delta("payment_receipts_generated", "payment_receipts_generated_total") == 1


def test_rate_limited_requests_are_counted(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()
    before = families(client.get("/metrics/prometheus").get_data(as_text=True))

    for _ in range(3):
        client.get("/v1/payments")

    after = families(client.get("/metrics/prometheus").get_data(as_text=True))
    name, family = "rate_limited_requests_total", "rate_limited_requests"
    assert (
        sample_sum(after[family], name, limit="default") - sample_sum(before.get(family, []), name, limit="default")
        == 2
    )


def test_with_the_database_down_prometheus_still_scrapes_and_json_is_503(make_app: Callable[..., Flask]) -> None:
    client = make_app(DATABASE_URL=None, DB_HOST="127.0.0.1", DB_PORT=closed_port()).test_client()

    scrape = client.get("/metrics/prometheus")
    summary = client.get("/metrics")

    assert scrape.status_code == 200
    parsed = families(scrape.get_data(as_text=True))
    assert parsed["payment_stats_up"][0].value == 0
    assert "payment_total" not in parsed
    assert (summary.status_code, summary.get_json()["code"]) == (503, "database_unavailable")


def test_metrics_are_open_unless_the_flag_protects_them(make_app: Callable[..., Flask]) -> None:
    import hashlib

    keys = {"ops": hashlib.sha256(b"ops-key").hexdigest()}
    open_app = make_app(API_KEYS=keys).test_client()
    closed_app = make_app(API_KEYS=keys, METRICS_REQUIRE_API_KEY=True).test_client()

    assert open_app.get("/metrics").status_code == 200
    assert closed_app.get("/metrics").status_code == 401
    assert closed_app.get("/metrics/prometheus").status_code == 401
    assert closed_app.get("/metrics/prometheus", headers={"X-API-Key": "ops-key"}).status_code == 200
    assert closed_app.get("/health").status_code == 200


def test_promtool_accepts_the_exposition(charge_client: FlaskClient, seeded: psycopg2.extensions.connection) -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not available (.ci/run fetches it into .ci/tools)")
    charge_client.get("/v1/payments?limit=1")
    text = charge_client.get("/metrics/prometheus").get_data()

    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)

    # promtool's only remarks may be its naming lint on the reference's two gauges, whose _total names
    # the contract keeps on purpose (a payment changes status, so these counts can fall).
    accepted = {f'{name} non-counter metrics should not have "_total" suffix' for name in REFERENCE_GAUGES}
    output = (result.stdout + result.stderr).decode().splitlines()
    problems = [line for line in output if line.strip() and line.strip() not in accepted]
    assert problems == []


def test_counters_add_up_across_gunicorn_workers(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], tmp_path: Path
) -> None:
    payment_id = insert_payment()
    metrics_dir = tmp_path / "prometheus"
    url = serve_gunicorn(workers=2, threads=1, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    requests_made = 60

    for n in range(requests_made):
        # A new connection each time, so the kernel hands requests to both workers.
        path = f"/v1/payments/{payment_id}" if n % 2 else "/v1/payments?limit=1"
        assert requests.get(f"{url}{path}", timeout=5).status_code == 200

    parsed = families(requests.get(f"{url}/metrics/prometheus", timeout=5).text)
    served = [s for s in parsed["http_requests"] if s.name == "http_requests_total"]
    counted = sum(s.value for s in served if s.labels["endpoint"] != "/metrics/prometheus")
    live_probes = sum(s.value for s in served if s.labels["endpoint"] == "/live")
    assert counted - live_probes == requests_made
    worker_files = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(worker_files) >= 2, "all requests went to one worker; the test proved nothing"


def test_made_up_http_methods_share_one_label_value_so_they_cannot_grow_the_scrape(client: FlaskClient) -> None:
    def method_labels() -> set[str]:
        samples = families(client.get("/metrics/prometheus").get_data(as_text=True))["http_requests"]
        return {s.labels["method"] for s in samples if s.name == "http_requests_total"}

    method_labels()  # the scrape itself is a GET
    before = method_labels()
    answers = {client.open("/v1/payments", method=f"DMIMVZ{n:03d}").status_code for n in range(40)}
    answers |= {client.open("/nowhere", method="QWERTYUIOPAS").status_code}

    assert answers <= {400, 401, 404, 405}
    assert method_labels() - before <= {"OTHER"}
    assert "OTHER" in method_labels()
