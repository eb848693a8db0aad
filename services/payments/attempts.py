"""A charge or authorization attempt in the database: recorded PENDING, then settled once.

The statements of the charge's hot path (`services.payments.charge`), which reconciliation settles
through as well (SETTLE_ATTEMPT), so an attempt ends the same way whoever decides it.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from database.prepared import Prepared
from models.states import PaymentStatus, charge_outcome, transaction_status
from services.gateways import GatewayResult
from services.payments.repository import ATTEMPT_KINDS, PAYMENT_COLUMNS, settle_params

# Serialises the decision "insert a live payment for this trip, or name the one that exists" per
# trip. The unique partial index remains what guarantees one live payment; the lock only makes sure
# a loser can always name the winner (without it, the winner may turn FAILED in between).
LOCK_TRIP = Prepared("SELECT pg_advisory_xact_lock(hashtextextended('payments.trip:' || %(trip_id)s, 0))")
# The attempt and its transaction, PENDING. ON CONFLICT names the one-live-payment-per-trip index.
_ATTEMPT = """
    INSERT INTO payments (trip_id, rider_id, driver_id, amount, currency, method, status, reference, fare, gateway,
                          gateway_payment_method, authorized_amount)
    SELECT %(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(currency)s, %(method)s, 'PENDING',
           %(reference)s, %(fare)s, %(gateway)s, %(payment_method)s, %(authorized_amount)s
"""
_OPERATION = """
), operation AS (
    INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway)
    SELECT payment_id, %(kind)s, 'PENDING', amount, currency, gateway FROM attempt
"""
_LIVE = """
    ON CONFLICT (trip_id) WHERE status NOT IN ('FAILED', 'VOIDED') DO NOTHING
    RETURNING """
INSERT_ATTEMPT = Prepared(
    "WITH attempt AS (" + _ATTEMPT + _LIVE + PAYMENT_COLUMNS + _OPERATION + ") SELECT * FROM attempt"
)
# The charge's hot path records its attempt in one statement, sent with LOCK_TRIP in one message
# (one round trip, one implicit transaction): the attempt is inserted only while the request still
# holds its key (the key row locked, as RECORD_RECOVERY_POINT's token check would), and the key's
# recovery point names it in the same statement. `claimed` = 0: the claim was taken over and nothing
# was written; a null payment_id: the trip has a live payment (settled by _record_attempt).
INSERT_ATTEMPT_FOR_CLAIM = Prepared(
    """
WITH claim AS (
    SELECT 1 FROM idempotency_keys
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
       FOR UPDATE
), attempt AS ("""
    + _ATTEMPT
    + "      FROM claim"
    + _LIVE
    + PAYMENT_COLUMNS
    + _OPERATION
    + """
), recovery_point AS (
    UPDATE idempotency_keys SET payment_id = attempt.payment_id
      FROM attempt
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
)
SELECT (SELECT count(*) FROM claim) AS claimed, attempt.*
  FROM (VALUES (1)) AS one (n) LEFT JOIN attempt ON true
"""
)
SELECT_LIVE_PAYMENT_FOR_TRIP = Prepared("""
SELECT payment_id FROM payments WHERE trip_id = %(trip_id)s AND status NOT IN ('FAILED', 'VOIDED')
""")
# The attempt's outcome with its transaction, for the charge and reconciliation alike; the row after
# it, or none when it was settled already (by someone else: theirs stands).
_SETTLE_TRANSACTION = """
), operation AS (
    UPDATE payment_transactions
       SET status = %(transaction_status)s, error_code = %(transaction_error)s,
           gateway_reference = coalesce(gateway_reference, %(gateway_reference)s), updated_at = now()
     WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND kind = ANY(%(kinds)s)
       AND EXISTS (SELECT FROM outcome)
"""
SETTLE_ATTEMPT = Prepared(
    """
WITH outcome AS (
    UPDATE payments
       SET status = %(status)s, error_code = %(error_code)s,
           gateway_reference = COALESCE(gateway_reference, %(gateway_reference)s), reconcile_after = NULL,
           updated_at = now()
     WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
    RETURNING """
    + PAYMENT_COLUMNS
    + _SETTLE_TRANSACTION
    + ") SELECT * FROM outcome"
)
# The hot path's outcome: SETTLE_ATTEMPT plus the key's stored answer and the notification, in one
# statement. The answer is built beforehand from the attempt's row, so the update applies only to that
# row as it was (still PENDING, the gateway reference the answer names, updated_at not before
# created_at); else nothing is written (`recorded` 0) and _record_outcome takes the general path.
SETTLE_ATTEMPT_AND_ANSWER = Prepared(
    """
WITH outcome AS (
    UPDATE payments
       SET status = %(status)s, error_code = %(error_code)s,
           gateway_reference = COALESCE(gateway_reference, %(gateway_reference)s), updated_at = %(updated_at)s
     WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
       AND created_at <= %(updated_at)s
       AND COALESCE(gateway_reference, %(gateway_reference)s) IS NOT DISTINCT FROM %(gateway_reference)s
    RETURNING payment_id"""
    + _SETTLE_TRANSACTION
    + """
), answer AS (
    UPDATE idempotency_keys
       SET response_status = %(response_status)s, response_body = %(body)s, completed_at = now(),
           lock_token = NULL, locked_at = NULL
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
       AND EXISTS (SELECT FROM outcome)
), notification AS (
    INSERT INTO notification_outbox (notification_id, event_type, payload)
    SELECT %(notification_id)s, %(event_type)s, %(payload)s
     WHERE EXISTS (SELECT FROM outcome)
    ON CONFLICT (notification_id) DO NOTHING
)
SELECT count(*) AS recorded FROM outcome
"""
)
# The gateway's id of the payment (and of its attempt), recorded before any money can move on it.
RECORD_GATEWAY_REFERENCE = Prepared("""
WITH attempt AS (
    UPDATE payments SET gateway_reference = %(gateway_reference)s, updated_at = now()
     WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
    RETURNING payment_id
), operation AS (
    UPDATE payment_transactions SET gateway_reference = %(gateway_reference)s, updated_at = now()
     WHERE payment_id IN (SELECT payment_id FROM attempt) AND status = 'PENDING' AND kind = ANY(%(kinds)s)
)
SELECT count(*) AS recorded FROM attempt
""")


def outcome_params(payment_id: int, result: GatewayResult, capture: bool) -> dict[str, Any]:
    """Parameters of SETTLE_ATTEMPT for a decided gateway answer (charge_outcome not PENDING)."""
    status = charge_outcome(result.status, capture)
    error_code = (result.error_code or "GATEWAY_ERROR") if status == PaymentStatus.FAILED else None
    return {
        "status": status.value,
        "error_code": error_code,
        **settle_params(payment_id, ATTEMPT_KINDS, transaction_status(status), error_code, result.reference),
    }


def new_reference(now: datetime) -> str:
    """A unique, unguessable payment reference such as PAY-20251103-9F2C41D07A3B5E16."""
    return f"PAY-{now:%Y%m%d}-{secrets.token_hex(8).upper()}"
