"""Strict parsing of query parameters into typed values; every problem is a 400 naming the parameter."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from models.payment import PAYMENT_METHODS, PAYMENT_STATUSES
from services.payment_service import PaymentFilters
from utils.errors import ValidationError
from utils.helpers import MAX_BIGINT, parse_positive_id

LIST_PARAMETERS = ("trip_id", "rider_id", "driver_id", "status", "method", "limit", "offset")
MAX_LIMIT = 1000


def _single(args: MultiDict[str, str], name: str) -> str | None:
    """Return the one value of a parameter; repeating it is ambiguous and rejected."""
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"Query parameter '{name}' was given more than once.", field=name)
    return values[0]


def _id_param(args: MultiDict[str, str], name: str) -> int | None:
    """Parse an optional positive integer id."""
    raw = _single(args, name)
    if raw is None:
        return None
    value = parse_positive_id(raw)
    if value is None:
        raise ValidationError(f"Query parameter '{name}' must be a positive integer.", field=name)
    return value


def _enum_param(args: MultiDict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    """Parse an optional enum value, case-insensitively."""
    raw = _single(args, name)
    if raw is None:
        return None
    value = raw.strip().upper()
    if value not in allowed:
        raise ValidationError(f"Query parameter '{name}' must be one of {', '.join(allowed)}.", field=name)
    return value


def _int_param(args: MultiDict[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    """Parse an optional integer within [minimum, maximum]."""
    raw = _single(args, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not minimum <= int(raw) <= maximum:
        raise ValidationError(f"Query parameter '{name}' must be an integer from {minimum} to {maximum}.", field=name)
    return int(raw)


def parse_list_filters(args: MultiDict[str, str]) -> PaymentFilters:
    """Validate the query string of GET /v1/payments; unknown parameters are rejected, not ignored."""
    unknown = sorted(set(args) - set(LIST_PARAMETERS))
    if unknown:
        raise ValidationError(
            f"Unknown query parameter '{unknown[0]}'; allowed: {', '.join(LIST_PARAMETERS)}.", field=unknown[0]
        )
    return PaymentFilters(
        trip_id=_id_param(args, "trip_id"),
        rider_id=_id_param(args, "rider_id"),
        driver_id=_id_param(args, "driver_id"),
        status=_enum_param(args, "status", PAYMENT_STATUSES),
        method=_enum_param(args, "method", PAYMENT_METHODS),
        limit=_int_param(args, "limit", 100, 1, MAX_LIMIT),
        offset=_int_param(args, "offset", 0, 0, MAX_BIGINT),
    )
