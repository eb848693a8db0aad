"""Strict parsing of query parameters into typed values; every problem is a 400 naming the parameter."""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Any

from werkzeug.datastructures import MultiDict

from api.openapi import (
    document,
    ecma_pattern,
    expected,
    field_expectation,
    list_parameter,
    list_parameter_names,
    validate_request_body,
)
from models.money import CENT
from services.payment_queries import PageCursor, PaymentFilters
from services.payments.requests import CaptureRequest, ChargeRequest, RefundRequest, VoidRequest
from utils.errors import ValidationError
from utils.helpers import parse_positive_id


def _single(args: MultiDict[str, str], name: str) -> str | None:
    """Return the one value of a parameter; repeating it is ambiguous and rejected."""
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"Query parameter '{name}' was given more than once.", field=name)
    return values[0]


def _bad_number(name: str) -> ValidationError:
    """400 for a numeric query parameter: what it must be, in the words of its documented schema."""
    return ValidationError(
        f"Query parameter {name} must be {expected(list_parameter(name))}, in plain digits"
        " (no sign, spaces or decimal point).",
        field=name,
    )


def _digits(raw: str, maximum: int) -> int | None:
    """Plain ASCII digits as an integer (leading zeros ignored, any length), or None if not that or above `maximum`."""
    if not raw.isascii() or not raw.isdigit():
        return None
    significant = raw.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):  # too large, and kept away from int()'s digit limit
        return None
    value = int(significant)
    return value if value <= maximum else None


def _id_param(args: MultiDict[str, str], name: str) -> int | None:
    """Parse an optional positive integer id (the same rule as ids in paths)."""
    raw = _single(args, name)
    if raw is None:
        return None
    value = parse_positive_id(raw)
    if value is None:
        raise _bad_number(name)
    return value


