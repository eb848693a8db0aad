"""The checks across settings: contradictions refused in every mode, and what production refuses.

Each returns sentences naming the settings involved and what to do; `Config.check_consistency`
raises them together as one ConfigError, and `manage.py check` prints them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from models.money import fits_currency, max_amount, minor_unit_exponent, to_minor_unit
from services.gateways.stripe.units import stripe_decimals

if TYPE_CHECKING:
    from config import Config

# Start-up refuses fare settings under which a trip this long, at the highest configured surge
# level, would price above the largest storable amount (longer trips get 400 fare_out_of_range).
ORDINARY_TRIP_KM = Decimal("1000")


def contradictions(config: Config) -> list[str]:
    """Combinations of settings that each look valid alone but cannot work together."""
    problems = fare_problems(config) + gateway_currency_problems(config)
    if config.GATEWAY == "stripe" and not config.STRIPE_API_KEY:
        problems.append("STRIPE_API_KEY is required when GATEWAY=stripe (a secret key such as sk_test_...)")
    if config.STRIPE_API_KEY and not config.STRIPE_API_KEY.startswith(("sk_", "rk_")):
        problems.append(
            "STRIPE_API_KEY must be a secret (sk_...) or restricted (rk_...) key; a publishable pk_ key cannot charge"
        )
    if config.GATEWAY == "simulator":
        for name in ("STRIPE_API_KEY", "STRIPE_API_BASE"):
            if getattr(config, name):
                problems.append(
                    f"{name} is set but GATEWAY is simulator (its default): no card would reach Stripe; set"
                    f" GATEWAY=stripe, or unset {name}"
                )
    if config.BASE_FARE == 0 and config.RATE_PER_KM == 0:
        problems.append("BASE_FARE and RATE_PER_KM are both 0: every trip would price at 0 and no charge could succeed")
    if config.RECONCILE_NO_RECORD_AFTER < config.RECONCILE_MIN_AGE:
        problems.append(
            f"RECONCILE_NO_RECORD_AFTER ({config.RECONCILE_NO_RECORD_AFTER:g}) must not be below RECONCILE_MIN_AGE"
            f" ({config.RECONCILE_MIN_AGE:g}): a payment cannot be unknown to the gateway before it is looked up"
        )
    # Only the background loop finds payments by itself; with it off (RECONCILE_INTERVAL=0),
    # reconciliation runs when an operator asks, on rows the operator chose to look at.
    if config.GATEWAY == "stripe" and config.RECONCILE_INTERVAL and config.RECONCILE_MIN_AGE <= config.GATEWAY_TIMEOUT:
        problems.append(
            f"RECONCILE_MIN_AGE ({config.RECONCILE_MIN_AGE:g}) must be above GATEWAY_TIMEOUT"
            f" ({config.GATEWAY_TIMEOUT:g}) with GATEWAY=stripe: the reconciliation loop would look up payments"
            " whose charge may still be waiting for Stripe's answer"
        )
    if config.NOTIFY_BACKOFF_BASE > config.NOTIFY_BACKOFF_MAX:
        problems.append(
            f"NOTIFY_BACKOFF_BASE ({config.NOTIFY_BACKOFF_BASE:g}) must not be above NOTIFY_BACKOFF_MAX"
            f" ({config.NOTIFY_BACKOFF_MAX:g}), the cap of every retry delay"
        )
    return problems


def production_findings(config: Config) -> list[str]:
    """Settings that are fine for trying the service but unsafe with real riders and real money."""
    findings = []
    if config.GATEWAY == "simulator":
        findings.append(
            "GATEWAY is simulator (also its default): it moves no money and declines a share of card charges"
            " at random; set GATEWAY=stripe"
        )
    if config.TRIP_SERVICE_MOCK:
        findings.append(
            "TRIP_SERVICE_MOCK=true prices a made-up 10.5 km trip whenever the trip service cannot answer;"
            " set it to false"
        )
    if config.DEBUG:
        findings.append("DEBUG=true is for development (readable logs, not JSON); set it to false")
    if not config.API_KEYS:
        findings.append("API_KEYS is not set: every /v1 route would be open to anyone; give each client its key")
    if not config.NOTIFY_SIGNING_SECRET:
        findings.append(
            "NOTIFY_SIGNING_SECRET is not set: notifications would go out unsigned, so receivers cannot tell"
            " them from forgeries"
        )
    if (
        config.GATEWAY == "stripe"
        and config.STRIPE_API_KEY
        and config.STRIPE_API_KEY.startswith(("sk_test_", "rk_test_"))
    ):
        findings.append(
            "STRIPE_API_KEY is a test-mode key (sk_test_/rk_test_): Stripe moves no real money with it; use the"
            " live key"
        )
    if config.GATEWAY == "stripe" and config.STRIPE_API_BASE:
        findings.append(
            f"STRIPE_API_BASE is set ({config.STRIPE_API_BASE}): payments would go to that server, not Stripe; unset it"
        )
    if config.GATEWAY == "stripe" and not config.STRIPE_WEBHOOK_SECRETS:
        findings.append(
            "STRIPE_WEBHOOK_SECRETS is not set with GATEWAY=stripe: Stripe's events (disputes, late"
            " outcomes) could not be verified; set the endpoint's whsec_ secret"
        )
    return findings


def deploy_findings(config: Config) -> list[str]:
    """Everything `manage.py check --deploy` reports: contradictions, unsafe settings, and the mode itself."""
    findings = contradictions(config) + production_findings(config)
    if config.APP_ENV != "production":
        findings.append(
            "APP_ENV is development (its default): the service would start with unsafe settings instead of"
            " refusing them; set APP_ENV=production"
        )
    return findings


def fare_problems(config: Config) -> list[str]:
    """Fare settings under which an ordinary trip could not be stored as a payment in CURRENCY."""
    currency, largest = config.CURRENCY, max_amount(config.CURRENCY)
    if not fits_currency(config.CANCELLATION_FEE, currency):
        # Charged as it is, so it must be an amount of the currency (a trip's fare is rounded instead).
        return [
            f"CANCELLATION_FEE ({config.CANCELLATION_FEE}) has more decimals than CURRENCY={currency} has"
            f" ({minor_unit_exponent(currency)} in ISO 4217): give a whole number of its smallest unit"
        ]
    level, surge = max(config.SURGE_MULTIPLIERS.items(), key=lambda item: item[1])
    fare = to_minor_unit((config.BASE_FARE + ORDINARY_TRIP_KM * config.RATE_PER_KM) * surge, currency)
    if fare > largest:
        return [
            f"BASE_FARE + {ORDINARY_TRIP_KM} km x RATE_PER_KM at the highest SURGE_MULTIPLIERS level"
            f" ({level} {surge}) is {fare} {currency}, above the largest payment amount {largest}:"
            " lower BASE_FARE or RATE_PER_KM"
        ]
    hold = to_minor_unit(
        (config.BASE_FARE + ORDINARY_TRIP_KM * config.RATE_PER_KM) * surge * config.HOLD_MULTIPLIER, currency
    )
    if hold > largest:
        return [
            f"The hold of a {ORDINARY_TRIP_KM} km trip at the highest SURGE_MULTIPLIERS level x HOLD_MULTIPLIER"
            f" ({config.HOLD_MULTIPLIER}) is {hold} {currency}, above the largest payment amount {largest}:"
            " lower HOLD_MULTIPLIER, BASE_FARE or RATE_PER_KM"
        ]
    return []


def gateway_currency_problems(config: Config) -> list[str]:
    """A CURRENCY whose smallest ISO 4217 unit the gateway cannot move (MGA cents at Stripe)."""
    if config.GATEWAY != "stripe":
        return []
    iso, stripe = minor_unit_exponent(config.CURRENCY), stripe_decimals(config.CURRENCY)
    if stripe < iso:
        # Fares are rounded to ISO's unit; Stripe's coarser one would refuse most of them at the gateway.
        return [
            f"CURRENCY={config.CURRENCY} cannot be used with GATEWAY=stripe: ISO 4217 gives {config.CURRENCY}"
            f" {iso} decimals but Stripe takes only {stripe}, so most fares could not be charged;"
            " use GATEWAY=simulator or another CURRENCY"
        ]
    return []
