"""Reading request bodies: framing errors the WSGI server raises while the app reads the body."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import pytest

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
