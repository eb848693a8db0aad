"""The one application error type; every error response is built from it."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error with an HTTP status and a stable snake_case code, rendered as the contract's JSON."""

    def __init__(self, message: str, status_code: int = 400, code: str = "bad_request", **details: Any) -> None:
        """Keep the human sentence, status, code and any extra fields (e.g. `parameter`)."""
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.details = details
        self.headers: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body: error, code, status_code, then any details."""
        return {"error": self.message, "code": self.code, "status_code": self.status_code, **self.details}


class ValidationError(AppError):
    """Bad input: 400 naming the offending field or parameter."""

    def __init__(self, message: str, field: str, code: str = "validation_error") -> None:
        """Name the field both in the sentence and as `field`."""
        super().__init__(message, status_code=400, code=code, field=field)


class NotFoundError(AppError):
    """A resource that does not exist."""

    def __init__(self, message: str, code: str = "not_found", **details: Any) -> None:
        """404 with a specific code such as payment_not_found."""
        super().__init__(message, status_code=404, code=code, **details)


class PaymentNotFoundError(NotFoundError):
    """No payment with that id (also for ids that are not positive integers, given as None)."""

    def __init__(self, payment_id: int | None) -> None:
        """404 payment_not_found, naming the id when there is one."""
        details = {} if payment_id is None else {"payment_id": payment_id}
        super().__init__("Payment not found.", code="payment_not_found", **details)
