"""The service graph, built once per process from the configuration: who gets which collaborator.

`build_services` is the one place that chooses implementations (which trip client, which gateways)
and shares what must be shared (one pool, one idempotency store, one outbox). Routes reach the
result through `api.services.services()`; tests and tools through `Services` directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from config import Config
from database.pool import ConnectionPool
from services.clients.profiles import HttpProfileClient, ProfileClient
from services.clients.trips import HttpTripClient, TripClient
from services.gateways.registry import GatewayRegistry
from services.health_service import DependencyMonitor, HealthService
from services.housekeeping import Housekeeper
from services.idempotency_service import IdempotencyService
from services.metrics_service import MetricsService, build_registry
from services.notification_service import Dispatcher, HttpNotificationSender, NotificationAdmin, Outbox
from services.payment_queries import PaymentQueries
from services.payments.charge import ChargeService
from services.payments.holds import HoldService
from services.payments.reconcilers import reconcilers
from services.payments.reconciliation import Reconciler
from services.payments.refunds import RefundService
from services.receipt_service import ReceiptService


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the routes and background threads of one process use."""

    config: Config
    pool: ConnectionPool
    trips: TripClient
    # Every configured gateway by name, and the default one new payments use (GATEWAY).
    gateways: GatewayRegistry
    profiles: ProfileClient
    idempotency: IdempotencyService
    outbox: Outbox
    payments: PaymentQueries
    charges: ChargeService
    holds: HoldService
    refunds: RefundService
    reconciler: Reconciler
    housekeeper: Housekeeper
    receipts: ReceiptService
    notifications: NotificationAdmin
    dispatcher: Dispatcher
    health: HealthService
    metrics: MetricsService
    metrics_registry: CollectorRegistry


def build_services(config: Config) -> Services:
    """Build the graph; nothing connects or starts a thread here (see `start_background`)."""
    # The pool connects lazily, so the service starts (and /live answers) with the database down.
    pool = ConnectionPool(
        config.get_database_uri(),
        size=config.DB_POOL_SIZE,
        wait_timeout=config.DB_POOL_TIMEOUT,
        connect_timeout=config.DB_CONNECT_TIMEOUT,
        statement_timeout_ms=config.DB_STATEMENT_TIMEOUT_MS,
        prepare_statements=config.DB_PREPARED_STATEMENTS,
        session_options=config.DB_SESSION_OPTIONS,
    )
    trips = HttpTripClient(config)
    gateways = GatewayRegistry.build(config, pool)
    profiles = HttpProfileClient(config)
    # One idempotency store and one outbox, shared by every operation of the process.
    idempotency = IdempotencyService(pool, config.IDEMPOTENCY_KEY_TTL, config.IDEMPOTENCY_LOCK_TIMEOUT)
    outbox = Outbox()
    dependencies = DependencyMonitor(
        {"trip_service": config.TRIP_SERVICE_URL, "notification_service": config.NOTIFICATION_SERVICE_URL},
        timeout=config.HEALTH_CHECK_TIMEOUT,
        cache_seconds=config.HEALTH_CHECK_CACHE_SECONDS,
    )
    metrics = MetricsService(pool, config.CURRENCY)
    charges = ChargeService(pool, config, trips, gateways, outbox, idempotency)
    holds = HoldService(pool, config, trips, gateways, outbox, idempotency)
    return Services(
        config=config,
        pool=pool,
        trips=trips,
        gateways=gateways,
        profiles=profiles,
        idempotency=idempotency,
        outbox=outbox,
        payments=PaymentQueries(pool),
        charges=charges,
        holds=holds,
        refunds=RefundService(pool, idempotency, outbox, gateways),
        reconciler=Reconciler(pool, config, gateways, outbox, reconcilers(pool, outbox, charges, holds)),
        housekeeper=Housekeeper(pool, config),
        receipts=ReceiptService(pool, profiles, outbox),
        notifications=NotificationAdmin(pool),
        dispatcher=Dispatcher(pool, HttpNotificationSender(config), outbox, config),
        health=HealthService(pool, dependencies),
        metrics=metrics,
        metrics_registry=build_registry(metrics),
    )


def start_background(services: Services) -> None:
    """Start this process's background work (notification dispatcher, reconciliation, housekeeping), if configured."""
    if services.config.NOTIFY_DISPATCHER_ENABLED:
        # One delivery thread per process (per gunicorn worker); rows are claimed with SKIP LOCKED,
        # so any number of them can run side by side.
        services.dispatcher.start()
    # Likewise one reconciliation loop per process: each pass leases the rows it takes (SKIP LOCKED).
    services.reconciler.start()
    # And one housekeeping loop: its batches skip rows another process is deleting.
    services.housekeeper.start()


def close_services(services: Services) -> None:
    """Stop background threads and close connections."""
    services.dispatcher.stop()
    services.reconciler.stop()
    services.housekeeper.stop()
    services.idempotency.deferred.stop()
    services.pool.close()
    services.health.dependencies.close()
