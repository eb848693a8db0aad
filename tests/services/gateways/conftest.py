"""Fixtures for the Stripe gateway: one localstripe per test process, emptied before each test, behind a proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from services.gateways.registry import register_gateway, unregister_gateway
from tests.fakes import FakeNotificationService, FakeTripService
from tests.gateways_extra import memory
from tests.stripe_server import API_KEY, GatewayProxy, LocalStripe, gateway_proxy, local_stripe


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[LocalStripe]:
    """localstripe, started once per test process."""
    with local_stripe() as server:
        yield server


@pytest.fixture
def localstripe(stripe_server: LocalStripe) -> LocalStripe:
    """The test process's localstripe, holding nothing."""
    stripe_server.flush()
    return stripe_server


@pytest.fixture
def stripe_proxy(localstripe: LocalStripe) -> Iterator[GatewayProxy]:
    """A proxy in front of localstripe that a test can make fail."""
    with gateway_proxy(localstripe.url) as proxy:
        yield proxy


@pytest.fixture
def stripe_app_with(
    make_app: Callable[..., Flask],
    stripe_proxy: GatewayProxy,
    trips: FakeTripService,
    notifications: FakeNotificationService,
) -> Callable[..., Flask]:
    """Apps charging through Stripe (localstripe behind the proxy), reconciliation run by the tests; plus overrides."""

    def build(**overrides: Any) -> Flask:
        return make_app(
            **{
                "GATEWAY": "stripe",
                "STRIPE_API_KEY": API_KEY,
                "STRIPE_API_BASE": stripe_proxy.url,
                "GATEWAY_TIMEOUT": 1.0,
                "TRIP_SERVICE_URL": trips.url,
                "NOTIFICATION_SERVICE_URL": notifications.url,
                "NOTIFY_DISPATCHER_ENABLED": False,
                "RECONCILE_INTERVAL": 0,
                "RECONCILE_MIN_AGE": 0,
                "RATE_LIMIT_ENABLED": False,
                **overrides,
            }
        )

    return build


@pytest.fixture
def stripe_app(stripe_app_with: Callable[..., Flask]) -> Flask:
    """An app of `stripe_app_with` without overrides."""
    return stripe_app_with()


@pytest.fixture
def memory_gateway() -> Iterator[str]:
    """The tests' own third gateway (tests/gateways_extra/memory), registered for one test; its name."""
    register_gateway(memory.NAME, memory.KIND)
    yield memory.NAME
    unregister_gateway(memory.NAME)
