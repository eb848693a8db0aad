"""Fixtures shared by the service tests: an app that delivers nothing by itself, and dispatchers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from flask import Flask

from config import Config
from database.pool import ConnectionPool
from services.notification_service import Dispatcher, HttpNotificationSender, Outbox
from tests.fakes import FakeNotificationService, FakeTripService


@pytest.fixture
def quiet_app(make_app: Callable[..., Flask], trips: FakeTripService, notifications: FakeNotificationService) -> Flask:
    """An app whose own dispatcher is off, so the tests drive delivery themselves."""
    return make_app(
        TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, GATEWAY_SUCCESS_RATE=1.0,
        NOTIFY_DISPATCHER_ENABLED=False, RATE_LIMIT_ENABLED=False,
    )  # fmt: skip


@pytest.fixture
def dispatcher_for(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[Callable[..., Dispatcher]]:
    """Factory: a dispatcher on its own pool with the given overrides (and sender clock); closed afterwards."""
    made: list[ConnectionPool] = []

    def build(notification_url: str, clock: Callable[[], float] = time.time, **overrides: object) -> Dispatcher:
        config = test_config.with_overrides({"NOTIFICATION_SERVICE_URL": notification_url, **overrides})
        pool = ConnectionPool(config.get_database_uri(), size=4, wait_timeout=5, connect_timeout=2)
        made.append(pool)
        return Dispatcher(pool, HttpNotificationSender(config, clock=clock), Outbox(), config)

    yield build
    for pool in made:
        pool.close()
