"""Reading a JSON request body strictly: object only, exact decimals, no NaN, no duplicate keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from utils.errors import AppError, ValidationError

try:  # gunicorn raises its own ParseException (InvalidChunkSize, ChunkMissingTerminator, ...) mid-read
    from gunicorn.http.errors import ParseException as _ServerBodyError

    # ... and, with the worker of api/server_errors.py, RequestReadTimeoutError for a body that comes too slowly.
    from api.server_errors import RequestReadTimeoutError as _BodyTooSlow
except ImportError:  # another WSGI server: OSError covers the usual "connection cut short"
    _ServerBodyError = OSError  # type: ignore[assignment,misc]
    _BodyTooSlow = TimeoutError  # type: ignore[assignment,misc]

# What the WSGI server raises when the body on the wire is not framed as its headers say.
BODY_FRAMING_ERRORS = (OSError, _ServerBodyError)


class UnsupportedMediaTypeError(AppError):
    """The body is not declared as JSON, or comes in a content coding the service does not decode."""

    def __init__(self, message: str = "Send the body as application/json.") -> None:
        """415 unsupported_media_type."""
        super().__init__(message, status_code=415, code="unsupported_media_type")


# Longer integers than this are refused as too large before Python parses them: no field takes one
# (the largest id has 19 digits), and int() itself refuses more than 4300 digits with a ValueError.
MAX_INTEGER_DIGITS = 100


class _NotAccepted:
    """Stands, after parsing, for a JSON number the service refuses; the check after parsing names its field.

    The json.loads hooks see a number but not the key it belongs to, so they leave this mark instead.
    """

    def __init__(self, problem: str) -> None:
        """`problem`: the words after the field name, e.g. "must be a finite number; NaN is not a number"."""
        self.problem = problem


def _mark_constant(name: str) -> _NotAccepted:
    """json.loads hook: NaN and Infinity are not numbers in a payment API."""
    return _NotAccepted(f"must be a finite number; {name} is not a number")


def _integer(text: str) -> int | _NotAccepted:
    """json.loads hook: an integer, unless it has too many digits to be any field's value."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        return _NotAccepted(f"is too large a number ({digits} digits)")
    return int(text)


# Decimal places either way beyond which a number is no field's value: the smallest amount is 0.01
# and the largest id has 19 digits. Farther out (1e-1000028, say) the decimal arithmetic of
# validation underflows, and such a number could pass for a multiple of 0.01.
MAX_DECIMAL_EXPONENT = 100


def _decimal(text: str) -> Decimal | _NotAccepted:
    """json.loads hook: a number with a fraction or exponent, exactly, unless it is absurdly small or large."""
    value = Decimal(text)
    if value and not -MAX_DECIMAL_EXPONENT <= value.adjusted() <= MAX_DECIMAL_EXPONENT:
        return _NotAccepted(f"is too {'small' if value.adjusted() < 0 else 'large'} a number ({text})")
    return value


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads hook: a field given twice is ambiguous, so it is refused rather than last-one-wins."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"{key} is given more than once; send each field once.", field=key)
        result[key] = value
    return result


def _values(value: Any) -> Iterator[Any]:
    """`value` and everything nested in it (dict keys too)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_unusable_values(body: dict[str, Any]) -> None:
    """400 naming the top-level field that holds NaN, Infinity, a number with too many digits, or a lone surrogate.

    One walk over the body finds both; a number's problem is reported first, as it is the more common.
    """
    surrogate_field: str | None = None
    for name, value in body.items():
        for item in (name, *_values(value)):
            if isinstance(item, _NotAccepted):
                raise ValidationError(f"{name} {item.problem}.", field=name)
            if surrogate_field is None and isinstance(item, str) and _has_lone_surrogate(item):
                surrogate_field = name if not _has_lone_surrogate(name) else "body"
    if surrogate_field is not None:
        # JSON allows a lone surrogate escape and json.loads returns it, but it cannot be stored or
        # sent on as UTF-8: refused here, not a database encoding error (a 500) later.
        holder = "A field name" if surrogate_field == "body" else f"{surrogate_field} must be text; it"
        raise ValidationError(
            f"{holder} holds an unpaired UTF-16 surrogate escape, which is not a character.", field=surrogate_field
        )


def read_json_object(request: Request, allow_empty: bool) -> dict[str, Any]:
    """Return the body as a dict; empty means {} when `allow_empty`, else 400.

    Floats are parsed as Decimal, so an amount of 150.5 arrives exactly as written.
    """
    try:
        raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
        if _longer_than_read(request, raw):
            raise RequestEntityTooLarge()
    except _BodyTooSlow as exc:
        # The client stalled mid-body: gunicorn stopped waiting at its read deadline (the connection closes).
        within = f" within {exc.seconds:g} s" if isinstance(getattr(exc, "seconds", None), float) else ""
        message = f"The request was not received in time: send its headers and body{within}."
        raise AppError(message, status_code=408, code="request_timeout") from None
    except BODY_FRAMING_ERRORS:
        # A bad chunk size, a missing chunk terminator or a body cut short: the client's fault.
        raise AppError("The request body could not be read as sent.", status_code=400, code="bad_request") from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationError("The request body must be a JSON object.", field="body")
    if not request.is_json:
        raise UnsupportedMediaTypeError()
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding != "identity":
        # Never decoded, so never read as if it were plain JSON (RFC 9110: 415 for a coding not supported).
        raise UnsupportedMediaTypeError("Content-Encoding is not supported; send the body uncompressed.")
    try:
        text = raw.decode("utf-8")
        body = json.loads(
            text,
            parse_float=_decimal,
            parse_int=_integer,
            parse_constant=_mark_constant,
            object_pairs_hook=_reject_duplicates,
        )
    except (UnicodeDecodeError, ValueError):
        raise AppError("The request body is not valid JSON.", status_code=400, code="invalid_json") from None
    except RecursionError:
        raise AppError("The request body is nested too deeply.", status_code=400, code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.", field="body")
    _refuse_unusable_values(body)
    return body


def _longer_than_read(request: Request, raw: bytes) -> bool:
    """True when a body sent without Content-Length (chunked) goes on past MAX_CONTENT_LENGTH.

    Werkzeug stops reading such a body at the limit without complaint, so its first 64 KiB would be
    taken for the whole request; one more byte from the server's stream tells.
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None or len(raw) < limit:
        return False
    return bool(request.environ["wsgi.input"].read(1))


def _has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a surrogate code point (a lone JSON escape such as u+D800): UTF-8 cannot carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
