"""API keys on /v1: missing, wrong and right keys on every route; health stays open; no key in logs."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from decimal import Decimal

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Config, ConfigError
from tests.fakes import FakeNotificationService, FakeProfileService, FakeTripService
from utils.logger import configure_logging

TRIP_KEY = "trip-secret-0001"
ADMIN_KEY = "admin-secret-0002"
API_KEYS = {"trip-service": hashlib.sha256(TRIP_KEY.encode()).hexdigest(),
            "admin": hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}  # fmt: skip


@pytest.fixture
def secured_app(
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    profiles: FakeProfileService,
) -> Flask:
    return make_app(
        API_KEYS=API_KEYS,
        TRIP_SERVICE_URL=trips.url,
        NOTIFICATION_SERVICE_URL=notifications.url,
        RIDER_SERVICE_URL=profiles.url,
        DRIVER_SERVICE_URL=profiles.url,
        GATEWAY_SUCCESS_RATE=1.0,
    )


def routes(payment_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/v1/payments", None),
        ("GET", f"/v1/payments/{payment_id}", None),
        ("POST", "/v1/payments/charge", {"idempotency_key": "auth-k", "trip_id": 101, "method": "CARD"}),
        ("POST", f"/v1/payments/{payment_id}/refund", {"amount": 1}),
        ("GET", f"/v1/payments/{payment_id}/receipt", None),
    ]


def call(client: FlaskClient, method: str, path: str, body: dict | None, headers: dict) -> object:
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize("route_index", range(5))
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {TRIP_KEY}"},
     {"Authorization": "Bearer"}, {"X-API-Key": TRIP_KEY[:-1]}],
)  # fmt: skip
def test_every_v1_route_rejects_missing_or_wrong_keys_with_401(
    secured_app: Flask,
    insert_payment: Callable[..., int],
    db: psycopg2.extensions.connection,
    route_index: int,
    headers: dict,
) -> None:
    payment_id = insert_payment(amount=Decimal("50.00"))
    method, path, body = routes(payment_id)[route_index]

    response = call(secured_app.test_client(), method, path, body, headers)

    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payment_refunds")
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("route_index", range(5))
@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_every_v1_route_works_with_a_right_key(
    secured_app: Flask,
    trips: FakeTripService,
    insert_payment: Callable[..., int],
    route_index: int,
    style: str,
) -> None:
    trips.trip(101)
    payment_id = insert_payment(amount=Decimal("50.00"))
    method, path, body = routes(payment_id)[route_index]
    headers = {"Authorization": f"Bearer {TRIP_KEY}"} if style == "bearer" else {"X-API-Key": ADMIN_KEY}

    response = call(secured_app.test_client(), method, path, body, headers)

    assert response.status_code in (200, 201)


def test_a_key_stored_as_sha256_is_accepted(make_app: Callable[..., Flask]) -> None:
    keys = Config.from_env({"API_KEYS": f"ops:sha256:{hashlib.sha256(b'plain-ops-key').hexdigest()}"}).API_KEYS
    app = make_app(API_KEYS=keys)

    response = app.test_client().get("/v1/payments", headers={"X-API-Key": "plain-ops-key"})

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/ready", "/live"])
def test_service_info_and_probes_need_no_key(secured_app: Flask, path: str) -> None:
    assert secured_app.test_client().get(path).status_code == 200


def test_authentication_comes_before_body_validation(secured_app: Flask, db: psycopg2.extensions.connection) -> None:
    response = secured_app.test_client().post("/v1/payments/charge", data="not json", content_type="application/json")

    assert response.status_code == 401


def test_idempotency_keys_are_scoped_to_the_client(
    secured_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    trips.trip(102)
    client = secured_app.test_client()

    def charge(trip_id: int, key: str) -> object:
        body = {"idempotency_key": "same", "trip_id": trip_id, "method": "CARD"}
        return client.post("/v1/payments/charge", json=body, headers={"X-API-Key": key})

    first = charge(101, TRIP_KEY)
    other_client = charge(102, ADMIN_KEY)

    assert (first.status_code, other_client.status_code) == (201, 201)
    with db.cursor() as cur:
        cur.execute("SELECT scope FROM idempotency_keys ORDER BY scope")
        assert [row[0] for row in cur.fetchall()] == ["admin/charge", "trip-service/charge"]


def test_no_key_material_reaches_the_logs(
    secured_app: Flask, trips: FakeTripService, insert_payment: Callable[..., int]
) -> None:
    trips.trip(101)
    payment_id = insert_payment(amount=Decimal("50.00"))
    stream = io.StringIO()
    configure_logging("DEBUG", json_lines=True, stream=stream)
    client = secured_app.test_client()
    try:
        for method, path, body in routes(payment_id):
            for headers in ({}, {"X-API-Key": "wrong-key-material"}, {"Authorization": f"Bearer {TRIP_KEY}"},
                            {"X-API-Key": ADMIN_KEY}):  # fmt: skip
                call(client, method, path, body, headers)
    finally:
        configure_logging("WARNING", json_lines=True)

    logs = stream.getvalue()
    assert logs.count('"payment_service.access"') >= 20
    for secret in (TRIP_KEY, ADMIN_KEY, "wrong-key-material", API_KEYS["admin"], "auth-k"):
        assert secret not in logs
    clients = {json.loads(line).get("client") for line in logs.splitlines() if "payment_service.access" in line}
    assert clients == {None, "trip-service", "admin"}


def test_running_without_keys_warns_once_at_start(make_app: Callable[..., Flask]) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_lines=True, stream=stream)
    try:
        from flask import Flask as _Flask

        from api.middleware.auth import register_auth

        bare = _Flask("bare")
        bare.config["SERVICE"] = Config.from_env({})
        register_auth(bare)
    finally:
        configure_logging("WARNING", json_lines=True)

    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [w["message"] for w in warnings if w["level"] == "WARNING"] == [
        "API_KEYS is not set: the /v1 endpoints accept requests from anyone"
    ]


@pytest.mark.parametrize(
    "value",
    [
        "nokey", ":secret", "name:", "bad name:secret", "a:x,a:y", "ops:sha256:abc", "ops:sha256:" + "g" * 64,
        "alice:k1,bob:k1", "alice:k1,bob:sha256:" + hashlib.sha256(b"k1").hexdigest(),
    ],
)  # fmt: skip
def test_malformed_api_keys_stop_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS"):
        Config.from_env({"API_KEYS": value})


def test_api_keys_parse_into_name_and_digest() -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

    keys = Config.from_env({"API_KEYS": f"trip-service:s3cret, admin:sha256:{digest.upper()}"}).API_KEYS

    assert keys == {"trip-service": hashlib.sha256(b"s3cret").hexdigest(), "admin": digest}
    assert "s3cret" not in repr(Config.from_env({"API_KEYS": "trip-service:s3cret"}))
