"""PaymentService against the real database: recording a charge attempt atomically with its key."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg2
import pytest
from flask import Flask

from api.services import services
from services.charge import ChargeRequest, TripAlreadyPaidError, trip_parties
from services.clients.trips import Trip
from services.idempotency_service import Claim, IdempotencyKeyInUseError, fingerprint
from services.pricing import calculate_fare


def _setup(app: Flask, trip_id: int = 7) -> tuple[object, Claim, ChargeRequest, Trip]:
    service = services(app).charges
    request = ChargeRequest(idempotency_key=f"k-{uuid.uuid4()}", trip_id=trip_id, method="CARD")
    claim = service.idempotency.claim(
        "client", request.idempotency_key, fingerprint(request.fingerprint_fields()), "/v1/payments/charge"
    )
    trip = Trip(trip_id, "COMPLETED", Decimal("10"), Decimal("1.0"))
    return service, claim, request, trip


def test_an_attempt_is_written_with_its_recovery_point(charge_app: Flask, db: psycopg2.extensions.connection) -> None:
    service, claim, request, trip = _setup(charge_app)

    payment_id = service._record_attempt(
        claim, request, trip_parties(request, trip), calculate_fare(trip, service.config), hold=False
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
            claim, request, trip_parties(request, trip), calculate_fare(trip, service.config), hold=False
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
        first_claim, first, trip_parties(first, trip), calculate_fare(trip, service.config), hold=False
    ).payment_id
    _, claim, request, _ = _setup(charge_app)

    with pytest.raises(TripAlreadyPaidError) as raised:
        service._record_attempt(
            claim, request, trip_parties(request, trip), calculate_fare(trip, service.config), hold=False
        )

    assert raised.value.details["payment_id"] == paid
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT payment_id FROM idempotency_keys WHERE lock_token = %s", (claim.token,))
        assert cur.fetchone() == (None,)
