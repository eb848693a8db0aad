"""Fake neighbours that are real HTTP servers on loopback: a trip service and a notification service."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import wait_until


@dataclass
class FakeAnswer:
    """What the fake answers for one trip."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    delay: float = 0.0


@dataclass
class FakeTripService:
    """Serves GET /v1/trips/<id> from a table; unknown trips are 404. Counts the calls per trip."""

    url: str = ""
    answers: dict[int, FakeAnswer] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def trip(self, trip_id: int, status: str = "COMPLETED", distance_km: Any = 10.5, **extra: Any) -> None:
        """Answer 200 with a trip of this status and distance (None leaves the distance out)."""
        body = {"trip_id": trip_id, "status": status, **extra}
        if distance_km is not None:
            body["distance_km"] = distance_km
        self.answers[trip_id] = FakeAnswer(200, body)

    def answer(self, trip_id: int, status: int, body: Any = None, raw: bytes | None = None, delay: float = 0.0) -> None:
        """Answer anything at all for this trip."""
        self.answers[trip_id] = FakeAnswer(status, body, raw, delay)


@dataclass
class FakeNotificationService:
    """Records POST /v1/notifications bodies and their Idempotency-Key headers; can be made to fail.

    `raw` and `headers` keep each accepted request's exact body bytes and all its headers (for signatures).
    """

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_with: int | None = None
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `count` notifications have arrived; return them (fewer if the timeout passed)."""

        def arrived() -> bool:
            with self.lock:
                return len(self.received) >= count

        wait_until(arrived, timeout, interval=0.02)
        with self.lock:
            return list(self.received)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 refuses connections when 50 requests arrive at once.
    request_queue_size = 256
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler], port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    server = _Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def fake_trip_service() -> Iterator[FakeTripService]:
    """Run a FakeTripService for the duration of the block."""
    fake = FakeTripService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                _reply(self, 200, b'{"status":"UP"}')
                return
            prefix = "/v1/trips/"
            if not self.path.startswith(prefix) or not self.path[len(prefix) :].isdigit():
                _reply(self, 404, b'{"error":"not found"}')
                return
            trip_id = int(self.path[len(prefix) :])
            with fake.lock:
                fake.calls[trip_id] = fake.calls.get(trip_id, 0) + 1
            answer = fake.answers.get(trip_id, FakeAnswer(404, {"error": "trip not found"}))
            if answer.delay:
                time.sleep(answer.delay)  # a slow or hung trip service, as the test asked
            payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
            # The client may have given up already (the timeout tests).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _reply(self, answer.status, payload)

        def log_message(self, *args: object) -> None:
            pass

    server, fake.url = _serve(Handler)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_notification_service(
    port: int = 0, fake: FakeNotificationService | None = None
) -> Iterator[FakeNotificationService]:
    """Run a FakeNotificationService for the duration of the block.

    Passing the `port` and `fake` of an earlier run brings the same service back after an outage.
    """
    fake = fake or FakeNotificationService()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if fake.delay:
                time.sleep(fake.delay)
            if fake.fail_with is not None:
                _reply(self, fake.fail_with, b'{"error":"down"}')
                return
            with fake.lock:
                fake.received.append(json.loads(body))
                fake.keys.append(self.headers.get("Idempotency-Key", ""))
                fake.raw.append(body)
                fake.headers.append(dict(self.headers.items()))
            _reply(self, 202, b'{"accepted":true}')

        def do_GET(self) -> None:
            _reply(self, 200, b'{"status":"UP"}')

        def log_message(self, *args: object) -> None:
            pass

    server, fake.url = _serve(Handler, port)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeProfileService:
    """Serves GET /v1/riders/<id> and /v1/drivers/<id> from two tables; unknown ids are 404."""

    url: str = ""
    riders: dict[int, Any] = field(default_factory=dict)
    drivers: dict[int, Any] = field(default_factory=dict)
    delay: float = 0.0


@contextmanager
def fake_profile_service() -> Iterator[FakeProfileService]:
    """Run a FakeProfileService (riders and drivers on one port) for the duration of the block."""
    fake = FakeProfileService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            table = {"riders": fake.riders, "drivers": fake.drivers}.get(parts[1] if len(parts) == 3 else "")
            if fake.delay:
                time.sleep(fake.delay)
            if table is None or not parts[2].isdigit() or int(parts[2]) not in table:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    _reply(self, 404, b'{"error":"not found"}')
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _reply(self, 200, json.dumps(table[int(parts[2])]).encode())

        def log_message(self, *args: object) -> None:
            pass

    server, fake.url = _serve(Handler)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def serve_trips_forever(port: int) -> None:
    """Run a trip service for scripts/fuzz.sh (see `TripsForTheFuzzer`); Ctrl-C stops it."""
    with fake_trip_service() as fake:
        fake.answers = TripsForTheFuzzer()
        print(fake.url, flush=True)
        threading.Event().wait()


class EveryTripCompleted(dict):
    """An answers table in which any trip id is a completed trip of (id mod 40) km, after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def get(self, trip_id: int, default: object = None) -> FakeAnswer:  # type: ignore[override]
        body = {"trip_id": trip_id, "status": "COMPLETED", "distance_km": trip_id % 40}
        return FakeAnswer(200, body, delay=self.delay)


class TripsForTheFuzzer(EveryTripCompleted):
    """Completed trips, except that a trip id divisible by 3 is ACCEPTED at its first look.

    So a hold can be placed on such a trip (authorize looks first) and captured afterwards (the
    capture looks again and finds it COMPLETED), while any other trip can be charged at once:
    the fuzzer's links walk a trip's whole life. scripts/fuzz_hooks.py hands out fresh trips.
    """

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def get(self, trip_id: int, default: object = None) -> FakeAnswer:  # type: ignore[override]
        answer = super().get(trip_id, default)
        with self._lock:
            first = trip_id not in self._seen
            self._seen.add(trip_id)
        if first and trip_id % 3 == 0:
            answer = FakeAnswer(200, {**answer.body, "status": "ACCEPTED"}, delay=self.delay)
        return answer


if __name__ == "__main__":
    serve_trips_forever(0)
