"""Prometheus metrics the service records as it works (process-local, or shared under gunicorn).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py before workers start) makes
prometheus_client keep these values in files that /metrics/prometheus adds up across workers.
Labels are bounded sets (route templates, methods, statuses): never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method (OTHER for a non-standard one), route template (<unmatched> when no route"
    " matched) and status code.",
    ["method", "endpoint", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template (<unmatched> when no route matched).",
    ["method", "endpoint"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHARGES = Counter(
    "payment_charges_total",
    "Charges decided, by outcome (the payment's status: SUCCESS, FAILED, PENDING)"
    " and method (CARD, WALLET, UPI, CASH).",
    ["outcome", "method"],
)
HOLD_OPERATIONS = Counter(
    "payment_hold_operations_total",
    "Hold operations answered, by operation (authorize, capture, void) and the payment's resulting status"
    " (AUTHORIZED, SUCCESS, VOIDED, PENDING, FAILED).",
    ["operation", "status"],
)
REFUNDS = Counter("payment_refunds_total", "Refunds recorded, by payment method (CARD, WALLET, UPI, CASH).", ["method"])
REFUNDED_AMOUNT = Counter("payment_refunded_amount_total", "Money refunded, in the service currency.")
RECEIPTS = Counter("payment_receipts_generated_total", "Receipts generated (first request per payment).")
IDEMPOTENT_REPLAYS = Counter(
    "idempotent_replays_total",
    "Requests answered from a stored idempotent response, by operation (charge, refund, authorize, capture, void).",
    ["operation"],
)
RATE_LIMITED = Counter(
    "rate_limited_requests_total", "Requests refused with 429, by limit (charge, refund, default).", ["limit"]
)
RATE_LIMIT_STORE_ERRORS = Counter(
    "rate_limit_store_errors_total", "Rate-limit store failures (requests were let through)."
)
NOTIFICATIONS = Counter(
    "notifications_total",
    "Notification delivery attempts, by type (payment, refund, receipt) and result"
    " (delivered; retried: failed, tried again later; dead: failed its last attempt).",
    ["type", "result"],
)
NOTIFICATION_DISPATCHER_DB_OUTAGES = Counter(
    "notification_dispatcher_database_outages_total",
    "Database outages the notification dispatcher loop ran into (each counted once, when it begins).",
)
DEPENDENCY_REJECTIONS = Counter(
    "dependency_calls_rejected_total",
    "Calls to another service not made, by dependency (trip_service) and reason"
    " (circuit_open; bulkhead_full: too many already in flight).",
    ["dependency", "reason"],
)
RECONCILIATIONS = Counter(
    "payment_reconciliations_total",
    "Reconciliation decisions on PENDING payments and refunds, by result (succeeded, authorized: a pending hold"
    " placed; captured, voided: a capture or void finished; refused: the gateway refused it, the hold stands;"
    " expired: a hold older than HOLD_TTL released; failed, no_record: unknown"
    " to the gateway and settled FAILED; unknown: unknown to the gateway, made before it was, not old enough to"
    " fail yet; pending: still undecided; resent: sent again, the gateway never had it;"
    " unavailable: the gateway did not answer; skipped: taken by another gateway or settled by someone else;"
    " error: could not be decided, see the log).",
    ["result"],
)
