"""Money: the one definition of a cent, the largest storable amount, and rounding to the cent."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
# payments.amount is NUMERIC(10,2): eight digits before the point.
MAX_AMOUNT = Decimal("99999999.99")


def to_cents(value: Decimal) -> Decimal:
    """Round an exact amount half-up to the cent (done once, at the end of a calculation)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(value: Decimal | float) -> str:
    """An amount as people read it on a receipt: two decimals with thousands separators (1,234.50)."""
    return f"{Decimal(str(value)):,.2f}"
