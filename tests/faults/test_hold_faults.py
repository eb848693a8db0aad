"""Scenario 12: Stripe acts on captures and voids but their answers are lost, with clients retrying.

Settings changed from the defaults, as in scenarios 8-9 and for the same reasons: GATEWAY_TIMEOUT=2,
RECONCILE_INTERVAL=1 and RECONCILE_MIN_AGE=3 (so reconciliation finishes the actions within the
scenario; the min age still exceeds the gateway timeout).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.fakes import FakeTripService, TripsForTheFuzzer
from tests.faults.load import Verdict, keys_in_flight
from tests.faults.test_gateway_faults import STRIPE_SETTINGS
from tests.helpers import Gunicorn, query_rows, query_value, wait_until
from tests.stripe_server import GatewayProxy, LocalStripe, gateway_proxy, local_stripe

HOLDS = 40


@pytest.fixture
def stripe() -> Iterator[LocalStripe]:
    """A localstripe of the scenario's own."""
    with local_stripe() as server:
        yield server


@pytest.fixture
def proxy(stripe: LocalStripe) -> Iterator[GatewayProxy]:
    """The failing proxy in front of it."""
    with gateway_proxy(stripe.url) as failing:
        yield failing


def ask_until_final(url: str, body: dict[str, Any], deadline: float, seen: Counter[int]) -> dict[str, Any] | None:
    """POST with the same idempotency key until a final answer (as a client with backoff does); its body."""
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            response = requests.post(url, json=body, timeout=10)
            seen[response.status_code] += 1
            if response.status_code not in (409, 429, 503):
                return response.json()
        except requests.RequestException:
            seen[0] += 1
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    return None


def test_captures_and_voids_whose_answers_stripe_loses_end_captured_or_released_once(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    trips: FakeTripService,
    stripe: LocalStripe,
    proxy: GatewayProxy,
    report: Callable[[Verdict], None],
) -> None:
    server = fault_server(STRIPE_API_BASE=proxy.url, **STRIPE_SETTINGS)
    # Trips divisible by 3 are ACCEPTED at their first look (the hold) and COMPLETED after it (the capture).
    trips.answers = TripsForTheFuzzer()
    seen: Counter[int] = Counter()
    deadline = time.monotonic() + 120
    holds = []
    for n in range(HOLDS):
        body = {"idempotency_key": f"hold-{n}", "trip_id": 3 * (1000 + n), "method": "CARD",
                "payment_method": "pm_card_visa"}  # fmt: skip
        answer = ask_until_final(f"{server.url}/v1/payments/authorize", body, deadline, seen)
        assert answer is not None and answer["status"] == "AUTHORIZED", answer
        holds.append(answer["payment_id"])

    # Stripe captures and cancels, and every answer is lost on the way back.
    proxy.mode, proxy.only = "lose_answer", "/capture"
    answers: dict[int, dict[str, Any] | None] = {}

    def end(n: int, payment_id: int) -> None:
        action = "capture" if n % 2 else "void"
        url = f"{server.url}/v1/payments/{payment_id}/{action}"
        answers[payment_id] = ask_until_final(url, {"idempotency_key": f"end-{n}"}, deadline, seen)

    threads = [threading.Thread(target=end, args=(n, pid)) for n, pid in enumerate(holds)]
    for thread in threads[: HOLDS // 2]:
        thread.start()
    for thread in threads[: HOLDS // 2]:
        thread.join()
    proxy.only = "/cancel"
    for thread in threads[HOLDS // 2 :]:
        thread.start()
    for thread in threads[HOLDS // 2 :]:
        thread.join()
    proxy.mode = "pass"
    fault_ended = time.monotonic()
    settled = wait_until(
        lambda: query_value(fault_dsn, "SELECT count(*) FROM payments WHERE status = 'PENDING'") == 0, timeout=60
    )
    settled_after = time.monotonic() - fault_ended

    final = dict(query_rows(fault_dsn, "SELECT payment_id, status FROM payments"))
    expected = {pid: ("SUCCESS" if n % 2 else "VOIDED") for n, pid in enumerate(holds)}
    acknowledged = [pid for pid, answer in answers.items() if answer is not None and answer.get("status")]
    present = sum(1 for pid in holds if final.get(pid) == expected[pid])
    intents = {i.metadata["payment_id"]: i for i in stripe.payment_intents()}
    at_stripe = Counter(
        ("succeeded" if expected[pid] == "SUCCESS" else "canceled") == intents[str(pid)].status for pid in holds
    )
    calls = Counter(path.split("/")[3] for method, path in proxy.forwarded if path.endswith(("/capture", "/cancel")))
    sent_twice = sum(1 for count in calls.values() if count > 1)
    pending_answers = sum(1 for answer in answers.values() if answer and answer.get("status") == "PENDING")
    report(
        Verdict(
            "12. Stripe loses capture answers 1st half, void answers 2nd", sum(seen.values()), len(acknowledged),
            present, sent_twice, len(intents) - HOLDS, HOLDS - present, seen[503],
            sum(n for status, n in seen.items() if status >= 500 and status != 503), settled_after,
            f"{pending_answers} of {HOLDS} captures and voids answered 202 PENDING, settled by reconciliation"
            f" {settled_after:.1f} s after Stripe's answers came back; at Stripe {at_stripe[True]} PaymentIntents"
            f" captured or cancelled as asked, {sent_twice} sent the action twice",
        )
    )  # fmt: skip

    assert pending_answers > 0, "no capture or void met the fault"
    assert settled, server.log_text()[-2500:]
    assert present == HOLDS and at_stripe[True] == HOLDS
    assert sent_twice == 0 and len(intents) == HOLDS
    assert seen[500] == 0 and seen[502] == 0
    assert keys_in_flight(fault_dsn) == 0
