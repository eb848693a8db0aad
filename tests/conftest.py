"""Test fixtures: one throwaway PostgreSQL database per run, a clean slate for every test."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import close_app, create_app
from config import Config
from database.migrate import apply_migrations
from tests.fakes import (
    FakeNotificationService,
    FakeProfileService,
    FakeTripService,
    fake_notification_service,
    fake_profile_service,
    fake_trip_service,
)
from tests.helpers import (
    INSERT_PAYMENT,
    TRUNCATE_DATA,
    Gunicorn,
    assert_ledger_holds,
    closed_port,
    config_for_database,
    create_database,
    database_env,
    drop_database,
    start_gunicorn,
    wait_until,
)
from tests.openapi_check import check_response


@pytest.fixture(scope="session")
def base_config() -> Config:
    """Configuration from the environment (as `make test` / .ci/run set it), quietened for tests."""
    return Config.from_env().with_overrides({"TESTING": True, "LOG_LEVEL": "WARNING", "DEBUG": False})


@pytest.fixture(scope="session")
def test_config(base_config: Config) -> Iterator[Config]:
    """A fresh, migrated database for this test run; dropped at the end."""
    name = create_database(base_config, "payments_test")
    config = config_for_database(base_config, name)
    try:
        conn = psycopg2.connect(config.get_database_uri())
        try:
            apply_migrations(conn)
        finally:
            conn.close()
        yield config
    finally:
        drop_database(base_config, name)


@pytest.fixture(scope="session")
def _admin_db(test_config: Config) -> Iterator[psycopg2.extensions.connection]:
    """One autocommit connection to the test database for fixtures and assertions."""
    conn = psycopg2.connect(test_config.get_database_uri(), options="-c timezone=UTC")
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def db(_admin_db: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.connection]:
    """The test database, emptied before the test runs."""
    with _admin_db.cursor() as cur:
        cur.execute(TRUNCATE_DATA)
    yield _admin_db


@pytest.fixture
def assert_ledger_consistent(db: psycopg2.extensions.connection) -> Callable[[], None]:
    """Call it (no arguments) where a test's writes are done: it fails listing every broken ledger invariant."""
    return functools.partial(assert_ledger_holds, db)


@pytest.fixture
def app(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[Flask]:
    """An app wired to the clean test database."""
    application = create_app(config=test_config)
    yield application
    close_app(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask test client of `app`."""
    return app.test_client()


@pytest.fixture
def make_app(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[Callable[..., Flask]]:
    """Factory for apps with extra overrides; every pool is closed afterwards."""
    made: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        application = create_app(overrides, config=test_config)
        made.append(application)
        return application

    yield factory
    for application in made:
        close_app(application)


@pytest.fixture
def insert_payment(db: psycopg2.extensions.connection) -> Callable[..., int]:
    """Insert a payment row directly and return its id; keyword arguments override the defaults."""
    counter = {"n": 0}
    start = datetime(2025, 11, 3, 11, 23, 0, tzinfo=UTC)

    def insert(**fields: Any) -> int:
        counter["n"] += 1
        row = {
            "trip_id": 1000 + counter["n"],
            "rider_id": None,
            "driver_id": None,
            "amount": Decimal("31.25"),
            "amount_refunded": Decimal("0"),
            "currency": "INR",
            "method": "CARD",
            "status": "SUCCESS",
            "reference": f"PAY-TEST-{counter['n']:06d}",
            "created_at": start + timedelta(minutes=counter["n"]),
            "authorized_amount": None,
        }
        row.update(fields)
        with db.cursor() as cur:
            cur.execute(INSERT_PAYMENT, row)
            return cur.fetchone()[0]

    return insert


@pytest.fixture
def trips() -> Iterator[FakeTripService]:
    """A fake trip service on loopback (real HTTP)."""
    with fake_trip_service() as fake:
        yield fake


@pytest.fixture
def notifications() -> Iterator[FakeNotificationService]:
    """A fake notification service on loopback (real HTTP)."""
    with fake_notification_service() as fake:
        yield fake


@pytest.fixture
def profiles() -> Iterator[FakeProfileService]:
    """A fake rider and driver service on loopback (real HTTP)."""
    with fake_profile_service() as fake:
        yield fake


@pytest.fixture
def charge_app(
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    profiles: FakeProfileService,
) -> Flask:
    """An app wired to the fakes, with a gateway that always approves."""
    return make_app(
        TRIP_SERVICE_URL=trips.url,
        NOTIFICATION_SERVICE_URL=notifications.url,
        RIDER_SERVICE_URL=profiles.url,
        DRIVER_SERVICE_URL=profiles.url,
        GATEWAY_SUCCESS_RATE=1.0,
        HTTP_READ_TIMEOUT=1.0,
    )


@pytest.fixture
def charge_client(charge_app: Flask) -> FlaskClient:
    """Test client of `charge_app`."""
    return charge_app.test_client()


@pytest.fixture
def serve_gunicorn(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[Callable[..., str]]:
    """Start `gunicorn app:app` (2 workers, threads) on the test database; return its base URL.

    Keyword arguments become environment variables of the server (e.g. TRIP_SERVICE_URL=...).
    Rate limiting is off unless asked for: these servers take bursts that only its own tests aim at.
    """
    servers: list[Gunicorn] = []

    def start(workers: int = 2, threads: int = 8, **env: object) -> str:
        try:
            server = start_gunicorn(
                database_env(test_config, **{k: str(v) for k, v in env.items()}), workers=workers, threads=threads
            )
        except RuntimeError as exc:
            pytest.fail(str(exc))
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free port (never the machine's shared one, which other work uses)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = closed_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    if not wait_until(answers, timeout=10):
        process.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0", process
    process.kill()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def responses_match_the_openapi_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every response a test receives through the Flask test client must match openapi.yaml."""
    original = FlaskClient.open

    def checked_open(self: FlaskClient, *args: Any, **kwargs: Any) -> Any:
        response = original(self, *args, **kwargs)
        request = response.request
        body = response.get_json(silent=True) if response.mimetype == "application/json" else None
        problems = check_response(request.method, request.path, response.status_code, response.mimetype, body)
        assert not problems, "response differs from openapi.yaml: " + "; ".join(problems)
        return response

    monkeypatch.setattr(FlaskClient, "open", checked_open)
