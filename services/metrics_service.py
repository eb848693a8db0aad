"""Payment aggregates for /metrics and /metrics/prometheus, read from trigger-maintained counters.

`payment_stats` (migration 0002) is kept exact by a trigger in the same transaction as every
payment write, so reading it costs the same at a thousand payments as at a million.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from database.pool import ConnectionPool, DatabaseUnavailableError
from models.money import to_minor_unit
from models.payment import PAYMENT_METHODS
from models.states import REVENUE, PaymentStatus
from utils.logger import get_logger

logger = get_logger(__name__)

# Payments whose money was collected (refunds are reported separately), as the reference counts revenue.

COUNT_OUTBOX = """
SELECT status, count(*) AS n FROM notification_outbox WHERE status IN ('PENDING', 'DEAD') GROUP BY status
"""
SELECT_STATS = """
SELECT status, method, sum(payment_count) AS payment_count, sum(amount_sum) AS amount_sum,
       sum(refunded_sum) AS refunded_sum
FROM payment_stats
GROUP BY status, method
"""


class MetricsService:
    """Computes the payment summary."""

    def __init__(self, pool: ConnectionPool, currency: str) -> None:
        """Keep the pool and CURRENCY (the average is rounded to its smallest unit, like every amount)."""
        self.pool = pool
        self.currency = currency

    def outbox_counts(self) -> dict[str, int]:
        """Notifications still waiting (PENDING) and given up on (DEAD); both served by partial indexes."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(COUNT_OUTBOX)
            counts = {row["status"]: int(row["n"]) for row in cur.fetchall()}
        return {"PENDING": counts.get("PENDING", 0), "DEAD": counts.get("DEAD", 0)}

    def summary(self) -> dict[str, Any]:
        """Counts by status and method, average and revenue over collected payments, total refunded."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(SELECT_STATS)
            rows = cur.fetchall()
        by_status = dict.fromkeys([status.value for status in PaymentStatus], 0)
        by_method = dict.fromkeys(PAYMENT_METHODS, 0)
        revenue, collected, refunded = Decimal(0), 0, Decimal(0)
        for row in rows:
            count = int(row["payment_count"])
            by_status[row["status"]] = by_status.get(row["status"], 0) + count
            by_method[row["method"]] = by_method.get(row["method"], 0) + count
            refunded += row["refunded_sum"]
            if row["status"] in REVENUE:
                revenue += row["amount_sum"]
                collected += count
        average = to_minor_unit(revenue / collected, self.currency) if collected else Decimal(0)
        return {
            "payments_by_status": by_status,
            "payments_by_method": by_method,
            "average_payment_amount": average,
            # Sums of stored amounts: exact already, with no more decimals than the amounts summed.
            "total_revenue": revenue,
            "total_refunded": refunded,
            "timestamp": datetime.now(UTC),
        }


class PaymentStatsCollector(Collector):
    """Exposes the reference's payment gauges, read from the database at scrape time."""

    def __init__(self, service: MetricsService) -> None:
        """Keep the service that reads the aggregates."""
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges; with the database down, yield only payment_stats_up 0 (the scrape still works)."""
        up = GaugeMetricFamily("payment_stats_up", "1 when the payment gauges could be read from the database.")
        try:
            summary = self.service.summary()
        except DatabaseUnavailableError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        # payment_total is a gauge (a payment changes status), named as the reference named it.
        by_status = GaugeMetricFamily("payment_total", "Payments by current status.", labels=["status"])
        for status, count in summary["payments_by_status"].items():
            by_status.add_metric([status], count)
        yield by_status
        by_method = GaugeMetricFamily("payment_method_total", "Payments by method.", labels=["method"])
        for method, count in summary["payments_by_method"].items():
            by_method.add_metric([method], count)
        yield by_method
        yield GaugeMetricFamily(
            "payment_average_amount", "Average amount of collected payments.",
            value=float(summary["average_payment_amount"]),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "payment_total_revenue", "Sum of collected payments (refunds not deducted).",
            value=float(summary["total_revenue"]),
        )  # fmt: skip
        yield GaugeMetricFamily("payment_total_refunded", "Sum of all refunds.", value=float(summary["total_refunded"]))
        outbox = self.service.outbox_counts()
        yield GaugeMetricFamily(
            "notification_outbox_backlog", "Notifications waiting to be delivered.", value=outbox["PENDING"]
        )
        yield GaugeMetricFamily(
            "notification_outbox_dead", "Notifications that ran out of attempts.", value=outbox["DEAD"]
        )


class _ProcessMetrics(Collector):
    """Forwards this process's own metrics (single-process mode only)."""

    def collect(self) -> Iterator[Metric]:
        """Yield what the default registry holds."""
        yield from REGISTRY.collect()


def build_registry(service: MetricsService) -> CollectorRegistry:
    """The registry /metrics/prometheus renders: every worker's counters plus the database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    registry.register(PaymentStatsCollector(service))
    return registry
