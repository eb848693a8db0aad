"""Error handlers: every failure leaves the service as the contract's JSON error body."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from api.errors import to_app_error
from utils.errors import AppError, DomainError
from utils.logger import get_logger

logger = get_logger(__name__)

# Stable codes for the HTTP errors Werkzeug raises on our behalf.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
HTTP_ERROR_MESSAGES = {
    404: "No such endpoint.",
    405: "This endpoint does not accept that HTTP method.",
    413: "The request body is larger than 64 KiB.",
    415: "Send the body as application/json.",
}


def _error_response(error: AppError) -> tuple[Response, int]:
    """Serialise an AppError with its headers."""
    response = jsonify(error.to_dict())
    response.headers.update(error.headers)
    return response, error.status_code


def handle_app_error(error: AppError) -> tuple[Response, int]:
    """Render an application error."""
    if error.status_code >= 500:
        logger.warning("request failed", extra={"code": error.code, "status": error.status_code})
    return _error_response(error)


def handle_domain_error(error: DomainError) -> tuple[Response, int]:
    """Render a service's domain error with the status api/errors.py gives it."""
    return handle_app_error(to_app_error(error))


def handle_http_exception(error: HTTPException) -> tuple[Response, int]:
    """Render a Werkzeug HTTP error (404, 405, 413, ...) in the contract's shape, keeping e.g. Allow."""
    status = error.code or 500
    code = HTTP_ERROR_CODES.get(status, "http_error")
    message = HTTP_ERROR_MESSAGES.get(status) or error.description or error.name
    app_error = AppError(message, status_code=status, code=code)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            app_error.headers[name] = value
    return _error_response(app_error)


def handle_unexpected_error(error: Exception) -> tuple[Response, int]:
    """Log the bug with its traceback and answer a generic 500 that leaks nothing."""
    logger.exception("unhandled error", extra={"error_type": type(error).__name__})
    return _error_response(AppError("Internal server error.", status_code=500, code="internal_error"))


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on the app."""
    app.register_error_handler(AppError, handle_app_error)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected_error)
