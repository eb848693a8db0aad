"""Scenario 6: a storm of 10,000 malformed requests, sent as raw bytes over TCP."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import requests

from tests.faults.load import Verdict
from tests.helpers import Gunicorn, query_value, raw_request, send_raw

REQUESTS = 10_000
API_KEY = "storm-secret-key-0123456789"
TABLES = ("payments", "payment_refunds", "payment_receipts", "idempotency_keys", "notification_outbox")


class Storm:
    """Makes malformed requests of many kinds; `make(rng)` returns (kind, raw bytes)."""

    def __init__(self) -> None:
        self.kinds: list[Callable[[random.Random], bytes]] = [
            self.random_body, self.truncated_json, self.huge_numbers, self.deep_nesting, self.invalid_utf8,
            self.oversized_header, self.many_headers, self.oversized_body, self.bad_framing, self.garbage,
            self.odd_routes, self.wrong_types, self.bad_auth,
        ]  # fmt: skip

    def make(self, rng: random.Random) -> tuple[str, bytes]:
        kind = rng.choice(self.kinds)
        return kind.__name__, kind(rng)

    @staticmethod
    def _auth(rng: random.Random) -> list[tuple[bytes, bytes]]:
        return [(b"X-API-Key", API_KEY.encode())] if rng.random() < 0.9 else []

    def _post_json(self, rng: random.Random, body: bytes, path: bytes = b"/v1/payments/charge") -> bytes:
        headers = [
            *self._auth(rng),
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(body)).encode()),
        ]
        return raw_request(b"POST", path, headers, body)

    def _path(self, rng: random.Random) -> bytes:
        return rng.choice([b"/v1/payments/charge", b"/v1/payments/1/refund", b"/v1/payments/2/refund"])

    def random_body(self, rng: random.Random) -> bytes:
        return self._post_json(rng, rng.randbytes(rng.randint(1, 2000)), self._path(rng))

    def truncated_json(self, rng: random.Random) -> bytes:
        body = json.dumps({"idempotency_key": f"k-{rng.random()}", "trip_id": 5, "method": "CARD", "amount": "12.50"})
        return self._post_json(rng, body[: rng.randint(1, len(body) - 1)].encode(), self._path(rng))

    def huge_numbers(self, rng: random.Random) -> bytes:
        number = rng.choice([
            "9" * rng.randint(20, 5000), "1e999999", "-1e999999", "1" + "0" * 400 + ".5", "1e-999999", "-0",
            "0.0000000000000000000000001", "123456789012345678901234567890.123", "1E+308", "-9" * 30,
        ])  # fmt: skip
        field = rng.choice(["trip_id", "amount", "rider_id", "driver_id"])
        body = f'{{"idempotency_key": "k-{rng.random()}", "trip_id": 5, "method": "CARD", "{field}": {number}}}'
        return self._post_json(rng, body.encode(), self._path(rng))

    def deep_nesting(self, rng: random.Random) -> bytes:
        depth = rng.choice([1000, 10_000, 30_000])
        body = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
        return self._post_json(rng, body.encode(), self._path(rng))

    def invalid_utf8(self, rng: random.Random) -> bytes:
        bad = rng.randbytes(8).replace(b'"', b"\xff") + b"\xc3\x28\xff\xfe"
        choice = rng.randrange(4)
        if choice == 0:
            return self._post_json(rng, b'{"idempotency_key": "' + bad + b'", "trip_id": 1, "method": "CARD"}')
        if choice == 1:
            headers = [*self._auth(rng), (b"Idempotency-Key", bad.replace(b"\r", b"").replace(b"\n", b""))]
            body = b'{"trip_id": 1, "method": "CARD"}'
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
            return raw_request(b"POST", b"/v1/payments/charge", headers, body)
        if choice == 2:
            return raw_request(b"GET", b"/v1/payments/" + bad.replace(b" ", b"").replace(b"\r\n", b""), self._auth(rng))
        return raw_request(b"GET", b"/v1/payments?status=%ff%fe&method=%c3%28", self._auth(rng))

    def oversized_header(self, rng: random.Random) -> bytes:
        size = rng.choice([9000, 20_000, 100_000])
        return raw_request(b"GET", b"/v1/payments", [*self._auth(rng), (b"X-Junk", b"a" * size)])

    def many_headers(self, rng: random.Random) -> bytes:
        headers = [(f"X-H{i}".encode(), b"v") for i in range(rng.choice([101, 500]))]
        return raw_request(b"GET", b"/v1/payments", [*self._auth(rng), *headers])

    def oversized_body(self, rng: random.Random) -> bytes:
        body = b'{"trip_id": 1, "method": "CARD", "pad": "' + b"x" * rng.choice([70_000, 300_000]) + b'"}'
        return self._post_json(rng, body, self._path(rng))

    def bad_framing(self, rng: random.Random) -> bytes:
        body = b'{"trip_id": 1, "method": "CARD"}'
        auth = self._auth(rng)
        variants = [
            [(b"Content-Length", b"-1")], [(b"Content-Length", b"abc")], [(b"Content-Length", b"10, 20")],
            [(b"Content-Length", b"99999999999999999999999")],
            [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")],
            [(b"Transfer-Encoding", b"chunked")],
        ]  # fmt: skip
        headers = [*auth, (b"Content-Type", b"application/json"), *rng.choice(variants)]
        payload = body if b"chunked" not in headers[-1][1] else b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        return raw_request(b"POST", b"/v1/payments/charge", headers, payload)

    def garbage(self, rng: random.Random) -> bytes:
        return rng.randbytes(rng.randint(1, 3000)) + b"\r\n\r\n"

    def odd_routes(self, rng: random.Random) -> bytes:
        method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"BREW", b"G\x00T"])
        path = rng.choice([
            b"/v1/payments/99999999999999999999999999", b"/v1/payments/-1/receipt", b"/v1/payments/1e5",
            b"/v1/payments?limit=99999999999999999999", b"/v1/payments?offset=-5&limit=abc",
            b"/v1/payments?trip_id=1&trip_id=2", b"/v1/payments/%00", b"/v1/payments/../../etc/passwd",
            b"/" + b"a" * 5000, b"/v1/payments?status=" + b"%41" * 2000, b"*", b"v1/payments", b"",
        ])  # fmt: skip
        return raw_request(method, path, self._auth(rng))

    # Values each field must refuse (null is "not given" for the optional ones, so not listed there).
    WRONG_VALUES: ClassVar[dict[str, list[str]]] = {
        "trip_id": ["true", "[]", "{}", '"five"', "1.5", "-3", "0", "null", "1e3"],
        "method": ["true", "[]", "5", '""', '"BITCOIN"', '"CARD\\u0000"', "null"],
        "amount": ["true", "[]", "{}", '"abc"', "-3", "0", '"\\ud800"', '"NaN"'],
        "idempotency_key": ["true", "5", "[]", '""', '"\\ud800"', '"' + "k" * 300 + '"'],
        "rider_id": ["true", '"x"', "-3", "1.5", "[]"],
        "unknown_field": ["1", '"x"', "null"],
    }

    def wrong_types(self, rng: random.Random) -> bytes:
        field = rng.choice(sorted(self.WRONG_VALUES))
        value = rng.choice(self.WRONG_VALUES[field])
        base = {"idempotency_key": f"k-{rng.random()}", "trip_id": rng.randint(1, 10**9), "method": "CARD"}
        body = json.dumps({k: v for k, v in base.items() if k != field})[:-1] + f', "{field}": {value}}}'
        return self._post_json(rng, body.encode())

    def bad_auth(self, rng: random.Random) -> bytes:
        header = rng.choice([
            (b"Authorization", b"Bearer " + rng.randbytes(40).replace(b"\r", b"").replace(b"\n", b"")),
            (b"Authorization", b"Basic \xff\xfe"), (b"X-API-Key", b"x" * 5000), (b"X-API-Key", b""),
            (b"Authorization", b"Bearer"),
        ])  # fmt: skip
        return raw_request(b"POST", b"/v1/payments/charge", [header, (b"Content-Length", b"2")], b"{}")


def row_total(dsn: str) -> int:
    """Rows in all the data tables together."""
    return query_value(dsn, "SELECT " + " + ".join(f"(SELECT count(*) FROM {table})" for table in TABLES))


def test_a_storm_of_malformed_requests_gets_only_4xx_and_writes_nothing(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    report: Callable[[Verdict], None],
) -> None:
    server = fault_server(API_KEYS=f"storm:{API_KEY}")
    host, port = server.url.removeprefix("http://").split(":")
    storm = Storm()
    rng = random.Random(20261126)
    jobs = [storm.make(random.Random(rng.random())) for _ in range(REQUESTS)]
    results: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def fire(job: tuple[str, bytes]) -> None:
        status = send_raw(host, int(port), job[1])
        with lock:
            results[(job[0], status)] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fire, jobs))
    elapsed = time.monotonic() - started

    statuses = Counter()
    for (_, status), count in results.items():
        statuses[status] += count
    by_kind_5xx = {kind: count for (kind, status), count in results.items() if status >= 500}
    unanswered = {kind: count for (kind, status), count in results.items() if status == 0}
    rows = row_total(fault_dsn)
    healthy = requests.get(f"{server.url}/ready", timeout=5).status_code
    charge = requests.post(
        f"{server.url}/v1/payments/charge", json={"idempotency_key": "after-storm", "trip_id": 77, "method": "CASH"},
        headers={"X-API-Key": API_KEY}, timeout=5,
    )  # fmt: skip
    report(
        Verdict(
            "6. bad input storm", REQUESTS, 0, 0, 0, 0, 0, statuses[503], sum(statuses[s] for s in statuses if s >= 500)
            - statuses[503], None,
            f"{elapsed:.1f} s; statuses {dict(sorted(statuses.items()))} (0 = closed without an answer: "
            f"{unanswered}); rows written {rows}; /ready {healthy}, a valid charge afterwards {charge.status_code}",
        )
    )  # fmt: skip

    assert by_kind_5xx == {}
    assert all(400 <= status < 500 or status == 0 for status in statuses)
    assert statuses[0] <= REQUESTS * 0.01, f"too many requests went unanswered: {unanswered}"
    assert rows == 0
    assert healthy == 200
    assert charge.status_code == 201
