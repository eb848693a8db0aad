"""Stripe's own unit of each currency (its rule, not ISO 4217's): what an API amount of 1 means there.

Kept apart from the SDK-using gateway so start-up can check a CURRENCY against it without loading Stripe.
"""

from __future__ import annotations

# Currencies Stripe counts in whole units, or in thousandths (https://docs.stripe.com/currencies).
# MGA is zero-decimal at Stripe though ISO 4217 gives it two decimals.
ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def stripe_decimals(currency: str) -> int:
    """The decimals Stripe's API amounts have in `currency`: 0 (JPY), 3 (KWD), else 2."""
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
