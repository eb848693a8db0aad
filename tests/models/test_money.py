"""Money: ISO 4217 minor units, rounding to them, the largest amount and how receipts read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models.money import (
    CurrencyError,
    fits_currency,
    format_money,
    max_amount,
    minor_unit,
    minor_unit_exponent,
    to_minor_unit,
)


@pytest.mark.parametrize(("code", "exponent"), [("INR", 2), ("USD", 2), ("EUR", 2), ("JPY", 0), ("VND", 0), ("MGA", 2)])
def test_the_minor_unit_comes_from_iso_4217(code: str, exponent: int) -> None:
    assert minor_unit_exponent(code) == exponent
    assert minor_unit(code) == Decimal(1).scaleb(-exponent)


@pytest.mark.parametrize("code", ["ABC", "XXX", "XAU", "XDR", "BHD", "KWD", "jpy", ""])
def test_codes_without_a_storable_minor_unit_are_refused(code: str) -> None:
    with pytest.raises(CurrencyError):
        minor_unit_exponent(code)


@pytest.mark.parametrize(
    ("value", "code", "rounded"),
    [("2428.50", "JPY", "2429"), ("2428.49", "JPY", "2428"), ("0.49", "JPY", "0"), ("31.255", "INR", "31.26"),
     ("31.2549", "INR", "31.25"), ("99999999.5", "JPY", "100000000")],
)  # fmt: skip
def test_rounding_is_half_up_to_the_currency_s_smallest_unit(value: str, code: str, rounded: str) -> None:
    result = to_minor_unit(Decimal(value), code)

    assert str(result) == rounded


def test_an_amount_fits_a_currency_when_it_is_whole_units_of_it() -> None:
    assert fits_currency(Decimal("2429.00"), "JPY")
    assert not fits_currency(Decimal("2428.50"), "JPY")
    assert fits_currency(Decimal("0.01"), "INR")


def test_the_largest_amount_is_what_numeric_10_2_stores_in_the_currency_s_unit() -> None:
    assert (max_amount("INR"), max_amount("JPY")) == (Decimal("99999999.99"), Decimal("99999999"))


def test_receipts_read_amounts_in_the_currency_s_decimals() -> None:
    assert format_money(Decimal("2429.00"), "JPY") == "2,429"
    assert format_money(Decimal("1234.5"), "INR") == "1,234.50"
    assert format_money(0.0, "JPY") == "0"
    # A yen amount stored with decimals (before fares were rounded to the yen) is shown as stored.
    assert format_money(Decimal("2428.50"), "JPY") == "2,428.50"
