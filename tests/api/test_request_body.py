"""Reading request bodies: framing errors the WSGI server raises while the app reads the body."""

from __future__ import annotations

import socket
from collections.abc import Callable

import psycopg2
import pytest
from flask import Flask

from tests.helpers import raw_request, row_counts, send_raw

BODY = b'{"idempotency_key": "k-1", "trip_id": 1, "method": "CARD"}'


@pytest.mark.parametrize(
    "framing",
    [
        b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",  # a chunk size that is not hexadecimal
        b"5\r\n" + BODY + b"\r\n0\r\n\r\n",  # a chunk longer than announced: no terminator where expected
        b"ff\r\n" + BODY,  # cut short before the announced size
    ],
)
def test_a_badly_chunked_body_is_a_400_json_error_not_a_500(
    serve_gunicorn: Callable[..., str], db: psycopg2.extensions.connection, framing: bytes
) -> None:
    host, port = serve_gunicorn().removeprefix("http://").split(":")
    headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]

    status = send_raw(host, int(port), raw_request(b"POST", b"/v1/payments/charge", headers, framing))

    assert status == 400
    assert all(count == 0 for count in row_counts(db).values())


def _chunked(payload: bytes, size: int = 8192) -> bytes:
    """`payload` in chunks of `size`, with the terminating chunk."""
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


def test_a_chunked_body_longer_than_64_kib_is_refused_not_charged_by_its_first_64_kib(
    serve_gunicorn: Callable[..., str], db: psycopg2.extensions.connection
) -> None:
    # Found by the outside try: valid JSON padded to exactly 64 KiB, then more bytes, was charged.
    host, port = serve_gunicorn().removeprefix("http://").split(":")
    body = BODY + b" " * (65536 - len(BODY)) + b'"this is not json at all}}}'
    headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]

    status = send_raw(host, int(port), raw_request(b"POST", b"/v1/payments/charge", headers, _chunked(body)))

    assert status == 413
    assert all(count == 0 for count in row_counts(db).values())


def test_a_chunked_body_of_exactly_64_kib_is_read_whole(
    serve_gunicorn: Callable[..., str], db: psycopg2.extensions.connection
) -> None:
    host, port = serve_gunicorn().removeprefix("http://").split(":")
    body = b'{"trip_id": "x"' + b" " * (65536 - 16) + b"}"
    headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]

    status = send_raw(host, int(port), raw_request(b"POST", b"/v1/payments/charge", headers, _chunked(body)))

    assert len(body) == 65536
    assert status == 400  # read, parsed and refused for its content, not its size
    assert all(count == 0 for count in row_counts(db).values())


def test_a_413_says_connection_close_and_closes(serve_gunicorn: Callable[..., str]) -> None:
    # Found by the outside try: the 413 announced keep-alive, then the connection was dropped. With
    # the default 4 threads (the fixture's 8 leave no keep-alive slot, so every answer closes).
    host, port = serve_gunicorn(threads=4).removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        body = BODY + b" " * 70000
        head = (
            b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    head_lines = answer.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert head_lines[0].startswith(b"http/1.1 413")
    assert b"connection: close" in head_lines


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate, gzip"])
def test_a_body_in_a_content_coding_is_refused_not_read_as_plain_json(
    charge_app: Flask, db: psycopg2.extensions.connection, coding: str
) -> None:
    # Found by the outside try: a plain body labelled gzip was charged.
    response = charge_app.test_client().post(
        "/v1/payments/charge", data=BODY, content_type="application/json", headers={"Content-Encoding": coding}
    )

    assert (response.status_code, response.get_json()["code"]) == (415, "unsupported_media_type")
    assert response.get_json()["error"] == "Content-Encoding is not supported; send the body uncompressed."
    assert all(count == 0 for count in row_counts(db).values())
