"""Errors: domain errors that services raise, and the HTTP error that every error response is built from.

Services and the database layer raise `DomainError`s: a stable code, a human sentence and details,
but no HTTP status. `api/errors.py` maps each of them to its status in one table. `AppError` is the
HTTP-level error of the `api` layer (validation, authentication, rate limits) and the shape every
error response takes.
"""

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


class DomainError(Exception):
    """A request the service cannot carry out, in the service's own terms; `code` is stable snake_case."""

    code = "domain_error"

    def __init__(self, message: str, **details: Any) -> None:
        """Keep the human sentence and the details an answer carries (ids, amounts, statuses)."""
        super().__init__(message)
        self.message = message
        self.details = details


class PaymentNotFoundError(DomainError):
    """No payment with that id (None: the path's text was not an id at all)."""

    code = "payment_not_found"

    def __init__(self, payment_id: int | None) -> None:
        """Name the id when there is one."""
        details = {} if payment_id is None else {"payment_id": payment_id}
        super().__init__("Payment not found.", **details)
