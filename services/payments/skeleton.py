"""The skeleton every money operation runs: claim, record, call once outside a transaction, record the outcome.

1. `Keyed.run`: claim the idempotency key (or replay what it answered), run the operation, and give
   the key back if the operation ends without a final answer. A retry that finds the key's recovery
   point (an attempt recorded, the gateway maybe called) resumes from the record, never calls again.
2. The operation records its transaction PENDING, with the key's recovery point, in one transaction.
3. `call_gateway`: one call, outside any transaction; no answer (timeout, 5xx, any unexpected
   error) is a PENDING result for reconciliation, never an exception and never a refusal.
4. The outcome, its transaction's settlement, the answer stored under the key and the notification
   are written in one transaction (`answer`), so each exists exactly when the others do.

The gateway a payment's operations go to is the one that made it (`GatewayRegistry.get(payment.gateway)`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from database.pool import Cursor
from models.payment import Payment
from models.states import GatewayStatus
from services.gateways import GatewayCharge, GatewayRefund, GatewayResult, GatewayUnavailableError
from services.idempotency_service import (
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyService,
    Outcome,
    StoredResponse,
    fingerprint,
)
from utils.logger import get_logger
from utils.metrics import IDEMPOTENT_REPLAYS

logger = get_logger(__name__)

# What an operation on a claimed key runs: given the claim (None without a key), its final answer.
Body = Callable[[Claim | None], Outcome]


class Keyed:
    """Runs operations under their idempotency key: claim or replay, run, give back on the way out."""

    def __init__(self, idempotency: IdempotencyService) -> None:
        """Keep the store of keys."""
        self.idempotency = idempotency

    def run(
        self, operation: str, scope: str, key: str | None, fields: dict[str, Any], path: str, body: Body
    ) -> Outcome:
        """Run `body` under `key` (when given); replay the stored answer of a key that has one."""
        claim: Claim | None = None
        if key is not None:
            claimed = self.idempotency.claim(scope, key, fingerprint(fields), path)
            if isinstance(claimed, StoredResponse):
                IDEMPOTENT_REPLAYS.labels(operation).inc()
                return Outcome(claimed.status, claimed.body, replayed=True)
            claim = claimed
        try:
            return body(claim)
        except BaseException:
            # No final answer: give the key back (a retry resumes from the recovery point, if one was
            # recorded), unless the answer itself waits to be stored once the database is back.
            if claim is not None and not claim.finishing_later:
                self.idempotency.give_back(claim)
            raise

    def store(self, cur: Cursor, claim: Claim | None, stored: StoredResponse) -> Outcome:
        """Store the final answer under the key in the caller's transaction; the Outcome to send."""
        if claim is not None and not self.idempotency.complete(cur, claim, stored):
            # Taken over after the lock timeout: the taker answers from the record; undo ours.
            raise IdempotencyKeyInUseError()
        return Outcome(stored.status, stored.body)


def call_gateway(what: str, ids: dict[str, Any], call: Callable[[], GatewayResult]) -> GatewayResult:
    """Make one gateway call; no answer of any kind is an unanswered PENDING, never an exception."""
    try:
        return call()
    except GatewayUnavailableError as exc:
        logger.warning(f"gateway did not answer the {what}; left PENDING", extra={**ids, "error": str(exc)})
    except Exception:
        logger.exception(f"{what} call failed; left PENDING", extra=ids)
    return GatewayResult(GatewayStatus.PENDING, answered=False)


def gateway_charge(payment: Payment) -> GatewayCharge:
    """The gateway's view of a recorded payment; a hold's (`authorized_amount` set) is held, not captured."""
    return GatewayCharge(
        payment.payment_id,
        payment.trip_id,
        payment.amount,
        payment.currency,
        payment.method,
        payment.gateway_payment_method,
        payment.gateway_reference,
        capture=payment.authorized_amount is None,
    )


def gateway_refund(payment: Payment, refund_id: int, amount: Decimal, reference: str | None = None) -> GatewayRefund:
    """The gateway's view of one refund of a payment (the payment as taken: by its reference)."""
    charge = GatewayCharge(
        payment.payment_id, payment.trip_id, payment.amount, payment.currency, payment.method,
        reference=payment.gateway_reference,
    )  # fmt: skip
    return GatewayRefund(refund_id, charge, amount, reference)
