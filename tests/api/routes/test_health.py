"""GET /, /health, /ready, /live: with the database up, down, or without its schema."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Config
from tests.helpers import closed_port, config_for_database, create_database, drop_database, http_stub


@pytest.fixture
def db_down_app(make_app: Callable[..., Flask]) -> Flask:
    """An app whose database address has nothing listening."""
    return make_app(DATABASE_URL=None, DB_HOST="127.0.0.1", DB_PORT=closed_port(), DB_CONNECT_TIMEOUT=2)


@pytest.fixture
def empty_database(base_config: Config) -> Iterator[Config]:
    """A reachable database without any migrations applied."""
    name = create_database(base_config, "payments_empty")
    yield config_for_database(base_config, name)
    drop_database(base_config, name)


def test_root_describes_the_service_and_its_endpoints(client: FlaskClient) -> None:
    body = client.get("/").get_json()

    assert body["service"] == "payment-service"
    assert body["status"] == "running"
    assert body["version"]
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() is not None
    assert body["endpoints"]["list_payments"] == "GET /v1/payments"
    assert body["endpoints"]["get_payment"] == "GET /v1/payments/<payment_id>"
    assert body["endpoints"]["health"] == "GET /health"


def test_health_is_up_with_the_database_and_reports_dependencies(client: FlaskClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "UP"
    assert body["database_status"] == "UP"
    assert set(body["dependencies"]) == {"trip_service", "notification_service"}
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() is not None


def test_dependencies_are_up_when_their_health_answers(make_app: Callable[..., Flask]) -> None:
    with http_stub(200) as trips, http_stub(500) as notifications:
        client = make_app(TRIP_SERVICE_URL=trips, NOTIFICATION_SERVICE_URL=notifications).test_client()

        body = client.get("/health").get_json()

    assert body["dependencies"] == {"trip_service": "UP", "notification_service": "DOWN"}
    assert body["status"] == "UP"


def test_a_hanging_dependency_does_not_make_health_slow(make_app: Callable[..., Flask]) -> None:
    with http_stub(200, delay=10.0) as slow:
        client = make_app(TRIP_SERVICE_URL=slow, NOTIFICATION_SERVICE_URL=slow, HEALTH_CHECK_TIMEOUT=0.3).test_client()

        started = time.monotonic()
        body = client.get("/health").get_json()
        elapsed = time.monotonic() - started

    assert body["dependencies"] == {"trip_service": "DOWN", "notification_service": "DOWN"}
    assert elapsed < 10.0 / 2  # cut off by the 0.3 s check timeout, not waited out


def test_dependency_status_is_cached_between_checks(make_app: Callable[..., Flask]) -> None:
    with http_stub(200) as trips:
        client = make_app(TRIP_SERVICE_URL=trips, HEALTH_CHECK_CACHE_SECONDS=60).test_client()
        assert client.get("/health").get_json()["dependencies"]["trip_service"] == "UP"
    # The stub is gone now, but the cached answer stands until the period ends.
    assert client.get("/health").get_json()["dependencies"]["trip_service"] == "UP"


def test_health_is_503_degraded_when_the_database_is_down(db_down_app: Flask) -> None:
    response = db_down_app.test_client().get("/health")

    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["database_status"]) == ("DEGRADED", "DOWN")


def test_ready_is_true_with_a_migrated_database(client: FlaskClient) -> None:
    response = client.get("/ready")

    assert (response.status_code, response.get_json()) == (200, {"ready": True})


def test_ready_is_false_when_the_database_is_down(db_down_app: Flask) -> None:
    response = db_down_app.test_client().get("/ready")

    assert (response.status_code, response.get_json()) == (503, {"ready": False})


def test_ready_is_false_when_the_schema_is_missing(empty_database: Config) -> None:
    from app import close_app, create_app

    app = create_app(config=empty_database)
    try:
        response = app.test_client().get("/ready")
    finally:
        close_app(app)

    assert (response.status_code, response.get_json()) == (503, {"ready": False})


def test_live_answers_even_with_the_database_down(db_down_app: Flask) -> None:
    response = db_down_app.test_client().get("/live")

    assert (response.status_code, response.get_json()) == (200, {"alive": True})


def test_data_endpoints_answer_503_database_unavailable_quickly_when_it_is_down(db_down_app: Flask) -> None:
    client = db_down_app.test_client()

    started = time.monotonic()
    listing = client.get("/v1/payments")
    single = client.get("/v1/payments/1")
    elapsed = time.monotonic() - started

    for response in (listing, single):
        assert response.status_code == 503
        assert response.get_json()["code"] == "database_unavailable"
    assert elapsed < 2 * 2  # a refused connection is not waited on: less than a 2 s connect timeout each
