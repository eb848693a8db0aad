"""Write rhfd_payments.csv: a deterministic, realistic seed data set (same bytes on every run).

Usage: python scripts/generate_seed_csv.py [output path]
"""

from __future__ import annotations

import csv
import random
import sys
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

# The reference's columns plus the refunded amount, which a PARTIALLY_REFUNDED row cannot do without.
HEADER = ["payment_id", "trip_id", "amount", "method", "status", "reference", "created_at", "amount_refunded"]
ROWS = 320
SEED = 915
BASE_FARE = Decimal("5.00")
RATE_PER_KM = Decimal("2.50")
CANCELLATION_FEE = Decimal("3.00")
SURGES = [(Decimal("1.0"), 70), (Decimal("1.2"), 20), (Decimal("1.5"), 10)]
METHODS = [("CARD", 35), ("UPI", 35), ("WALLET", 15), ("CASH", 15)]
# Outcomes of a first attempt; a FAILED attempt is usually retried and then succeeds.
STATUSES = [("SUCCESS", 78), ("FAILED", 8), ("PENDING", 4), ("REFUNDED", 5), ("PARTIALLY_REFUNDED", 5)]
START = datetime(2025, 10, 1, 6, 0, 0)


def _pick(rng: random.Random, weighted: list[tuple[object, int]]) -> object:
    """Choose one value by weight."""
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights=weights, k=1)[0]


def _fare(rng: random.Random) -> Decimal:
    """A trip fare as the service computes it, or now and then a cancellation fee."""
    if rng.random() < 0.05:
        return CANCELLATION_FEE
    distance = Decimal(rng.randint(8, 320)) / 10  # 0.8 to 32.0 km
    surge = _pick(rng, SURGES)
    return ((BASE_FARE + distance * RATE_PER_KM) * surge).quantize(Decimal("0.01"), ROUND_HALF_UP)


def _refunded(rng: random.Random, amount: Decimal, status: str) -> Decimal:
    """What was already refunded: all of it, a whole-cent share of 10-90 % of it, or nothing."""
    if status == "REFUNDED":
        return amount
    if status != "PARTIALLY_REFUNDED":
        return Decimal("0.00")
    cents = int(amount * 100)
    low, high = max(1, -(-cents // 10)), min(cents - 1, cents * 9 // 10)
    return Decimal(rng.randint(low, high)) / 100


def generate(rows: int = ROWS, seed: int = SEED) -> list[list[str]]:
    """Return the data rows (without header)."""
    rng = random.Random(seed)
    # Refunded parts come from a generator of their own, so every other column stays as it was before
    # the amount_refunded column existed.
    refund_rng = random.Random(f"{seed}-refunds")
    out: list[list[str]] = []
    moment = START
    trip_id = 5000
    while len(out) < rows:
        trip_id += rng.randint(1, 7)
        moment += timedelta(seconds=rng.randint(300, 7200))
        amount = _fare(rng)
        method = _pick(rng, METHODS)
        status = "SUCCESS" if method == "CASH" else _pick(rng, STATUSES)
        if method == "CASH" and rng.random() < 0.05:
            status = "REFUNDED"
        attempts = [status]
        if status == "FAILED" and rng.random() < 0.7:
            attempts.append("SUCCESS")  # the rider retried, typically with the same method
        for attempt in attempts:
            if len(out) == rows:
                break
            payment_id = len(out) + 1
            day = moment.strftime("%Y%m%d")
            reference = f"PAY-{day}-{rng.getrandbits(40):010X}"
            out.append(
                [
                    str(payment_id),
                    str(trip_id),
                    f"{amount}",
                    str(method),
                    attempt,
                    reference,
                    moment.strftime("%Y-%m-%d %H:%M:%S"),
                    f"{_refunded(refund_rng, amount, attempt)}",
                ]
            )
            moment += timedelta(seconds=rng.randint(20, 240))
    return out


def main(argv: list[str]) -> int:
    """Write the CSV to the given path (default: rhfd_payments.csv beside the repo root)."""
    target = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "rhfd_payments.csv"
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(generate())
    print(f"wrote {ROWS} rows to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
