"""Clients that behave like real callers of the charge API, and a ledger of everything they saw.

Each client thread charges one new trip after another. For each it makes up an idempotency key and
keeps retrying that key, with capped exponential backoff, after a timeout, a dropped connection,
a 409 idempotency_key_in_use, a 429 or a 503, until it gets a final answer (201/202 = acknowledged,
any other status = rejected) or gives up at its deadline (stuck).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.helpers import query_rows, query_value

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Attempt:
    """One HTTP request: when it was sent and answered, and what came back (status 0 = no answer)."""

    started: float
    ended: float
    status: int
    code: str | None = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        """How long the caller waited."""
        return self.ended - self.started


@dataclass
class KeyResult:
    """What became of one idempotency key."""

    key: str
    trip_id: int
    status: int = 0  # the final status, 0 while unknown
    payment_id: int | None = None
    payment_status: str | None = None
    stuck: bool = False
    started_at: float = 0.0  # monotonic time of the first attempt
    answered_at: float | None = None  # monotonic time of the final answer


@dataclass
class Ledger:
    """Everything the clients sent and received, shared by all client threads."""

    attempts: list[Attempt] = field(default_factory=list)
    keys: list[KeyResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, attempt: Attempt) -> None:
        """Add one request."""
        with self.lock:
            self.attempts.append(attempt)

    @property
    def acknowledged(self) -> list[KeyResult]:
        """Keys whose charge was acknowledged with 201 or 202."""
        return [k for k in self.keys if k.status in (201, 202)]

    def statuses(self) -> Counter[int]:
        """How often each status came back (0 = timeout or dropped connection)."""
        return Counter(a.status for a in self.attempts)

    def server_errors(self, status: int | None = None) -> list[Attempt]:
        """5xx answers; only `status` if given, else all."""
        return [a for a in self.attempts if a.status >= 500 and (status is None or a.status == status)]

    def other_5xx(self) -> list[Attempt]:
        """5xx answers other than 503 (which a fault may legitimately cause)."""
        return [a for a in self.attempts if a.status >= 500 and a.status != 503]


class ChargeClients:
    """`count` client threads charging new trips through `base_url` until stopped."""

    def __init__(
        self,
        base_url: str,
        count: int = 8,
        first_trip: int = 1,
        request_timeout: float = 10.0,
        key_deadline: float = 60.0,
        extra: dict[str, Any] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> None:
        """Prepare the threads; `start()` runs them.

        `extra`: more body fields (e.g. a payment_method); `retry_statuses`: answers retried with the same
        key (behind a load balancer a careful client also retries its 502 and 504).
        """
        self.base_url = base_url
        self.extra = extra or {}
        self.retry_statuses = retry_statuses
        self.ledger = Ledger()
        self.request_timeout = request_timeout
        self.key_deadline = key_deadline
        self._trips = itertools.count(first_trip)
        self._trip_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> ChargeClients:
        """Start charging."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> Ledger:
        """Start no new charges; let every key in progress reach its final answer; return the ledger."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not finish"
        return self.ledger

    def _next_trip(self) -> int:
        with self._trip_lock:
            return next(self._trips)

    def _run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        while not self._stop.is_set():
            result = KeyResult(key=f"fault-{uuid.uuid4()}", trip_id=self._next_trip())
            with self.ledger.lock:
                self.ledger.keys.append(result)
            self.charge_until_final(session, result)

    def charge_until_final(self, session: requests.Session, result: KeyResult) -> None:
        """Retry one key like a careful client until it has a final answer or its deadline passes."""
        body = {"idempotency_key": result.key, "trip_id": result.trip_id, "method": "CARD", **self.extra}
        result.started_at = time.monotonic()
        deadline = result.started_at + self.key_deadline
        delay = 0.05
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = session.post(f"{self.base_url}/v1/payments/charge", json=body, timeout=self.request_timeout)
            except requests.RequestException as exc:
                self.ledger.record(Attempt(started, time.monotonic(), 0, error=type(exc).__name__))
                session.close()  # a dropped connection: start afresh
            else:
                payload = _json(response)
                code = payload.get("code") if isinstance(payload, dict) else None
                self.ledger.record(Attempt(started, time.monotonic(), response.status_code, code))
                retry = response.status_code in self.retry_statuses or code == "idempotency_key_in_use"
                if not retry:
                    result.answered_at = time.monotonic()
                    result.status = response.status_code
                    if response.status_code in (201, 202):
                        result.payment_id = payload["payment_id"]
                        result.payment_status = payload["status"]
                    return
            time.sleep(delay)  # the careful client's backoff before its retry
            delay = min(delay * 2, 0.5)
        result.stuck = True


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@dataclass
class Verdict:
    """One row of the fault report."""

    scenario: str
    sent: int
    acknowledged: int
    present: int
    duplicates: int
    orphans: int
    stuck: int
    status_503: int
    other_5xx: int
    recovery_seconds: float | None
    notes: str = ""


def check_against_database(dsn: str, ledger: Ledger, known: frozenset[int] = frozenset()) -> tuple[int, int, int]:
    """Return (acknowledged-and-present, duplicates, orphans) by reading the payments table.

    `known`: payment ids the test itself inserted (not counted as orphans).

    Present: the acknowledged payment exists for that trip with the acknowledged status.
    Duplicates: payments beyond the first for a trip (each key charges its own trip).
    Orphans: payments no client was told about (money taken without an acknowledgement).
    """
    rows = query_rows(dsn, "SELECT payment_id, trip_id, status FROM payments")
    by_id = {payment_id: (trip_id, status) for payment_id, trip_id, status in rows}
    per_trip = Counter(trip_id for _, trip_id, _ in rows)
    present = sum(1 for k in ledger.acknowledged if by_id.get(k.payment_id) == (k.trip_id, k.payment_status))
    duplicates = sum(count - 1 for count in per_trip.values() if count > 1)
    told = {k.payment_id for k in ledger.acknowledged}
    orphans = sum(1 for payment_id in by_id if payment_id not in told and payment_id not in known)
    return present, duplicates, orphans


def keys_in_flight(dsn: str) -> int:
    """Idempotency keys still claimed without a final response."""
    return query_value(dsn, "SELECT count(*) FROM idempotency_keys WHERE response_status IS NULL")


def last_answer_after(ledger: Ledger, moment: float) -> float | None:
    """Seconds from `moment` until the last key started before it had its final answer (None if one never did)."""
    waiting = [k for k in ledger.keys if k.started_at < moment and (k.answered_at is None or k.answered_at > moment)]
    if any(k.answered_at is None for k in waiting):
        return None
    return max((k.answered_at - moment for k in waiting if k.answered_at is not None), default=0.0)


def first_success_after(ledger: Ledger, moment: float) -> float | None:
    """Seconds from `moment` until the first 2xx answer to a request sent after it."""
    ends = [a.ended for a in ledger.attempts if a.started >= moment and 200 <= a.status < 300]
    return min(ends) - moment if ends else None
