"""The app as operators run it: `gunicorn app:app` with several workers, and the factory's wiring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from api.services import services
from app import close_app, create_app
from config import Config
from tests.helpers import closed_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gunicorn_url(serve_gunicorn: Callable[..., str]) -> str:
    """The app under gunicorn with two workers."""
    return serve_gunicorn()


def test_gunicorn_serves_the_module_level_app(gunicorn_url: str, insert_payment) -> None:
    payment_id = insert_payment()

    live = requests.get(f"{gunicorn_url}/live", timeout=5)
    payment = requests.get(f"{gunicorn_url}/v1/payments/{payment_id}", timeout=5)

    assert (live.status_code, live.json()) == (200, {"alive": True})
    assert payment.status_code == 200
    assert payment.json()["payment_id"] == payment_id
    assert payment.headers["X-Request-ID"]


def test_importing_the_module_builds_no_app() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import app, sys; sys.exit(0 if app.__dict__.get('app') is None else 1)"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "BASE_FARE": "not-a-number"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr


def test_create_app_applies_overrides(test_config: Config) -> None:
    app = create_app({"DB_POOL_SIZE": 3, "CURRENCY": "USD"}, config=test_config)
    try:
        settings = app.config["SERVICE"]
        assert (settings.DB_POOL_SIZE, settings.CURRENCY) == (3, "USD")
        assert services(app).pool.size == 3
        assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024
    finally:
        close_app(app)


def test_the_app_starts_while_the_database_is_unreachable(test_config: Config) -> None:
    app = create_app({"DATABASE_URL": None, "DB_HOST": "127.0.0.1", "DB_PORT": closed_port()}, config=test_config)
    try:
        assert app.test_client().get("/live").status_code == 200
    finally:
        close_app(app)
