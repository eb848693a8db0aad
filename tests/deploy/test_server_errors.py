"""Requests gunicorn refuses itself get the contract's JSON error body, from a real gunicorn over raw sockets."""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from api.server_errors import JsonErrorSyncWorker, JsonErrorThreadWorker, JsonErrorWorker, describe, pick
from tests.fakes import FakeTripService
from tests.faults.test_bad_input_storm import API_KEY, Storm
from tests.helpers import raw_request


@dataclass
class RawResponse:
    """A response read off the socket: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(url: str, payload: bytes, timeout: float = 15) -> RawResponse | None:
    """Send raw bytes as one request and read the whole answer (None if the server closed without one)."""
    host, port = url.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    if not data.startswith(b"HTTP/1."):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return RawResponse(int(status_line.split(" ", 2)[1]), headers, body)


LONG_LINE = raw_request(b"GET", b"/v1/payments?x=" + b"a" * 5000, [])
BIG_HEADER = raw_request(b"GET", b"/v1/payments", [(b"X-Junk", b"a" * 9000)])
MANY_HEADERS = raw_request(b"GET", b"/v1/payments", [(f"X-H{i}".encode(), b"v") for i in range(101)])
BAD_LINE = b"THIS IS NOT HTTP\r\nHost: payments\r\n\r\n"
BAD_LENGTH = raw_request(b"POST", b"/v1/payments/charge", [(b"Content-Length", b"abc")], b"{}")
ODD_CODING = raw_request(b"POST", b"/v1/payments/charge", [(b"Transfer-Encoding", b"gzip, br")], b"{}")

CASES = {
    "over-long request line": (LONG_LINE, 414, "uri_too_long"),
    "oversized header": (BIG_HEADER, 431, "request_header_fields_too_large"),
    "too many headers": (MANY_HEADERS, 431, "request_header_fields_too_large"),
    "malformed request line": (BAD_LINE, 400, "bad_request"),
    "invalid Content-Length": (BAD_LENGTH, 400, "bad_request"),
    "unknown transfer coding": (ODD_CODING, 400, "bad_request"),
}


@pytest.fixture(params=[4, 1], ids=["gthread", "sync"])
def server(request: pytest.FixtureRequest, serve_gunicorn: Callable[..., str]) -> str:
    """gunicorn with gunicorn.conf.py: several threads (gthread worker) or one (sync worker)."""
    return serve_gunicorn(workers=1, threads=request.param)


@pytest.mark.parametrize("case", list(CASES))
def test_requests_gunicorn_refuses_get_the_json_error_body(server: str, case: str) -> None:
    payload, status, code = CASES[case]

    response = exchange(server, payload)

    assert response is not None, "the server closed without an answer"
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.headers["connection"] == "close"
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"error", "code", "status_code"}
    assert (body["code"], body["status_code"]) == (code, status)
    assert body["error"].endswith(".") and "<" not in body["error"] and "%" not in body["error"]


def test_messages_say_what_is_wrong_in_plain_words(serve_gunicorn: Callable[..., str]) -> None:
    url = serve_gunicorn(workers=1, threads=2)

    assert "4094 bytes" in exchange(url, LONG_LINE).json()["error"]
    assert "8190 bytes" in exchange(url, BIG_HEADER).json()["error"]
    assert "at most 100" in exchange(url, MANY_HEADERS).json()["error"]
    assert exchange(url, BAD_LENGTH).json()["error"] == "The Content-Length header is invalid."


def test_the_callers_request_id_is_kept_when_the_headers_were_read(serve_gunicorn: Callable[..., str]) -> None:
    url = serve_gunicorn(workers=1, threads=2)
    sent = raw_request(b"POST", b"/v1/payments/charge", [(b"X-Request-ID", b"req-17.a"), (b"Content-Length", b"-1")])
    hostile = raw_request(b"POST", b"/v1/payments/charge", [(b"X-Request-ID", b"a b"), (b"Content-Length", b"-1")])

    assert exchange(url, sent).headers["x-request-id"] == "req-17.a"
    assert exchange(url, hostile).headers["x-request-id"] not in ("", "a b")


@pytest.mark.parametrize(
    ("method", "path", "status"), [(b"POST", b"/nowhere", 404), (b"PUT", b"/v1/payments/charge", 405)]
)
def test_a_malformed_body_the_application_did_not_read_gets_one_answer_not_two(
    serve_gunicorn: Callable[..., str], method: bytes, path: bytes, status: int
) -> None:
    # The application answers without reading the body; gunicorn then discards it to keep the
    # connection alive, finds it malformed, and used to write a second (400) answer after the first.
    url = serve_gunicorn(workers=1, threads=2)
    host, port = url.removeprefix("http://").split(":")
    payload = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n"
    data = b""
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(payload)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk

    assert data.startswith(b"HTTP/1.1 %d" % status), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, data


def test_the_service_still_answers_normally_after_refusals(serve_gunicorn: Callable[..., str]) -> None:
    url = serve_gunicorn(workers=1, threads=2)
    for payload, _, _ in CASES.values():
        exchange(url, payload)

    live = exchange(url, raw_request(b"GET", b"/live", []))

    assert live is not None and live.status == 200 and live.json() == {"alive": True}


def test_a_small_bad_input_storm_gets_only_json_4xx(serve_gunicorn: Callable[..., str], trips: FakeTripService) -> None:
    # The request kinds of tests/faults/test_bad_input_storm.py, a few hundred of them.
    url = serve_gunicorn(workers=1, threads=4, API_KEYS=f"storm:{API_KEY}", TRIP_SERVICE_URL=trips.url)
    storm = Storm()
    rng = random.Random(17)

    answers = [exchange(url, storm.make(random.Random(rng.random()))[1]) for _ in range(300)]

    answered = [a for a in answers if a is not None]
    assert len(answered) >= 297
    assert {a.status for a in answered} <= set(range(400, 500))
    assert {a.headers.get("content-type") for a in answered} == {"application/json"}
    assert {414, 431} <= {a.status for a in answered}


def test_every_parse_error_gunicorn_can_raise_is_a_4xx() -> None:
    parse_errors = [
        cls
        for cls in vars(http_errors).values()
        if isinstance(cls, type) and issubclass(cls, http_errors.ParseException)
        and not issubclass(cls, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName))
    ]  # fmt: skip
    assert len(parse_errors) > 15

    for cls in parse_errors:
        error = describe(cls.__new__(cls), SimpleNamespace(limit_request_line=4094))
        assert 400 <= error.status < 500, cls.__name__
        assert error.code and error.message.endswith("."), cls.__name__


def test_only_failures_of_the_server_itself_are_500() -> None:
    response_header = http_errors.InvalidResponseHeader("X-Bad\r\n")

    assert describe(response_header).status == 500
    assert describe(RuntimeError("boom")).code == "internal_error"


def test_the_worker_follows_the_thread_count() -> None:
    assert pick(1) is JsonErrorSyncWorker and issubclass(JsonErrorSyncWorker, SyncWorker)
    assert pick(4) is JsonErrorThreadWorker and issubclass(JsonErrorThreadWorker, ThreadWorker)
    for threads, wanted in ((1, JsonErrorSyncWorker), (3, JsonErrorThreadWorker)):
        cfg = GunicornConfig()
        cfg.set("threads", threads)

        worker = JsonErrorWorker(1, 0, [], None, 30, cfg, None)
        worker.tmp.close()

        assert type(worker) is wanted


def test_gunicorn_loads_the_configured_worker_class() -> None:
    cfg = GunicornConfig()
    cfg.set("worker_class", "api.server_errors.JsonErrorWorker")

    assert cfg.worker_class is JsonErrorWorker
