"""Upgrading from release 2b44cd8 with its data: keys replay, receipts keep their numbers, payments get their history.

The fixture (tests/database/fixtures/release_2b44cd8.sql and .json) is that release's database, made
through its own API by scripts/make_upgrade_fixture.py, with every request and its exact answer. Each
test restores it into a new database, runs the current migrations, and talks to the current app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.services import services
from app import close_app, create_app
from config import Config
from database.migrate import apply_migrations, discover
from tests.fakes import FakeNotificationService, FakeProfileService, FakeTripService
from tests.helpers import (
    assert_ledger_holds,
    config_for_database,
    create_database,
    drop_database,
    loaded_history_problems,
    query_rows,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DUMP = FIXTURES / "release_2b44cd8.sql"
RECORD = json.loads((FIXTURES / "release_2b44cd8.json").read_text())
REQUESTS = {request["name"]: request for request in RECORD["requests"]}
LOADED_ROWS = 320  # rhfd_payments.csv, loaded by the release before any request
# The keys are as fresh as when the release answered them: the upgrade runs right after, not when this test does.
REFRESH_KEYS = "UPDATE idempotency_keys SET expires_at = expires_at + (now() - %(dumped_at)s::timestamptz)"
# And what the simulator had still to decide is due by then, however soon after making the fixture this runs.
SIMULATOR_DUE = "UPDATE simulator_transactions SET settles_at = now() WHERE settles_at > now()"
COUNTS = """
SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM payment_refunds),
       (SELECT count(*) FROM simulator_transactions)
"""


@dataclass
class Upgraded:
    """The restored database after the current migrations, and what they applied."""

    config: Config
    applied: list[str]


def answer(name: str) -> dict[str, Any]:
    """The release's recorded answer to a request, as JSON."""
    return json.loads(REQUESTS[name]["response"])


def payment_of(name: str) -> int:
    """The payment a recorded request made or acted on."""
    return answer(name)["payment_id"]


def send(client: FlaskClient, request: dict[str, Any]) -> Any:
    """Send a recorded request again, byte for byte."""
    body = request["body"]
    return client.open(
        request["path"],
        method=request["method"],
        data=body,
        headers=request["headers"],
        content_type="application/json" if body is not None else None,
    )


@pytest.fixture
def upgraded(base_config: Config) -> Iterator[Upgraded]:
    """The release's database restored into a new database, then migrated by this code."""
    name = create_database(base_config, "payments_upgrade")
    config = config_for_database(base_config, name)
    try:
        # The dump sets an empty search_path for its session: it gets a connection of its own.
        restore = psycopg2.connect(config.get_database_uri())
        restore.autocommit = True
        try:
            with restore.cursor() as cur:
                cur.execute(DUMP.read_text())
        finally:
            restore.close()
        conn = psycopg2.connect(config.get_database_uri(), options="-c timezone=UTC")
        try:
            with conn.cursor() as cur:
                cur.execute(REFRESH_KEYS, {"dumped_at": RECORD["dumped_at"]})
                cur.execute(SIMULATOR_DUE)
            conn.commit()
            applied = apply_migrations(conn)
        finally:
            conn.close()
        yield Upgraded(config, applied)
    finally:
        drop_database(base_config, name)


@pytest.fixture
def current_app(
    upgraded: Upgraded, trips: FakeTripService, notifications: FakeNotificationService, profiles: FakeProfileService
) -> Iterator[Flask]:
    """This code's app on the upgraded database; background loops off, so the test says when things happen."""
    application = create_app(
        {
            "TRIP_SERVICE_URL": trips.url,
            "NOTIFICATION_SERVICE_URL": notifications.url,
            "RIDER_SERVICE_URL": profiles.url,
            "DRIVER_SERVICE_URL": profiles.url,
            "GATEWAY_SUCCESS_RATE": 1.0,
            "RECONCILE_INTERVAL": 0,
            "RECONCILE_MIN_AGE": 0,
            "HOUSEKEEPING_INTERVAL": 0,
            "NOTIFY_DISPATCHER_ENABLED": False,
        },
        config=upgraded.config,
    )
    yield application
    close_app(application)


def test_the_fixture_is_of_the_release_before_transactions(upgraded: Upgraded) -> None:
    assert RECORD["release"] == "2b44cd8"
    # The release had applied 0001-0010; the upgrade applies every later one, 0011 (transactions) first.
    assert upgraded.applied == [m.version for m in discover() if m.version > "0010"]
    assert upgraded.applied[0] == "0011"


