"""PaymentService against the real database: recording a charge attempt atomically with its key."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from services.clients.trips import Trip
from services.gateways import SUCCESS, GatewayResult
from services.idempotency_service import Claim, IdempotencyKeyInUseError, fingerprint
from services.payments.charge import parties_of
from services.payments.errors import TripAlreadyPaidError
from services.payments.requests import ChargeRequest
from services.pricing import calculate_fare


def _setup(app: Flask, trip_id: int = 7) -> tuple[object, Claim, ChargeRequest, Trip]:
    service = services(app).charges
    request = ChargeRequest(idempotency_key=f"k-{uuid.uuid4()}", trip_id=trip_id, method="CARD")
    claim = service.idempotency.claim(
        "client", request.idempotency_key, fingerprint(request.fingerprint_fields()), "/v1/payments/charge"
    )
    trip = Trip(trip_id, "COMPLETED", Decimal("10"), Decimal("1.0"))
    return service, claim, request, trip


def _attempt_args(service: Any, trip: Trip) -> tuple[Any, ...]:
    """The trip's parties, its fare, not a hold, on the default gateway: what a card charge records."""
    return parties_of(trip, None, None), calculate_fare(trip, service.config), False, service.gateways.default


def test_an_attempt_is_written_with_its_recovery_point(charge_app: Flask, db: psycopg2.extensions.connection) -> None:
    service, claim, request, trip = _setup(charge_app)

    payment_id = service._record_attempt(
        claim,
        request,
        parties_of(trip, None, None),
        calculate_fare(trip, service.config),
        False,
        service.gateways.default,
    ).payment_id

    with db.cursor() as cur:
        cur.execute("SELECT status, gateway FROM payments WHERE payment_id = %s", (payment_id,))
        assert cur.fetchone() == ("PENDING", "simulator")
        cur.execute("SELECT payment_id FROM idempotency_keys WHERE lock_token = %s", (claim.token,))
        assert cur.fetchone() == (payment_id,)
    assert claim.payment_id == payment_id


def test_a_request_whose_claim_was_taken_over_writes_no_payment(
    charge_app: Flask, db: psycopg2.extensions.connection
) -> None:
    service, claim, request, trip = _setup(charge_app)
    with db.cursor() as cur:  # another request took the key over after the lock timeout
        cur.execute("UPDATE idempotency_keys SET lock_token = %s", (str(uuid.uuid4()),))

    with pytest.raises(IdempotencyKeyInUseError):
        service._record_attempt(
            claim,
            request,
            parties_of(trip, None, None),
            calculate_fare(trip, service.config),
            False,
            service.gateways.default,
        )

    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM idempotency_keys WHERE payment_id IS NOT NULL")
        assert cur.fetchone()[0] == 0


def test_a_second_attempt_for_a_paid_trip_names_the_live_payment_and_writes_nothing(
    charge_app: Flask, db: psycopg2.extensions.connection
) -> None:
    service, first_claim, first, trip = _setup(charge_app)
    paid = service._record_attempt(
        first_claim,
        first,
        parties_of(trip, None, None),
        calculate_fare(trip, service.config),
        False,
        service.gateways.default,
    ).payment_id
    _, claim, request, _ = _setup(charge_app)

    with pytest.raises(TripAlreadyPaidError) as raised:
        service._record_attempt(
            claim,
            request,
            parties_of(trip, None, None),
            calculate_fare(trip, service.config),
            False,
            service.gateways.default,
        )

    assert raised.value.details["payment_id"] == paid
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT payment_id FROM idempotency_keys WHERE lock_token = %s", (claim.token,))
        assert cur.fetchone() == (None,)


def test_the_stored_answer_of_a_charge_is_the_payment_as_recorded(
    charge_app: Flask, db: psycopg2.extensions.connection
) -> None:
    service, claim, request, trip = _setup(charge_app)
    attempt = service._record_attempt(
        claim,
        request,
        parties_of(trip, None, None),
        calculate_fare(trip, service.config),
        False,
        service.gateways.default,
    )

    outcome, payment = service._record_outcome(
        claim, attempt.payment_id, GatewayResult(SUCCESS, reference="sim_abc"), False, attempt
    )

    body = json.loads(outcome.body)
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, gateway_reference, updated_at FROM payments WHERE payment_id = %s", (attempt.payment_id,)
        )
        status, reference, updated_at = cur.fetchone()
        cur.execute("SELECT response_status, response_body FROM idempotency_keys WHERE scope = 'client'")
        assert cur.fetchone() == (201, outcome.body)
        cur.execute("SELECT payload->>'status' FROM notification_outbox")
        assert cur.fetchall() == [("SUCCESS",)]
    assert (status, reference, updated_at) == ("SUCCESS", "sim_abc", payment.updated_at)
    assert body["updated_at"] == updated_at.isoformat() and body["created_at"] == attempt.created_at.isoformat()


def test_an_outcome_for_a_payment_settled_meanwhile_answers_the_payment_as_it_is(
    charge_app: Flask, db: psycopg2.extensions.connection
) -> None:
    service, claim, request, trip = _setup(charge_app)
    attempt = service._record_attempt(
        claim,
        request,
        parties_of(trip, None, None),
        calculate_fare(trip, service.config),
        False,
        service.gateways.default,
    )
    with db.cursor() as cur:  # reconciliation settled it first
        cur.execute("UPDATE payments SET status = 'FAILED', error_code = 'CARD_DECLINED' WHERE payment_id = %s",
                    (attempt.payment_id,))  # fmt: skip

    outcome, payment = service._record_outcome(claim, attempt.payment_id, GatewayResult(SUCCESS), False, attempt)

    assert (outcome.status_code, payment.status, payment.error_code) == (202, "FAILED", "CARD_DECLINED")
    assert json.loads(outcome.body)["status"] == "FAILED"
    with db.cursor() as cur:
        cur.execute("SELECT status FROM payments WHERE payment_id = %s", (attempt.payment_id,))
        assert cur.fetchone() == ("FAILED",)
        cur.execute("SELECT response_status FROM idempotency_keys WHERE scope = 'client'")
        assert cur.fetchone() == (202,)