def _enum_param(args: MultiDict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    """Parse an optional enum value, case-insensitively."""
    raw = _single(args, name)
    if raw is None:
        return None
    value = raw.strip().upper()
    if value not in allowed:
        raise ValidationError(
            f"Query parameter {name} must be {expected(list_parameter(name))}, in any case.", field=name
        )
    return value


def _int_param(args: MultiDict[str, str], name: str) -> int:
    """Parse an optional integer within its documented minimum and maximum (its default when absent)."""
    schema = list_parameter(name)
    raw = _single(args, name)
    if raw is None:
        return int(schema["default"])
    value = _digits(raw, int(schema["maximum"]))
    if value is None or value < int(schema["minimum"]):
        raise _bad_number(name)
    return value


def parse_list_filters(args: MultiDict[str, str]) -> PaymentFilters:
    """Validate the query string of GET /v1/payments; unknown parameters are rejected, not ignored."""
    allowed = list_parameter_names()
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValidationError(
            f"Unknown query parameter '{unknown[0]}'; allowed: {', '.join(allowed)}.", field=unknown[0]
        )
    # Bounds, defaults and allowed values are read from the OpenAPI document, so they cannot drift.
    filters = PaymentFilters(
        trip_id=_id_param(args, "trip_id"),
        rider_id=_id_param(args, "rider_id"),
        driver_id=_id_param(args, "driver_id"),
        status=_enum_param(args, "status", tuple(list_parameter("status")["enum"])),
        method=_enum_param(args, "method", tuple(list_parameter("method")["enum"])),
        limit=_int_param(args, "limit"),
        offset=_int_param(args, "offset"),
        after=_cursor_param(args),
    )
    if filters.after is not None and filters.offset:
        raise ValidationError("Use either 'cursor' or 'offset', not both.", field="cursor")
    if filters.after is not None and filters.after.scope != filters.scope():
        raise ValidationError(
            "Query parameter 'cursor' belongs to a list with other filters; send the same trip_id, rider_id,"
            " driver_id, status and method as the page that gave it.",
            field="cursor",
        )
    return filters


def _cursor_param(args: MultiDict[str, str]) -> PageCursor | None:
    """Parse the optional `cursor` (a previous page's `next_cursor`)."""
    raw = _single(args, "cursor")
    if raw is None:
        return None
    cursor = PageCursor.decode(raw)
    if cursor is None:
        raise ValidationError(
            "Query parameter 'cursor' must be a next_cursor value from an earlier page.", field="cursor"
        )
    return cursor


# --- request bodies -----------------------------------------------------------------------------
# Every rule of a body (types, bounds, patterns, lengths) is openapi.yaml's; the functions below
# run the document's schemas and then only turn the checked JSON values into typed ones.


@functools.cache
def _pattern(*path: str) -> re.Pattern[str]:
    """A `pattern` of the document, compiled once (path of keys under `components`)."""
    node: Any = document()["components"]
    for key in path:
        node = node[key]
    return ecma_pattern(node["pattern"])


def header_key_pattern() -> re.Pattern[str]:
    """The Idempotency-Key header's rule, as openapi.yaml states it."""
    return _pattern("parameters", "IdempotencyKeyHeader", "schema")


def idempotency_key(body: dict[str, Any], header: str | None) -> str | None:
    """The key from the body or the Idempotency-Key header (bare or IETF-quoted); both must agree."""
    from_body = body.get("idempotency_key")
    # An explicit null is not "absent": the document types the field as a string.
    if "idempotency_key" in body and (
        not isinstance(from_body, str) or not _pattern("schemas", "IdempotencyKey").match(from_body)
    ):
        raise ValidationError(
            field_expectation(document()["components"]["schemas"]["IdempotencyKey"], "idempotency_key"),
            field="idempotency_key",
        )
    from_header = None
    if header is not None:
        if not header_key_pattern().match(header):
            raise ValidationError(
                "Header 'Idempotency-Key' must carry one key (send the header once): 1-255 printable ASCII"
                " characters without spaces, commas or quotes, or the same in double quotes.",
                field="idempotency_key",
            )
        from_header = header[1:-1] if header.startswith('"') else header
    if from_body is not None and from_header is not None and from_body != from_header:
        raise ValidationError(
            "The idempotency_key field and the Idempotency-Key header differ; send one, or the same in both.",
            field="idempotency_key",
        )
    return from_body if from_body is not None else from_header


def _amount(value: int | Decimal | None) -> Decimal | None:
    """A checked JSON amount as an exact two-decimal Decimal."""
    return None if value is None else Decimal(value).quantize(CENT)


def parse_charge_request(
    body: dict[str, Any], key_header: str | None, operation: str = "chargePayment"
) -> ChargeRequest:
    """Validate a charge (or authorize) body against the document, then parse it; any problem is a 400."""
    key = idempotency_key(body, key_header)
    if key is None:
        raise ValidationError(
            "An idempotency key is required: the idempotency_key field or the Idempotency-Key header.",
            field="idempotency_key",
        )
    validate_request_body(operation, body)
    return ChargeRequest(
        idempotency_key=key,
        trip_id=body["trip_id"],
        method=body["method"].upper(),
        rider_id=body.get("rider_id"),
        driver_id=body.get("driver_id"),
        amount=_amount(body.get("amount")),
        payment_method=body.get("payment_method"),
    )


def parse_refund_request(body: dict[str, Any], key_header: str | None) -> RefundRequest:
    """Validate a refund body (every field optional) against the document, then parse it."""
    validate_request_body("refundPayment", body)
    return RefundRequest(
        amount=_amount(body.get("amount")),
        reason=body.get("reason"),
        idempotency_key=idempotency_key(body, key_header),
    )


def parse_authorize_request(body: dict[str, Any], key_header: str | None) -> ChargeRequest:
    """Validate an authorize body: the charge's fields and rules."""
    return parse_charge_request(body, key_header, "authorizePayment")


def parse_capture_request(body: dict[str, Any], key_header: str | None) -> CaptureRequest:
    """Validate a capture body (every field optional) against the document, then parse it."""
    validate_request_body("capturePayment", body)
    return CaptureRequest(amount=_amount(body.get("amount")), idempotency_key=idempotency_key(body, key_header))


def parse_void_request(body: dict[str, Any], key_header: str | None) -> VoidRequest:
    """Validate a void body (an optional idempotency key only) against the document, then parse it."""
    validate_request_body("voidPayment", body)
    return VoidRequest(idempotency_key=idempotency_key(body, key_header))
