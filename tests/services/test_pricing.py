"""calculate_fare: exact decimals, half-up to the cent once, cancellation fee, client amount."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config import Config
from services.clients.trips import Trip
from services.pricing import calculate_fare

CONFIG = Config.from_env({})


def trip(status: str = "COMPLETED", distance: str | None = "10.5", surge: str = "1.0") -> Trip:
    return Trip(1, status, None if distance is None else Decimal(distance), Decimal(surge))


@pytest.mark.parametrize(
    ("distance", "surge", "expected"),
    [
        ("10.5", "1.0", "31.25"),
        ("3.333", "1.5", "20.00"),  # 19.99875 rounds up
        ("0.002", "1.0", "5.01"),  # 5.005: half-up gives 5.01 where half-even or floats give 5.00
        ("0", "1.0", "5.00"),
        ("12", "1.2", "42.00"),
        ("1.001", "1.0", "7.50"),  # 7.5025 -> 7.50
    ],
)
def test_completed_trip_fare_is_exact_and_rounded_half_up_once(distance: str, surge: str, expected: str) -> None:
    fare = calculate_fare(trip(distance=distance, surge=surge), CONFIG)

    assert fare.amount == Decimal(expected)
    assert str(fare.amount) == expected
    assert fare.type == "TRIP"


def test_surge_level_high_maps_through_the_configured_table() -> None:
    high = CONFIG.SURGE_MULTIPLIERS["HIGH"]

    assert calculate_fare(trip(distance="3.333", surge=str(high)), CONFIG).amount == Decimal("20.00")


def test_cancelled_trip_pays_the_cancellation_fee() -> None:
    fare = calculate_fare(trip(status="CANCELLED", distance=None), CONFIG)

    assert (fare.type, fare.amount) == ("CANCELLATION", Decimal("3.00"))


def test_client_amount_replaces_the_computed_fare() -> None:
    fare = calculate_fare(trip(), CONFIG, client_amount=Decimal("150.5"))

    assert (fare.type, str(fare.amount)) == ("CLIENT_AMOUNT", "150.50")


def test_breakdown_names_every_part() -> None:
    breakdown = calculate_fare(trip(), CONFIG).breakdown()

    assert breakdown == {
        "type": "TRIP",
        "base_fare": Decimal("5.00"),
        "distance_km": Decimal("10.5"),
        "rate_per_km": Decimal("2.50"),
        "surge_multiplier": Decimal("1.0"),
        "amount": Decimal("31.25"),
    }


def test_configured_rates_are_used() -> None:
    config = Config.from_env({"BASE_FARE": "10", "RATE_PER_KM": "1.25", "CANCELLATION_FEE": "4.5"})

    assert calculate_fare(trip(distance="2"), config).amount == Decimal("12.50")
    assert calculate_fare(trip(status="CANCELLED"), config).amount == Decimal("4.50")
