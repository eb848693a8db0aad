"""What a charge may cost: never 0.00, never more than a payment holds, for the trip's own parties."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from config import Config, ConfigError
from tests.fakes import FakeNotificationService, FakeTripService
from tests.gateways import StubGateway, use_gateway
from tests.helpers import ROOT, closed_port, database_env, row_counts, wait_until


def charge(client: FlaskClient, trip_id: int = 101, **fields: Any):
    body = {"idempotency_key": f"key-{trip_id}", "trip_id": trip_id, "method": "CARD", **fields}
    return client.post("/v1/payments/charge", json=body)


def nothing_stored(db: psycopg2.extensions.connection) -> bool:
    counts = row_counts(db)
    return counts["payments"] == counts["idempotency_keys"] == counts["notification_outbox"] == 0


@pytest.fixture
def fares_app(
    make_app: Callable[..., Flask], trips: FakeTripService, notifications: FakeNotificationService
) -> Callable[..., Flask]:
    """An app on the fakes with an approving gateway and the given fare settings."""

    def build(**settings: Any) -> Flask:
        return make_app(
            TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, GATEWAY_SUCCESS_RATE=1.0, **settings
        )

    return build


# --- amounts of 0.00 --------------------------------------------------------------------------------


def test_a_fare_that_rounds_to_zero_is_refused_with_invalid_fare_and_nothing_stored(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=0, surge_multiplier=0.0001)

    response = charge(fares_app().test_client())

    assert response.status_code == 400, response.get_json()
    assert response.get_json()["code"] == "invalid_fare"
    assert nothing_stored(db)


def test_a_cancelled_trip_without_a_cancellation_fee_is_refused_with_no_cancellation_fee(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="CANCELLED", distance_km=None)

    response = charge(fares_app(CANCELLATION_FEE=Decimal("0")).test_client())

    assert response.status_code == 400, response.get_json()
    assert response.get_json()["code"] == "no_cancellation_fee"
    assert nothing_stored(db)


def test_a_client_amount_does_not_charge_a_cancelled_trip_when_cancellations_are_free(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="CANCELLED", distance_km=None)

    response = charge(fares_app(CANCELLATION_FEE=Decimal("0")).test_client(), method="CASH", amount=5)

    assert response.status_code == 400, response.get_json()
    assert response.get_json()["code"] == "no_cancellation_fee"
    assert nothing_stored(db)


def test_a_null_amount_is_refused_rather_than_charging_the_fare(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)

    response = charge(fares_app().test_client(), amount=None)

    assert response.status_code == 400
    assert response.get_json()["field"] == "amount"
    assert nothing_stored(db)


def test_the_smallest_fare_is_charged(fares_app: Callable[..., Flask], trips: FakeTripService) -> None:
    # 5.00 x 0.001 = 0.005, which rounds half-up to 0.01: the smallest payment there is.
    trips.trip(101, distance_km=0, surge_multiplier=0.001)

    response = charge(fares_app().test_client())

    assert response.status_code == 201
    assert response.get_json()["amount"] == 0.01


def test_the_database_refuses_a_payment_of_zero(db: psycopg2.extensions.connection) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation), db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference) VALUES (1, 0, 'CASH', 'SUCCESS', 'z')"
        )


# --- amounts too large to store ---------------------------------------------------------------------


# Rupiah have two decimals in ISO 4217, dong none: the largest payment is 99,999,999.99 IDR but 99,999,999 VND.
IDR = {"CURRENCY": "IDR", "BASE_FARE": Decimal("12000"), "RATE_PER_KM": Decimal("15000")}
VND = {"CURRENCY": "VND", "BASE_FARE": Decimal("12000"), "RATE_PER_KM": Decimal("15000")}
VND_EDGE = {"CURRENCY": "VND", "BASE_FARE": Decimal("99999"), "RATE_PER_KM": Decimal("10000")}


def test_a_fare_above_the_largest_amount_is_refused_with_fare_out_of_range(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=7000)

    response = charge(fares_app(**VND).test_client())

    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["code"] == "fare_out_of_range"
    assert body["fare"] == 105012000.0
    assert "prices at 105012000, above the largest payment amount 99999999 VND" in body["error"]
    assert body["max_amount"] == 99999999
    assert nothing_stored(db)


def test_the_largest_storable_fare_is_charged(fares_app: Callable[..., Flask], trips: FakeTripService) -> None:
    # (12000 + 6665.866666 x 15000) x 1.0 = 99,999,999.99 exactly at 6665.8666660 km.
    trips.trip(101, distance_km=6665.866666)

    response = charge(fares_app(**IDR).test_client())

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["amount"] == 99999999.99


def test_the_largest_storable_fare_in_a_zero_decimal_currency_is_charged_in_whole_units(
    fares_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    # 99999 + 9990.00004 x 10000 = 99,999,999.4 dong, which rounds half-up to 99,999,999.
    trips.trip(101, distance_km=9990.00004)

    response = charge(fares_app(**VND_EDGE).test_client())

    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["amount"], response.get_json()["fare"]["amount"]) == (99999999, 99999999)


def test_a_zero_decimal_fare_that_rounds_past_the_largest_amount_is_refused(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    # 99,999,999.5 dong rounds half-up to 100,000,000: it fits NUMERIC(10,2) as 99999999.50 did, but no payment in dong.
    trips.trip(101, distance_km=9990.00005)

    response = charge(fares_app(**VND_EDGE).test_client())

    assert (response.status_code, response.get_json()["code"]) == (400, "fare_out_of_range")
    assert response.get_json()["fare"] == 100000000
    assert nothing_stored(db)


def test_a_zero_decimal_fare_is_rounded_half_up_to_the_whole_unit(
    fares_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    # (12000 + 0.1 x 15000) x 1.0333 = 13,949.55 dong, which rounds half-up to 13,950 (not to 13,949.55).
    trips.trip(101, distance_km=0.1, surge_multiplier=1.0333)

    response = charge(fares_app(**VND).test_client(), method="CASH")

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["amount"] == 13950


def test_start_up_refuses_fares_under_which_an_ordinary_trip_cannot_be_stored() -> None:
    with pytest.raises(ConfigError, match="RATE_PER_KM"):
        Config.from_env({"CURRENCY": "VND", "BASE_FARE": "12000", "RATE_PER_KM": "99999"})
    with pytest.raises(ConfigError, match="RATE_PER_KM"):
        Config.from_env({}).with_overrides({"RATE_PER_KM": Decimal("99999")})


def test_start_up_accepts_dong_fares_that_fit() -> None:
    config = Config.from_env({"CURRENCY": "VND", "BASE_FARE": "12000", "RATE_PER_KM": "15000"})

    assert Decimal("15000") == config.RATE_PER_KM


# --- who pays: the trip's parties -------------------------------------------------------------------


def test_a_rider_the_trip_contradicts_is_refused_with_trip_party_mismatch(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, rider_id=55, driver_id=9)

    response = charge(fares_app().test_client(), rider_id=77)

    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert (body["code"], body["field"]) == ("trip_party_mismatch", "rider_id")
    assert "77" in body["error"] and "55" in body["error"]
    assert nothing_stored(db)


def test_a_driver_the_trip_contradicts_is_refused_with_trip_party_mismatch(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, rider_id=55, driver_id=9)

    response = charge(fares_app().test_client(), driver_id=10)

    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["field"]) == ("trip_party_mismatch", "driver_id")
    assert nothing_stored(db)


def test_the_trip_names_the_parties_when_the_body_does_not(
    fares_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    trips.trip(101, rider_id=55, driver_id=9)

    body = charge(fares_app().test_client(), rider_id=55).get_json()

    assert (body["rider_id"], body["driver_id"]) == (55, 9)


def test_the_body_names_the_parties_when_the_trip_does_not(
    fares_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    trips.trip(101)

    body = charge(fares_app().test_client(), rider_id=77, driver_id=78).get_json()

    assert (body["rider_id"], body["driver_id"]) == (77, 78)


# --- DEBUG changes logs only; the mock trip has its own switch --------------------------------------


def test_debug_does_not_charge_a_mock_trip_when_the_trip_service_fails(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.answer(101, 500, {"error": "boom"})
    app = make_app(TRIP_SERVICE_URL=trips.url, GATEWAY_SUCCESS_RATE=1.0, DEBUG=True)

    response = charge(app.test_client())

    assert (response.status_code, response.get_json()["code"]) == (503, "trip_service_unavailable")
    assert nothing_stored(db)


def test_the_mock_trip_is_charged_only_with_trip_service_mock_and_is_marked(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TRIP_SERVICE_URL=f"http://127.0.0.1:{closed_port()}", GATEWAY_SUCCESS_RATE=1.0,
                   TRIP_SERVICE_MOCK=True)  # fmt: skip

    body = charge(app.test_client()).get_json()

    assert (body["status"], body["amount"]) == ("SUCCESS", 31.25)
    assert body["fare"]["mock_trip"] is True
    assert any("MOCK trip" in record.getMessage() for record in caplog.records)


def test_a_real_trip_has_no_mock_mark_even_with_trip_service_mock(
    fares_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    trips.trip(101)

    body = charge(fares_app(TRIP_SERVICE_MOCK=True).test_client()).get_json()

    assert "mock_trip" not in body["fare"]


def test_python_app_py_with_debug_serves_no_interactive_debugger(test_config: Config) -> None:
    port = closed_port()
    env = database_env(test_config, DEBUG="true", SERVICE_PORT=str(port), NOTIFY_DISPATCHER_ENABLED="false")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(f"{url}/live"), timeout=20)
        console = requests.get(f"{url}/console", timeout=5)
        crash = requests.get(f"{url}/v1/payments/1?__debugger__=yes&cmd=resource&f=style.css", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert (console.status_code, console.json()["code"]) == (404, "not_found")
    assert "Werkzeug" not in crash.text and "__debugger__" not in crash.text


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


# --- amounts a gateway cannot move --------------------------------------------------------------------


class WholeTensOnly(StubGateway):
    """A gateway with a rule of its own the service does not know: amounts in tens only; never reached."""

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        return amount % 10 == 0


def test_a_fare_the_gateway_cannot_carry_is_400_before_anything_is_written_never_a_gateway_failure(
    fares_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = fares_app()
    use_gateway(app, WholeTensOnly())
    trips.trip(101)  # 31.25

    fare = charge(app.test_client())
    trips.trip(102)
    trips.trip(103)
    explicit = charge(app.test_client(), 102, amount=31)
    cash = charge(app.test_client(), 103, method="CASH")

    assert (fare.status_code, fare.get_json()["code"]) == (400, "charge_amount_not_payable")
    assert "field" not in fare.get_json()
    assert (explicit.status_code, explicit.get_json()["code"], explicit.get_json()["field"]) == (
        400, "charge_amount_not_payable", "amount",
    )  # fmt: skip
    assert cash.status_code == 201  # no gateway moves cash
    counts = row_counts(db)
    assert counts["payments"] == 1 and counts["idempotency_keys"] == 1
