"""A zero-decimal currency (JPY) at Stripe: every fare, hold, capture and refund is whole yen, and gets there."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from tests.fakes import FakeTripService
from tests.helpers import row_counts
from tests.stripe_server import LocalStripe

# The outside tester's settings: 3.73 km at HIGH surge is (500 + 3.73 x 300) x 1.5 = 2428.50 yen.
YEN = {"CURRENCY": "JPY", "BASE_FARE": Decimal("500"), "RATE_PER_KM": Decimal("300")}


def charge(app: Flask, trip_id: int = 101, key: str | None = None, **fields: Any) -> Any:
    body = {"trip_id": trip_id, "method": "CARD", "payment_method": "pm_card_visa", **fields}
    body["idempotency_key"] = key or f"charge-{trip_id}"
    return app.test_client().post("/v1/payments/charge", json=body)


def authorize(app: Flask, trip_id: int = 101, **fields: Any) -> Any:
    body = {
        "idempotency_key": f"hold-{trip_id}",
        "trip_id": trip_id,
        "method": "CARD",
        "payment_method": "pm_card_visa",
    }
    return app.test_client().post("/v1/payments/authorize", json={**body, **fields})


def refund(app: Flask, payment_id: int, **fields: Any) -> Any:
    return app.test_client().post(f"/v1/payments/{payment_id}/refund", json=fields)


@pytest.fixture
def yen_app(stripe_app_with: Any) -> Flask:
    """Stripe (localstripe) charging in yen at the tester's fares."""
    return stripe_app_with(**YEN)


def test_the_reported_trip_charges_2429_yen_at_stripe_and_succeeds(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, distance_km=3.73, surge_level="HIGH")

    response = charge(yen_app)

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["status"], body["amount"], body["currency"]) == ("SUCCESS", 2429, "JPY")
    assert body["fare"]["amount"] == 2429
    [intent] = localstripe.payment_intents()
    assert (intent.amount, intent.currency, intent.status) == (2429, "jpy", "succeeded")


def test_the_readme_example_trip_in_yen_at_the_default_fares_charges_31_yen(
    stripe_app_with: Any, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, distance_km=10.5)  # 5 + 10.5 x 2.50 = 31.25 -> 31 yen

    response = charge(stripe_app_with(CURRENCY="JPY"))

    assert (response.status_code, response.get_json()["amount"]) == (201, 31), response.get_json()
    [intent] = localstripe.payment_intents()
    assert (intent.amount, intent.status) == (31, "succeeded")


@pytest.mark.parametrize("distance", ["0.01", "1.17", "3.73", "7.5", "12.49", "25.03", "99.99"])
def test_every_fare_is_whole_yen_at_stripe(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe, distance: str
) -> None:
    trips.trip(101, distance_km=float(distance), surge_level="HIGH")
    exact = (500 + Decimal(distance) * 300) * Decimal("1.5")

    response = charge(yen_app)

    assert response.status_code == 201, response.get_json()
    [intent] = localstripe.payment_intents()
    assert intent.amount == int(exact.quantize(Decimal(1), ROUND_HALF_UP)) == response.get_json()["amount"]


def test_a_charge_amount_with_decimals_is_400_naming_amount_and_nothing_is_written(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=3.73, surge_level="HIGH")

    response = charge(yen_app, amount=2428.5)

    assert response.status_code == 400
    body = response.get_json()
    assert (body["code"], body["field"]) == ("validation_error", "amount")
    assert "whole number of JPY" in body["error"] and "2428.5" in body["error"]
    assert localstripe.payment_intents() == []
    counts = row_counts(db)
    assert counts["payments"] == counts["idempotency_keys"] == counts["notification_outbox"] == 0


def test_the_smallest_yen_amount_is_one_yen(yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe) -> None:
    trips.trip(101)

    response = charge(yen_app, amount=1)

    assert (response.status_code, response.get_json()["amount"]) == (201, 1), response.get_json()
    [intent] = localstripe.payment_intents()
    assert (intent.amount, intent.status) == (1, "succeeded")


def test_the_largest_storable_yen_amount_is_charged_and_one_cent_more_is_400(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101)
    trips.trip(102)

    largest = charge(yen_app, amount=99999999)
    above = charge(yen_app, 102, amount=99999999.99)

    assert (largest.status_code, largest.get_json()["amount"]) == (201, 99999999), largest.get_json()
    [intent] = localstripe.payment_intents()
    assert intent.amount == 99999999
    assert (above.status_code, above.get_json()["field"]) == (400, "amount")


