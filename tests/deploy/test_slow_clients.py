"""A slow client holds one of gunicorn's threads for at most the request read deadline, then is cut off.

Real gunicorn (gunicorn.conf.py, one worker of two threads) over raw sockets: each case opens as
many slow connections as there are threads, which before the deadline held every thread for as long
as the client liked and left everyone else waiting.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import requests

from tests.faults.test_bad_input_storm import API_KEY

THREADS = 2
DEADLINE = 2  # GUNICORN_REQUEST_READ_TIMEOUT for these servers, in seconds
# How long a test waits for the server to act on the deadline: generous, as it asserts behaviour, not speed.
PATIENCE = DEADLINE + 10

PARTIAL_HEADERS = b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
ONE_BODY_BYTE = (
    b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
    b"Idempotency-Key: slow-client-0001\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)
FULL_REQUEST = b"GET /live HTTP/1.1\r\nHost: payments\r\n\r\n"


@pytest.fixture
def server(serve_gunicorn: Callable[..., str]) -> str:
    """gunicorn with a 2 s read deadline, one worker, two threads."""
    return serve_gunicorn(
        workers=1, threads=THREADS, API_KEYS=f"slow:{API_KEY}", GUNICORN_REQUEST_READ_TIMEOUT=DEADLINE
    )


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def connections(url: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` open connections to the server, closed on exit."""
    with ExitStack() as stack:
        yield [stack.enter_context(socket.create_connection(address(url), timeout=PATIENCE)) for _ in range(count)]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises TimeoutError if it never does)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def answer_of(data: bytes) -> tuple[int, dict]:
    """Status and JSON body of the last response in `data`."""
    last = data[data.rindex(b"HTTP/1.1 ") :]
    head, _, body = last.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def others_are_served(url: str) -> bool:
    """True when an ordinary request gets its answer."""
    return requests.get(f"{url}/live", timeout=PATIENCE).status_code == 200


@pytest.mark.parametrize(
    "sent", [PARTIAL_HEADERS, ONE_BODY_BYTE], ids=["headers never finished", "one byte of a 100-byte body"]
)
def test_a_stalled_request_is_answered_408_after_the_deadline_and_others_are_served(server: str, sent: bytes) -> None:
    with connections(server, THREADS) as slow:
        for sock in slow:
            sock.sendall(sent)
        started = time.monotonic()
        answers = [read_until_closed(sock) for sock in slow]
        waited = time.monotonic() - started

        assert [answer_of(data)[0] for data in answers] == [408] * THREADS
        body = answer_of(answers[0])[1]
        assert (body["code"], body["status_code"]) == ("request_timeout", 408)
        assert f"within {DEADLINE} s" in body["error"]  # the configured deadline, not the default
        assert waited < PATIENCE
        assert others_are_served(server)


def server_acted(sock: socket.socket) -> bool:
    """True once the server has answered or closed the connection (checked without waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)  # an answer to read, or the end of the connection


def test_a_client_sending_one_byte_at_a_time_is_cut_off_at_the_deadline(server: str) -> None:
    dribble = PARTIAL_HEADERS + b"X-Padding: " + b"a" * 1000
    with connections(server, THREADS) as slow:
        started = time.monotonic()
        # Each byte arrives well within any per-read timeout; only a deadline for the whole request ends it.
        for byte in dribble:
            if all(server_acted(sock) for sock in slow) or time.monotonic() - started > PATIENCE:
                break
            for sock in slow:
                if not server_acted(sock):
                    sock.sendall(bytes([byte]))
            time.sleep(0.1)

        assert all(server_acted(sock) for sock in slow)
        assert others_are_served(server)


def test_a_keep_alive_connection_that_stalls_in_its_next_request_is_cut_off(server: str) -> None:
    with connections(server, THREADS) as slow:
        for sock in slow:
            sock.sendall(FULL_REQUEST)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.sendall(PARTIAL_HEADERS)

        assert [answer_of(read_until_closed(sock))[0] for sock in slow] == [408] * THREADS
        assert others_are_served(server)


def test_a_request_sent_in_time_is_not_cut_off(server: str) -> None:
    with connections(server, 1) as [sock]:
        sock.sendall(FULL_REQUEST[:10])
        time.sleep(DEADLINE / 2)
        sock.sendall(FULL_REQUEST[10:])

        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
