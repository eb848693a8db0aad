"""Log lines: JSON with the agreed fields, one access line per request carrying the request id."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.fakes import FakeTripService
from tests.helpers import closed_port
from utils.logger import ReadableFormatter, configure_logging, get_logger


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Route the service's log handler into a buffer for the test, then restore quiet logging."""
    stream = io.StringIO()
    configure_logging("INFO", json_lines=True, stream=stream)
    yield stream
    configure_logging("WARNING", json_lines=True)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_lines_are_json_with_timestamp_level_logger_message_and_request_id(log_stream: io.StringIO) -> None:
    get_logger("payments.test").warning("something happened", extra={"payment_id": 5})

    (line,) = _lines(log_stream)
    assert line["level"] == "WARNING"
    assert line["logger"] == "payments.test"
    assert line["message"] == "something happened"
    assert line["request_id"] == "-"
    assert line["payment_id"] == 5
    assert line["timestamp"].endswith("+00:00")


def test_debug_mode_logs_readable_text(log_stream: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_lines=False, stream=stream)

    get_logger("payments.test").info("hello")

    assert "INFO" in stream.getvalue() and "hello" in stream.getvalue()
    assert not stream.getvalue().lstrip().startswith("{")


def test_configuring_twice_keeps_a_single_handler(log_stream: io.StringIO) -> None:
    configure_logging("INFO", json_lines=True, stream=log_stream)

    get_logger("payments.test").info("once")

    assert [line["message"] for line in _lines(log_stream)] == ["once"]


def test_each_request_writes_one_access_line_with_its_request_id(client: FlaskClient, log_stream: io.StringIO) -> None:
    configure_logging("INFO", json_lines=True, stream=log_stream)  # the app factory reconfigured it

    client.get("/v1/payments?limit=1", headers={"X-Request-ID": "req-42"})
    client.get("/v1/payments/abc")

    access = [line for line in _lines(log_stream) if line["logger"] == "payment_service.access"]
    assert len(access) == 2
    first, second = access
    assert (first["request_id"], first["method"], first["path"], first["status"]) == (
        "req-42",
        "GET",
        "/v1/payments",
        200,
    )
    assert isinstance(first["duration_ms"], float)
    assert second["status"] == 404
    assert second["request_id"] != "req-42"
    assert logging.getLogger("werkzeug").level == logging.WARNING


def test_payment_events_are_logged_with_ids_but_without_keys_or_bodies(
    charge_client: FlaskClient, trips: FakeTripService, log_stream: io.StringIO
) -> None:
    configure_logging("INFO", json_lines=True, stream=log_stream)  # the app factory reconfigured it
    trips.trip(101)
    body = {"idempotency_key": "idem-secret-123", "trip_id": 101, "method": "CARD", "rider_id": 4242}

    paid = charge_client.post("/v1/payments/charge", json=body).get_json()
    charge_client.post(f"/v1/payments/{paid['payment_id']}/refund", json={"amount": 1, "reason": "private note"})

    lines = _lines(log_stream)
    charge = next(line for line in lines if line["message"] == "charge finished")
    refund = next(line for line in lines if line["message"] == "refund recorded")
    assert (charge["payment_id"], charge["trip_id"], charge["status"]) == (paid["payment_id"], 101, "SUCCESS")
    assert refund["payment_id"] == paid["payment_id"] and refund["refund_id"]
    text = log_stream.getvalue()
    assert "idem-secret-123" not in text
    assert "private note" not in text
    assert '"rider_id": 4242' not in text
    # Not anywhere as a value or in a message (a bare "4242" search also matched random request ids).
    assert all(4242 not in line.values() and "4242" not in str(line["message"]) for line in lines)


@pytest.fixture
def text_stream(log_stream: io.StringIO) -> io.StringIO:
    """Readable (DEBUG) logging into a buffer; `log_stream` restores quiet logging afterwards."""
    stream = io.StringIO()
    configure_logging("INFO", json_lines=False, stream=stream)
    return stream


def test_readable_lines_end_with_every_extra_field_as_key_value(text_stream: io.StringIO) -> None:
    get_logger("payment_service.access").info(
        "request", extra={"method": "GET", "path": "/live", "status": 200, "duration_ms": 1.2, "client": None}
    )

    line = text_stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.endswith(
        "INFO    payment_service.access [-] request method=GET path=/live status=200 duration_ms=1.2 client=-"
    )


def test_readable_values_with_spaces_quotes_or_newlines_are_quoted_on_one_line(text_stream: io.StringIO) -> None:
    get_logger("payments.test").warning(
        "notification retry", extra={"error": 'HTTP 500 "oops"\nbody', "note": "", "retry_in": 1.5}
    )

    line = text_stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.endswith('notification retry error="HTTP 500 \\"oops\\"\\nbody" note="" retry_in=1.5')


def test_readable_extras_come_before_a_traceback(text_stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("payments.test").exception("gateway call failed", extra={"payment_id": 7})

    first, *rest = text_stream.getvalue().splitlines()
    assert first.endswith("gateway call failed payment_id=7")
    assert rest[0] == "Traceback (most recent call last):"


def test_readable_payment_events_keep_their_ids_but_not_keys(
    charge_client: FlaskClient, trips: FakeTripService, log_stream: io.StringIO
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_lines=False, stream=stream)  # the app factory reconfigured it
    trips.trip(101)
    body = {"idempotency_key": "idem-secret-123", "trip_id": 101, "method": "CARD", "rider_id": 4242}

    paid = charge_client.post("/v1/payments/charge", json=body).get_json()

    lines = stream.getvalue().splitlines()
    assert any(f"charge finished payment_id={paid['payment_id']} trip_id=101 status=SUCCESS" in line for line in lines)
    assert any(" request method=POST path=/v1/payments/charge status=" in line for line in lines)
    assert "idem-secret-123" not in stream.getvalue()


@pytest.mark.parametrize("path", ["/v1/payments/\x1b[31mRED\x1b[0m", "/v1/payments/a\x00b", "/x\x7fy\x9bz"])
def test_readable_logs_escape_control_characters_of_a_field(path: str) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_lines=False, stream=stream)
    logging.getLogger("payment_service.test").info("request", extra={"path": path})

    line = stream.getvalue()
    assert not any((ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) <= 0x9F for char in line), repr(line)
    assert "\\u00" in line


ROOT = Path(__file__).resolve().parents[2]


def formatter_of_the_app(make_app, **overrides) -> type:
    make_app(**overrides)
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == "payment-service"]
    return type(handler.formatter)


@pytest.mark.parametrize(
    ("overrides", "readable"),
    [({}, False), ({"LOG_FORMAT": "text"}, True), ({"LOG_FORMAT": "json", "DEBUG": True}, True)],
)
def test_log_format_chooses_json_or_readable_lines(make_app, log_stream, overrides: dict, readable: bool) -> None:
    try:
        formatter = formatter_of_the_app(make_app, LOG_LEVEL="WARNING", **overrides)
    finally:
        configure_logging("WARNING", json_lines=True)

    assert (formatter is ReadableFormatter) == readable


def test_the_development_server_logs_readable_text_unless_told_otherwise(tmp_path: Path) -> None:
    def first_line(**env: str) -> str:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=tmp_path,  # no .env there
            env={"PATH": os.environ["PATH"], "SERVICE_PORT": str(closed_port()), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            return server.stdout.readline()
        finally:
            server.kill()
            server.wait()

    assert not first_line().startswith("{")
    assert json.loads(first_line(LOG_FORMAT="json"))["logger"]