def test_every_keyed_request_replays_byte_for_byte(current_app: Flask, upgraded: Upgraded) -> None:
    client = current_app.test_client()
    dsn = upgraded.config.get_database_uri()
    replayable = [request for request in RECORD["requests"] if request["replayable"]]
    before = query_rows(dsn, COUNTS)

    replies = [(request, send(client, request)) for request in replayable]

    assert len(replayable) == 17
    for request, reply in replies:
        assert (request["name"], reply.status_code) == (request["name"], request["status"])
        assert reply.get_data(as_text=True) == request["response"], request["name"]
        assert reply.headers["Idempotent-Replayed"] == "true"
    # Nothing was charged, refunded or sent to the gateway again.
    assert query_rows(dsn, COUNTS) == before


def test_a_key_reused_with_another_body_is_still_refused(current_app: Flask) -> None:
    request = dict(REQUESTS["card_charge"])
    request["body"] = request["body"].replace('"CARD"', '"UPI"')

    reply = send(current_app.test_client(), request)

    assert (reply.status_code, reply.get_json()["code"]) == (422, "idempotency_key_reused")


def test_receipts_keep_their_numbers(current_app: Flask) -> None:
    client = current_app.test_client()

    for name in ("card_receipt", "captured_receipt"):
        before = answer(name)
        after = client.get(REQUESTS[name]["path"]).get_json()
        assert (after["receipt_id"], after["receipt_number"], after["generated_at"]) == (
            before["receipt_id"],
            before["receipt_number"],
            before["generated_at"],
        )
        assert after["receipt_data"]["payment"] == before["receipt_data"]["payment"]


def test_the_ledger_holds_after_the_upgrade(upgraded: Upgraded) -> None:
    assert_ledger_holds(upgraded.config.get_database_uri())


def test_loaded_rows_and_cash_have_one_purchase_and_their_refunds(upgraded: Upgraded) -> None:
    dsn = upgraded.config.get_database_uri()
    cash = payment_of("cash_charge")

    assert loaded_history_problems(dsn, [*range(1, LOADED_ROWS + 1), cash]) == []


def history(client: FlaskClient, payment_id: int) -> list[tuple[Any, ...]]:
    """(kind, status, amount, gateway, error_code) of each transaction, as GET .../transactions lists them."""
    body = client.get(f"/v1/payments/{payment_id}/transactions").get_json()
    return [(t["kind"], t["status"], t["amount"], t["gateway"], t["error_code"]) for t in body["transactions"]]


def test_every_payment_made_through_the_api_has_its_history(current_app: Flask) -> None:
    client = current_app.test_client()
    s, f, p, sim = "SUCCEEDED", "FAILED", "PENDING", "simulator"
    held = answer("held")["authorized_amount"]
    captured_hold = answer("captured_hold")["authorized_amount"]
    captured = answer("capture")["amount"]
    refused = answer("refused_charge")

    assert history(client, payment_of("card_charge")) == [
        ("PURCHASE", s, 31.25, sim, None),
        ("REFUND", s, 10.5, sim, None),
    ]
    assert history(client, payment_of("cash_charge")) == [
        ("PURCHASE", s, 31.25, None, None),
        ("REFUND", s, 31.25, None, None),
    ]
    assert history(client, payment_of("refused_charge")) == [("PURCHASE", f, 31.25, sim, refused["error_code"])]
    assert history(client, payment_of("pending_charge")) == [("PURCHASE", p, 31.25, sim, None)]
    assert history(client, payment_of("held")) == [("AUTHORIZE", s, held, sim, None)]
    assert history(client, payment_of("captured_hold")) == [
        ("AUTHORIZE", s, captured_hold, sim, None),
        ("CAPTURE", s, captured, sim, None),
        ("REFUND", s, 5.0, sim, None),
    ]
    assert history(client, payment_of("voided_hold")) == [
        ("AUTHORIZE", s, answer("voided_hold")["authorized_amount"], sim, None),
        ("VOID", s, answer("voided_hold")["authorized_amount"], sim, None),
    ]
    assert history(client, payment_of("capturing_hold")) == [
        ("AUTHORIZE", s, answer("capturing_hold")["authorized_amount"], sim, None),
        ("CAPTURE", p, answer("capture_unanswered")["capture_amount"], sim, None),
    ]
    assert history(client, payment_of("refund_pending_charge")) == [
        ("PURCHASE", s, 31.25, sim, None),
        ("REFUND", p, 4.25, sim, None),
    ]
    assert history(client, payment_of("refund_refused_charge")) == [
        ("PURCHASE", s, 31.25, sim, None),
        ("REFUND", f, 3.0, sim, "GATEWAY_ERROR"),
    ]


