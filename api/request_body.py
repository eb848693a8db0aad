"""Reading a JSON request body strictly: object only, exact decimals, no NaN, no duplicate keys."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

from flask import Request

from utils.errors import AppError, ValidationError

try:  # gunicorn raises its own ParseException (InvalidChunkSize, ChunkMissingTerminator, ...) mid-read
    from gunicorn.http.errors import ParseException as _ServerBodyError
except ImportError:  # another WSGI server: OSError covers the usual "connection cut short"
    _ServerBodyError = OSError  # type: ignore[assignment,misc]

# What the WSGI server raises when the body on the wire is not framed as its headers say.
BODY_FRAMING_ERRORS = (OSError, _ServerBodyError)


class UnsupportedMediaTypeError(AppError):
    """The body is not declared as JSON."""

    def __init__(self) -> None:
        """415 unsupported_media_type."""
        super().__init__("Send the body as application/json.", status_code=415, code="unsupported_media_type")


def _reject_constant(name: str) -> NoReturn:
    """json.loads hook: NaN and Infinity are not numbers in a payment API."""
    raise ValidationError(f"The body contains {name}, which is not a valid number.", field="body")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads hook: a field given twice is ambiguous, so it is refused rather than last-one-wins."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"Field '{key}' appears more than once.", field=key)
        result[key] = value
    return result


def read_json_object(request: Request, allow_empty: bool) -> dict[str, Any]:
    """Return the body as a dict; empty means {} when `allow_empty`, else 400.

    Floats are parsed as Decimal, so an amount of 150.5 arrives exactly as written.
    """
    try:
        raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    except BODY_FRAMING_ERRORS:
        # A bad chunk size, a missing chunk terminator or a body cut short: the client's fault.
        raise AppError("The request body could not be read as sent.", status_code=400, code="bad_request") from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationError("The request body must be a JSON object.", field="body")
    if not request.is_json:
        raise UnsupportedMediaTypeError()
    try:
        text = raw.decode("utf-8")
        body = json.loads(
            text, parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates
        )
    except (UnicodeDecodeError, ValueError):
        raise AppError("The request body is not valid JSON.", status_code=400, code="invalid_json") from None
    except RecursionError:
        raise AppError("The request body is nested too deeply.", status_code=400, code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.", field="body")
    field = _field_with_lone_surrogate(body)
    if field is not None:
        raise ValidationError(
            f"Field '{field}' contains an unpaired UTF-16 surrogate escape (such as \\ud800), which is not text.",
            field=field,
        )
    return body


def _has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a surrogate code point (a lone JSON escape such as u+D800): UTF-8 cannot carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _field_with_lone_surrogate(body: dict[str, Any]) -> str | None:
    """The top-level field whose name or value holds a lone surrogate, or None.

    JSON allows a lone surrogate escape and json.loads returns it, but it cannot be stored or sent
    on as UTF-8: it must be refused here, not fail later as a database encoding error (a 500).
    """
    for name, value in body.items():
        stack: list[Any] = [name, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str) and _has_lone_surrogate(item):
                return name if not _has_lone_surrogate(name) else "body"
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None