def test_a_yen_fare_that_rounds_to_zero_is_invalid_fare_and_half_a_yen_is_one(
    stripe_app_with: Any, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    app = stripe_app_with(CURRENCY="JPY", BASE_FARE=Decimal("0"), RATE_PER_KM=Decimal("0.10"))
    trips.trip(101, distance_km=4)  # 0.40 yen -> 0
    trips.trip(102, distance_km=5)  # 0.50 yen -> 1

    nothing = charge(app)
    one = charge(app, 102)

    assert (nothing.status_code, nothing.get_json()["code"]) == (400, "invalid_fare")
    assert "at least 1 JPY" in nothing.get_json()["error"]
    assert (one.status_code, one.get_json()["amount"]) == (201, 1)
    [intent] = localstripe.payment_intents()
    assert intent.amount == 1


def test_a_hold_is_whole_yen_and_its_capture_takes_the_final_fare_in_whole_yen(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, status="ACCEPTED", distance_km=3.73, surge_level="HIGH")

    held = authorize(yen_app)  # 2428.50 x 1.25 = 3035.625 -> 3036 yen
    trips.trip(101, status="COMPLETED", distance_km=3.73, surge_level="HIGH")
    captured = yen_app.test_client().post(f"/v1/payments/{held.get_json()['payment_id']}/capture")

    assert (held.status_code, held.get_json()["authorized_amount"]) == (201, 3036), held.get_json()
    assert captured.status_code == 200, captured.get_json()
    assert (captured.get_json()["amount"], captured.get_json()["authorized_amount"]) == (2429, 3036)
    [intent] = localstripe.payment_intents()
    assert (intent.amount, intent.status, localstripe.captured(intent)) == (3036, "succeeded", 2429)


def test_an_explicit_capture_in_yen_is_taken_and_one_with_decimals_is_400_and_the_hold_stands(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, status="ACCEPTED", distance_km=3.73, surge_level="HIGH")
    payment_id = authorize(yen_app).get_json()["payment_id"]
    trips.trip(101, status="COMPLETED", distance_km=3.73, surge_level="HIGH")
    client = yen_app.test_client()

    refused = client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 2000.5})
    standing = client.get(f"/v1/payments/{payment_id}").get_json()
    taken = client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 2000})

    assert (refused.status_code, refused.get_json()["code"], refused.get_json()["field"]) == (
        400, "validation_error", "amount",
    )  # fmt: skip
    assert (standing["status"], standing["amount"]) == ("AUTHORIZED", 3036)
    assert (taken.status_code, taken.get_json()["amount"]) == (200, 2000), taken.get_json()
    [intent] = localstripe.payment_intents()
    assert localstripe.captured(intent) == 2000


def test_yen_refunds_partial_and_full_reach_stripe_and_one_with_decimals_writes_nothing(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=3.73, surge_level="HIGH")
    paid = charge(yen_app).get_json()

    refused = refund(yen_app, paid["payment_id"], amount=100.5)
    refunds_after_refusal = row_counts(db)["payment_refunds"]
    partial = refund(yen_app, paid["payment_id"], amount=1000)
    rest = refund(yen_app, paid["payment_id"])

    assert (refused.status_code, refused.get_json()["code"], refused.get_json()["field"]) == (
        400, "validation_error", "amount",
    )  # fmt: skip
    assert refunds_after_refusal == 0
    assert (partial.status_code, partial.get_json()["refund_amount"]) == (200, 1000), partial.get_json()
    assert (rest.status_code, rest.get_json()["refund_amount"], rest.get_json()["remaining_amount"]) == (200, 1429, 0)
    made = sorted(r.amount for r in localstripe.refunds(paid["gateway_reference"]))
    assert made == [1000, 1429]


def test_a_yen_receipt_reads_whole_yen_in_json_and_html(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, distance_km=3.73, surge_level="HIGH")
    paid = charge(yen_app).get_json()
    refund(yen_app, paid["payment_id"], amount=1000)
    client = yen_app.test_client()

    data = client.get(f"/v1/payments/{paid['payment_id']}/receipt").get_json()["receipt_data"]
    page = client.get(f"/v1/payments/{paid['payment_id']}/receipt", headers={"Accept": "text/html"}).text

    assert data["currency"] == "JPY"
    assert data["totals"] == {"amount": 2429, "refunded": 1000, "net": 1429}
    assert data["fare"]["amount"] == 2429
    assert "2,429" in page and "1,429" in page and "1,000" in page
    # Any money figure with decimals would be a yen amount shown in cents (timestamps hold ".00" too, so match amounts).
    assert re.findall(r"\b\d{1,3}(?:,\d{3})*\.\d{2}\b", page) == []


def test_yen_amounts_are_the_same_json_number_on_every_endpoint(
    yen_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101, distance_km=3.73, surge_level="HIGH")
    client = yen_app.test_client()
    charged = charge(yen_app)
    payment_id = charged.get_json()["payment_id"]

    texts = [
        charged.text,
        client.get(f"/v1/payments/{payment_id}").text,
        client.get("/v1/payments").text,
        client.get(f"/v1/payments/{payment_id}/receipt").text,
        client.get("/metrics").text,
    ]

    for text in texts:
        assert "2429" in text and "2428.5" not in text and "2429.00" not in text, text
