"""The shipped front door (deploy/k8s/front-door.conf.template), run with Debian's nginx in front of a real gunicorn.

The template is rendered the way the nginx image's entrypoint renders it in compose and in the pod,
so these tests run the very file both ship. gunicorn here has one worker of two threads: two slow
clients talking to it directly would hold it all (tests/deploy/test_slow_clients.py).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests

from tests.faults.test_bad_input_storm import API_KEY
from tests.helpers import FRONT_DOOR_TEMPLATE, NGINX, FrontDoor, closed_port, render_front_door, start_front_door

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK), reason=f"nginx is not installed ({NGINX}; .ci/run installs Debian's package)"
)

SLOW_CLIENTS = 40
HEADERS_TOO_LARGE = "request_header_fields_too_large"
PARTIAL_HEADERS = b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
ONE_BODY_BYTE = (
    b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
    b"Idempotency-Key: slow-client-0001\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)


@pytest.fixture
def front_door(serve_gunicorn: Callable[..., str]) -> Iterator[FrontDoor]:
    """nginx from the shipped template in front of gunicorn (one worker, two threads)."""
    upstream = serve_gunicorn(workers=1, threads=2, API_KEYS=f"slow:{API_KEY}")
    server = start_front_door(upstream)
    yield server
    server.stop()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(url: str, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes as one request; the answer's status, headers (lower-case names) and body."""
    data = b""
    with socket.create_connection(address(url), timeout=15) as sock:
        sock.sendall(payload)
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ", 2)[1]), headers, body


def test_the_template_uses_only_variables_compose_and_the_pod_set() -> None:
    rendered = render_front_door({"FRONT_DOOR_PORT": "8080", "FRONT_DOOR_UPSTREAM": "127.0.0.1:8082"})

    assert "${FRONT_DOOR_" in FRONT_DOOR_TEMPLATE.read_text()
    assert "$FRONT_DOOR_" not in rendered and "${FRONT_DOOR_" not in rendered
    assert "listen 8080;" in rendered and "server 127.0.0.1:8082;" in rendered
    assert "$proxy_add_x_forwarded_for" in rendered  # nginx's own variables are left alone


def test_requests_pass_through_with_the_callers_request_id(front_door: FrontDoor) -> None:
    answer = requests.get(f"{front_door.url}/live", headers={"X-Request-ID": "trip-42.attempt-1"}, timeout=10)

    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == "trip-42.attempt-1"


def test_slow_clients_held_open_through_the_front_door_do_not_keep_others_waiting(front_door: FrontDoor) -> None:
    with ExitStack() as stack:
        for index in range(SLOW_CLIENTS):
            sock = stack.enter_context(socket.create_connection(address(front_door.url), timeout=15))
            sock.sendall(PARTIAL_HEADERS if index % 2 else ONE_BODY_BYTE)

        def ordinary_request(_: int) -> tuple[int, float]:
            started = time.monotonic()
            status = requests.get(f"{front_door.url}/live", timeout=10).status_code
            return status, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(ordinary_request, range(40)))

    assert [status for status, _ in answers] == [200] * 40
    # Generous: directly against gunicorn, each would wait for the slow clients' deadline (5 s) or longer.
    assert max(waited for _, waited in answers) < 3


def test_a_stalled_request_never_reaches_gunicorn_and_is_closed(front_door: FrontDoor) -> None:
    with socket.create_connection(address(front_door.url), timeout=15) as sock:
        sock.sendall(ONE_BODY_BYTE)

        assert sock.recv(65536) == b""  # closed at client_body_timeout, with no answer

    assert '"status":"408"' in front_door.log_text()


def test_a_body_over_64_kib_gets_the_services_413(front_door: FrontDoor) -> None:
    answer = requests.post(
        f"{front_door.url}/v1/payments/charge",
        data=b"{" + b" " * (64 * 1024) + b"}",
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY, "X-Request-ID": "big-body-1"},
        timeout=10,
    )

    assert answer.status_code == 413
    assert answer.json() == {
        "error": "The request body is larger than 64 KiB.",
        "code": "payload_too_large",
        "status_code": 413,
    }
    assert answer.headers["X-Request-ID"] == "big-body-1"


def test_a_body_of_exactly_64_kib_reaches_the_service(front_door: FrontDoor) -> None:
    body = b'{"trip_id": 1' + b" " * (64 * 1024 - 14) + b"}"
    answer = requests.post(
        f"{front_door.url}/v1/payments/charge",
        data=body,
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        timeout=10,
    )

    assert len(body) == 64 * 1024
    assert answer.status_code != 413
    assert "code" in answer.json()  # the service's own answer (e.g. a missing Idempotency-Key)


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"THIS IS NOT HTTP\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/payments/charge HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/payments HTTP/2.0\r\nHost: a\r\n\r\n", 400, "bad_request"),
        (b"TRACE /v1/payments HTTP/1.1\r\nHost: a\r\n\r\n", 405, "method_not_allowed"),
        (b"GET /v1/payments?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long"),
        (b"GET /v1/payments HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, HEADERS_TOO_LARGE),
        (b"GET /_front_door/bad_request HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 404, "not_found"),
    ],
    ids=["garbage", "unknown transfer coding", "HTTP/2.0 line", "TRACE", "long URI", "big header", "internal page"],
)  # fmt: skip
def test_errors_the_front_door_answers_itself_are_json_4xx(
    front_door: FrontDoor, payload: bytes, status: int, code: str
) -> None:
    answered, headers, body = exchange(front_door.url, payload)

    assert (answered, json.loads(body)["code"], json.loads(body)["status_code"]) == (status, code, status)
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]


def test_gunicorn_unreachable_is_a_json_503() -> None:
    front_door = start_front_door(f"http://127.0.0.1:{closed_port()}")
    try:
        answer = requests.get(f"{front_door.url}/v1/payments", timeout=10)
    finally:
        front_door.stop()

    assert answer.status_code == 503
    assert answer.json()["code"] == "service_unavailable"
