"""Money: each currency's smallest unit (ISO 4217), the largest storable amount, and rounding to that unit."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from iso4217 import Currency

CENT = Decimal("0.01")
# payments.amount is NUMERIC(10,2): eight digits before the point, two after.
MAX_AMOUNT = Decimal("99999999.99")
STORED_DECIMALS = 2


class CurrencyError(ValueError):
    """A code that is not an ISO 4217 currency this service can store amounts of."""


def minor_unit_exponent(currency: str) -> int:
    """The currency's decimals per ISO 4217 (INR 2, JPY 0), from the iso4217 package's copy of the table.

    Raises CurrencyError for a code ISO 4217 does not list, one it lists without a minor unit
    ('N.A.': XXX, XAU, XDR...) and one with more decimals than NUMERIC(10,2) stores (BHD, KWD: 3).
    """
    try:
        exponent = Currency(currency).exponent
    except ValueError:
        raise CurrencyError(f"{currency!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise CurrencyError(f"{currency} has no minor unit in ISO 4217 (it is not a currency payments are made in)")
    if exponent > STORED_DECIMALS:
        raise CurrencyError(
            f"{currency} has {exponent} decimals in ISO 4217; amounts are stored with at most {STORED_DECIMALS}"
        )
    return exponent


def decimals_of(currency: str) -> int:
    """The decimals amounts in `currency` have: its ISO 4217 exponent, else the two NUMERIC(10,2) stores.

    The fallback is for a code start-up would refuse, on a row stored before CURRENCY was checked.
    """
    try:
        return minor_unit_exponent(currency)
    except CurrencyError:
        return STORED_DECIMALS


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest unit as an amount: 0.01 for INR, 1 for JPY."""
    return Decimal(1).scaleb(-decimals_of(currency))


def to_minor_unit(value: Decimal, currency: str) -> Decimal:
    """Round an exact amount half-up to the currency's smallest unit (done once, at the end of a calculation)."""
    return value.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def fits_currency(value: Decimal, currency: str) -> bool:
    """Whether the amount is a whole number of the currency's smallest unit (10.50 is not, in JPY)."""
    scaled = value.scaleb(decimals_of(currency))
    return scaled == scaled.to_integral_value()


def max_amount(currency: str) -> Decimal:
    """The largest amount NUMERIC(10,2) stores that the currency can carry: 99999999.99 INR, 99999999 JPY."""
    return MAX_AMOUNT.quantize(minor_unit(currency), rounding=ROUND_DOWN)


def plain_amount(value: Decimal, currency: str) -> str:
    """An amount as a message quotes it, in the currency's decimals when it has no more (1519 JPY, 31.25 INR)."""
    return str(value.quantize(minor_unit(currency)) if fits_currency(value, currency) else value)


def format_money(value: Decimal | float, currency: str) -> str:
    """An amount as people read it on a receipt, in the currency's decimals: 1,234.50 INR, 2,429 JPY.

    An amount with more decimals than its currency has (a row stored before fares were rounded to the
    currency's unit) is shown with the decimals it was stored with, never as another amount.
    """
    amount = Decimal(str(value))
    decimals = decimals_of(currency) if fits_currency(amount, currency) else STORED_DECIMALS
    return f"{amount:,.{decimals}f}"
