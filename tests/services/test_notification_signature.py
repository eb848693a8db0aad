"""Signed notifications: the receiver snippet of docs/api.md, run against real deliveries to the fake service."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from config import Config
from services.notification_service import Dispatcher, HttpNotificationSender
from tests.fakes import FakeNotificationService, FakeTripService

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_test_5b2d6c0e"
HEADER_RE = re.compile(r"^t=(\d+),v1=([0-9a-f]{64})$")

Verify = Callable[..., bool]


def documented_verify() -> Verify:
    """The `verify` function exactly as the Notifications section of docs/api.md shows it."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Notifications\n") :]
    following = section.find("\n## ", 1)
    section = section if following == -1 else section[:following]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(snippets) == 1, "the Notifications section should show one Python receiver snippet"
    namespace: dict[str, Any] = {}
    exec(compile(snippets[0], "docs/api.md#notifications", "exec"), namespace)  # the snippet from our own docs
    return namespace["verify"]


@pytest.fixture
def verify() -> Verify:
    return documented_verify()


def charge(app: Flask, trips: FakeTripService, trip_id: int = 101) -> None:
    trips.trip(trip_id)
    answer = app.test_client().post(
        "/v1/payments/charge", json={"idempotency_key": f"k{trip_id}", "trip_id": trip_id, "method": "CARD"}
    )
    assert answer.status_code == 201


def test_every_delivery_is_signed_and_the_documented_receiver_accepts_it(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    verify: Verify,
) -> None:
    charge(quiet_app, trips, 101)
    charge(quiet_app, trips, 102)
    before = int(time.time())

    assert dispatcher_for(notifications.url, NOTIFY_SIGNING_SECRET=SECRET).run_once() == 2

    assert len(notifications.raw) == 2
    for body, headers in zip(notifications.raw, notifications.headers, strict=True):
        header = headers["Payment-Signature"]
        stamp, _ = HEADER_RE.match(header).groups()
        assert before <= int(stamp) <= time.time()
        assert verify(SECRET.encode(), header, body)
        assert json.loads(body)["notification_id"] == headers["Idempotency-Key"]


def test_the_receiver_rejects_a_tampered_body_a_wrong_secret_and_a_moved_timestamp(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    verify: Verify,
) -> None:
    charge(quiet_app, trips)
    dispatcher_for(notifications.url, NOTIFY_SIGNING_SECRET=SECRET).run_once()
    (body,) = notifications.raw
    header = notifications.headers[0]["Payment-Signature"]
    stamp, digest = HEADER_RE.match(header).groups()
    tampered = body.replace(b'"amount":', b'"amount":1')

    assert tampered != body
    assert not verify(SECRET.encode(), header, tampered)
    assert not verify(SECRET.encode(), header, body + b" ")
    assert not verify(b"another secret", header, body)
    assert not verify(SECRET.encode(), f"t={int(stamp) + 1},v1={digest}", body)
    assert not verify(SECRET.encode(), f"v1={digest}", body)
    assert not verify(SECRET.encode(), "", body)


def test_the_receiver_rejects_a_delivery_signed_more_than_300_seconds_ago(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    verify: Verify,
) -> None:
    charge(quiet_app, trips, 101)
    charge(quiet_app, trips, 102)
    dispatcher = dispatcher_for(notifications.url, clock=lambda: time.time() - 301, NOTIFY_SIGNING_SECRET=SECRET)
    assert dispatcher.run_once() == 2

    for body, headers in zip(notifications.raw, notifications.headers, strict=True):
        # A replay of a captured delivery, or a sender clock more than 300 s behind: refused...
        assert not verify(SECRET.encode(), headers["Payment-Signature"], body)
        # ...although the signature itself is genuine.
        assert verify(SECRET.encode(), headers["Payment-Signature"], body, tolerance=400)


def test_the_signature_covers_the_exact_utf8_bytes_sent(
    test_config: Config, notifications: FakeNotificationService, verify: Verify
) -> None:
    config = test_config.with_overrides(
        {"NOTIFICATION_SERVICE_URL": notifications.url, "NOTIFY_SIGNING_SECRET": SECRET}
    )
    payload = {"notification_id": "n-1", "type": "payment", "rider": "Zoë Ñúñez ₹"}

    HttpNotificationSender(config).send("n-1", payload)

    (body,) = notifications.raw
    assert json.loads(body.decode("utf-8")) == payload
    assert verify(SECRET.encode(), notifications.headers[0]["Payment-Signature"], body)


def test_without_a_secret_no_signature_header_is_sent(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
) -> None:
    charge(quiet_app, trips)

    dispatcher_for(notifications.url).run_once()

    (headers,) = notifications.headers
    assert "Payment-Signature" not in {name.title() for name in headers}
    assert headers["Idempotency-Key"] == notifications.received[0]["notification_id"]


def test_the_secret_is_kept_out_of_repr(test_config: Config) -> None:
    config = test_config.with_overrides({"NOTIFY_SIGNING_SECRET": SECRET})

    assert SECRET not in repr(config)
    assert config.NOTIFY_SIGNING_SECRET == SECRET


@pytest.mark.parametrize(("secret", "warnings"), [(None, 1), (SECRET, 0)])
def test_a_service_without_a_secret_warns_once_at_start(secret: str | None, warnings: int) -> None:
    env = {"DEBUG": "true", "LOG_LEVEL": "WARNING", "NOTIFY_DISPATCHER_ENABLED": "false", "PATH": "/usr/bin:/bin"}
    if secret is not None:
        env["NOTIFY_SIGNING_SECRET"] = secret
    started = subprocess.run(
        [sys.executable, "-c", "from app import close_app, create_app\nfor _ in range(2): close_app(create_app())"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip

    assert started.returncode == 0, started.stderr
    output = started.stdout + started.stderr
    assert output.count("NOTIFY_SIGNING_SECRET is not set") == warnings, output
    assert SECRET not in output
