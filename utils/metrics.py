"""Prometheus metrics the service records as it works (process-local, or shared under gunicorn).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py before workers start) makes
prometheus_client keep these values in files that /metrics/prometheus adds up across workers.
Labels are bounded sets (route templates, methods, statuses): never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered, by method, route template and status.",
    ["method", "endpoint", "status"],
)  # fmt: skip
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to answer an HTTP request, by method and route template.",
    ["method", "endpoint"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
CHARGES = Counter("payment_charges_total", "Charges decided, by outcome and method.", ["outcome", "method"])
REFUNDS = Counter("payment_refunds_total", "Refunds recorded.", ["method"])
REFUNDED_AMOUNT = Counter("payment_refunded_amount_total", "Money refunded, in the service currency.")
RECEIPTS = Counter("payment_receipts_generated_total", "Receipts generated (first request per payment).")
IDEMPOTENT_REPLAYS = Counter(
    "idempotent_replays_total", "Requests answered from a stored idempotent response.", ["operation"]
)
RATE_LIMITED = Counter("rate_limited_requests_total", "Requests refused with 429, by limit.", ["limit"])
RATE_LIMIT_STORE_ERRORS = Counter(
    "rate_limit_store_errors_total", "Rate-limit store failures (requests were let through)."
)
NOTIFICATIONS = Counter(
    "notifications_total", "Notification deliveries, by type and result (delivered, failed, dropped).",
    ["type", "result"],
)  # fmt: skip
DEPENDENCY_REJECTIONS = Counter(
    "dependency_calls_rejected_total",
    "Calls to another service not made: circuit open, or too many already in flight (bulkhead).",
    ["dependency", "reason"],
)