def test_refund_transactions_name_the_refund_records_listed(current_app: Flask) -> None:
    client = current_app.test_client()
    payment_id = payment_of("refund_refused_charge")

    refunds = client.get(f"/v1/payments/{payment_id}/refunds").get_json()["refunds"]
    transactions = client.get(f"/v1/payments/{payment_id}/transactions").get_json()["transactions"]

    assert [(r["refund_id"], r["refund_status"], r["error_code"]) for r in refunds] == [
        (t["refund_id"], t["status"], t["error_code"]) for t in transactions if t["kind"] == "REFUND"
    ]
    assert refunds[0]["refund_status"] == "FAILED"


def operate_on_old_rows(client: FlaskClient, app: Flask, trips: FakeTripService) -> dict[str, Any]:
    """With the current app, carry on with the release's payments; return each answer's status and body."""
    for trip_id in (90003, 90005, 90007):
        trips.trip(trip_id, "COMPLETED", 10.5, rider_id=7, driver_id=9)
    answers = {}

    def call(name: str, method: str, path: str, body: Any = None) -> None:
        reply = client.open(path, method=method, json=body)
        answers[name] = (reply.status_code, reply.get_json())

    call("refund_the_rest", "POST", f"/v1/payments/{payment_of('card_charge')}/refund", {"reason": "rest"})
    call("capture_the_hold", "POST", f"/v1/payments/{payment_of('held')}/capture", {})
    call("refund_the_captured_rest", "POST", f"/v1/payments/{payment_of('captured_hold')}/refund", {})
    call("charge_the_voided_trip", "POST", "/v1/payments/charge",
         {"idempotency_key": "after-upgrade-voided", "trip_id": 90007, "method": "CARD"})  # fmt: skip
    call("charge_the_refused_trip", "POST", "/v1/payments/charge",
         {"idempotency_key": "after-upgrade-refused", "trip_id": 90003, "method": "UPI"})  # fmt: skip
    call("refund_a_loaded_row", "POST", "/v1/payments/1/refund", {"amount": 2})
    call("receipt_of_the_capture", "GET", f"/v1/payments/{payment_of('held')}/receipt")
    # What was left in flight: the PENDING charge, the unanswered capture, the PENDING refund.
    services(app).reconciler.run_once()
    for name in ("pending_charge", "capturing_hold", "refund_pending_charge"):
        call(f"{name}_after", "GET", f"/v1/payments/{payment_of(name)}")
    call("pending_refund_after", "GET", f"/v1/payments/{payment_of('refund_pending_charge')}/refunds")
    return answers


def test_new_operations_on_old_rows_work(current_app: Flask, trips: FakeTripService) -> None:
    answers = operate_on_old_rows(current_app.test_client(), current_app, trips)

    status, body = answers["refund_the_rest"]
    assert (status, body["status"], body["refund_amount"], body["remaining_amount"]) == (200, "REFUNDED", 20.75, 0.0)
    status, body = answers["capture_the_hold"]
    assert (status, body["status"], body["amount"]) == (200, "SUCCESS", 31.25)
    status, body = answers["refund_the_captured_rest"]
    assert (status, body["status"], body["remaining_amount"]) == (200, "REFUNDED", 0.0)
    for name in ("charge_the_voided_trip", "charge_the_refused_trip"):
        status, body = answers[name]
        assert (status, body["status"]) == (201, "SUCCESS"), name
    status, body = answers["refund_a_loaded_row"]
    assert (status, body["refund_amount"], body["refund_status"]) == (200, 2.0, "SUCCEEDED")
    status, body = answers["receipt_of_the_capture"]
    assert status == 200
    assert body["receipt_number"] not in {
        answer("card_receipt")["receipt_number"],
        answer("captured_receipt")["receipt_number"],
    }
    assert answers["pending_charge_after"][1]["status"] == "SUCCESS"
    assert answers["capturing_hold_after"][1]["status"] == "SUCCESS"
    assert answers["capturing_hold_after"][1]["amount"] == answer("capture_unanswered")["capture_amount"]
    assert answers["refund_pending_charge_after"][1]["amount_refunded"] == 4.25
    assert [r["refund_status"] for r in answers["pending_refund_after"][1]["refunds"]] == ["SUCCEEDED"]


def test_the_ledger_holds_after_new_operations_on_old_rows(
    current_app: Flask, upgraded: Upgraded, trips: FakeTripService
) -> None:
    operate_on_old_rows(current_app.test_client(), current_app, trips)

    assert_ledger_holds(upgraded.config.get_database_uri())
