"""Domain errors at the edge: the one table of which HTTP status answers which error.

Services raise `DomainError`s without knowing HTTP; this module decides the status (and any
header) of each, and turns them into the `AppError` every error response is rendered from.
"""

from __future__ import annotations

from database.pool import DatabaseUnavailableError, IdsExhaustedError
from services.clients.trips import TripNotFoundError, TripServiceBadResponseError, TripServiceUnavailableError
from services.gateways import AmountNotPayableError, GatewayNotConfiguredError
from services.idempotency_service import IdempotencyKeyInUseError, IdempotencyKeyReusedError
from services.payments.errors import (
    CaptureAmountNotPayableError,
    CaptureExceedsAuthorizationError,
    ChargeAmountNotPayableError,
    GatewayHoldActionFailedError,
    GatewayRefundFailedError,
    HoldAmountNotPayableError,
    HoldNotSupportedError,
    PaymentMethodRequiredError,
    PaymentNotCapturableError,
    PaymentNotRefundableError,
    PaymentNotVoidableError,
    RefundAmountNotPayableError,
    RefundExceedsRemainingError,
    TripAlreadyPaidError,
    TripNotCompletedError,
    TripNotHoldableError,
    TripPartyMismatchError,
)
from services.pricing import FareOutOfRangeError, InvalidFareError, NoCancellationFeeError
from services.receipt_service import ReceiptUnavailableError
from utils.errors import AppError, DomainError, PaymentNotFoundError

STATUS: dict[type[DomainError], int] = {
    PaymentNotFoundError: 404,
    # The request refers to a trip that cannot be charged (the contract's choice: 400, not 404/409).
    TripNotFoundError: 400,
    TripNotCompletedError: 400,
    TripPartyMismatchError: 400,
    InvalidFareError: 400,
    NoCancellationFeeError: 400,
    FareOutOfRangeError: 400,
    PaymentNotRefundableError: 400,
    RefundExceedsRemainingError: 400,
    PaymentMethodRequiredError: 400,
    # Refund, hold and capture amounts the gateway cannot carry in the currency.
    AmountNotPayableError: 400,
    RefundAmountNotPayableError: 400,
    ChargeAmountNotPayableError: 400,
    HoldAmountNotPayableError: 400,
    CaptureAmountNotPayableError: 400,
    HoldNotSupportedError: 400,
    TripNotHoldableError: 400,
    PaymentNotCapturableError: 400,
    PaymentNotVoidableError: 400,
    # The final fare does not fit the hold: a conflict with the payment's state, resolved by the client.
    CaptureExceedsAuthorizationError: 409,
    TripAlreadyPaidError: 409,
    IdempotencyKeyInUseError: 409,
    ReceiptUnavailableError: 409,
    IdempotencyKeyReusedError: 422,
    TripServiceBadResponseError: 502,
    # The gateway answered and said no; the refund is recorded as FAILED and nothing counts.
    GatewayRefundFailedError: 502,
    # The gateway refused a capture or void; the error says where the payment stands.
    GatewayHoldActionFailedError: 502,
    TripServiceUnavailableError: 503,
    DatabaseUnavailableError: 503,
    # The payment's gateway is not configured in this process (any more): an operator must configure it.
    GatewayNotConfiguredError: 503,
    # Not retryable by the client alone: an operator must make room in the id sequence (docs/operations.md).
    IdsExhaustedError: 503,
}


def status_of(error: DomainError) -> int:
    """The HTTP status of a domain error (its nearest class in the table; 500 for one missing)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def to_app_error(error: DomainError) -> AppError:
    """The HTTP error answering a domain error: same sentence, code and details, plus Retry-After when due."""
    answer = AppError(error.message, status_code=status_of(error), code=error.code, **error.details)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        answer.headers["Retry-After"] = str(retry_after)
    return answer
