"""The gateway registry: which gateways a process has, the default for new payments, and the one table of names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.errors import status_of, to_app_error
from api.openapi import document, ecma_pattern
from config import SETTINGS, Config, ConfigError
from database.pool import ConnectionPool
from services.gateways import GatewayNotConfiguredError
from services.gateways.registry import (
    GATEWAYS,
    NAME_RE,
    GatewayRegistry,
    register_gateway,
    unregister_gateway,
)
from services.gateways.simulator.gateway import SimulatedGateway
from tests.gateways_extra import memory
from tests.helpers import closed_port

ROOT = Path(__file__).resolve().parents[3]
STRIPE = {"GATEWAY": "stripe", "STRIPE_API_KEY": "sk_test_x"}
PRODUCTION = {
    "APP_ENV": "production",
    "GATEWAY": "stripe",
    "STRIPE_API_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRETS": "whsec_a",
    "API_KEYS": "trips:k1",
    "NOTIFY_SIGNING_SECRET": "signing-secret",
}


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    """A pool nothing is asked of: building the gateways connects nowhere."""
    pool = ConnectionPool(
        f"postgresql://postgres@127.0.0.1:{closed_port()}/x", size=1, wait_timeout=1, connect_timeout=1
    )
    yield pool
    pool.close()


def registry(pool: ConnectionPool, env: dict[str, str], *, refuse_unsafe: bool = True) -> GatewayRegistry:
    return GatewayRegistry.build(Config.from_env(env, refuse_unsafe=refuse_unsafe), pool)


# --- which gateways a process has -------------------------------------------------------------------


def test_by_default_only_the_simulator_is_configured_and_it_is_the_default(pool: ConnectionPool) -> None:
    gateways = registry(pool, {})

    assert gateways.names() == ("simulator",)
    assert isinstance(gateways.default, SimulatedGateway)
    assert "simulator" in gateways and "stripe" not in gateways


def test_with_a_stripe_key_stripe_is_the_default_and_the_simulator_stays_for_its_payments(
    pool: ConnectionPool,
) -> None:
    gateways = registry(pool, STRIPE)

    assert gateways.names() == ("simulator", "stripe")
    assert gateways.default.name == "stripe"
    assert gateways.get("stripe") is gateways.default
    assert gateways.get("simulator").name == "simulator"


def test_production_has_no_simulator_unless_it_is_the_default(pool: ConnectionPool) -> None:
    assert registry(pool, PRODUCTION).names() == ("stripe",)
    # Production refuses GATEWAY=simulator at start; `check --deploy` still builds what it names.
    unsafe = registry(pool, {"APP_ENV": "production"}, refuse_unsafe=False)
    assert (unsafe.names(), unsafe.default.name) == (("simulator",), "simulator")


# --- a gateway that is not configured ---------------------------------------------------------------


def test_a_gateway_without_its_settings_is_503_gateway_not_configured_naming_it_and_its_setting(
    pool: ConnectionPool,
) -> None:
    with pytest.raises(GatewayNotConfiguredError) as missing:
        registry(pool, {}).get("stripe")

    answer = to_app_error(missing.value)
    assert (answer.status_code, answer.code, answer.details) == (503, "gateway_not_configured", {"gateway": "stripe"})
    assert "stripe" in answer.message and "STRIPE_API_KEY" in answer.message


def test_the_simulator_in_production_is_not_configured_and_the_answer_says_why(pool: ConnectionPool) -> None:
    with pytest.raises(GatewayNotConfiguredError, match=r"simulator gateway .*APP_ENV") as missing:
        registry(pool, PRODUCTION).get("simulator")

    assert status_of(missing.value) == 503


def test_a_gateway_no_longer_in_the_table_is_not_configured_and_the_answer_lists_the_known_ones(
    pool: ConnectionPool,
) -> None:
    with pytest.raises(GatewayNotConfiguredError, match=r"paypal gateway .*no gateway of that name.*simulator, stripe"):
        registry(pool, {}).get("paypal")


def test_a_gateway_held_under_another_name_than_its_own_is_refused(pool: ConnectionPool) -> None:
    simulator = registry(pool, {}).default

    with pytest.raises(ValueError, match="registered as 'stripe' calls itself 'simulator'"):
        GatewayRegistry({"stripe": simulator}, "stripe")


# --- the table, and adding to it --------------------------------------------------------------------


def test_a_registered_gateway_is_a_valid_gateway_and_built_with_the_others(
    memory_gateway: str, pool: ConnectionPool
) -> None:
    gateways = registry(pool, {"GATEWAY": memory_gateway})

    assert gateways.names() == ("simulator", memory_gateway)
    assert isinstance(gateways.default, memory.MemoryGateway)


def test_gateway_names_only_the_table_s_gateways_and_a_removed_one_is_refused_again() -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY must be one of simulator, stripe, got 'memory'"):
        Config.from_env({"GATEWAY": "memory"})

    register_gateway(memory.NAME, memory.KIND)
    try:
        assert Config.from_env({"GATEWAY": "MEMORY"}).GATEWAY == "memory"
        assert Config.from_env({}).with_overrides({"GATEWAY": "memory"}).GATEWAY == "memory"
    finally:
        unregister_gateway(memory.NAME)

    with pytest.raises(ConfigError, match="GATEWAY must be one of simulator, stripe, got"):
        Config.from_env({}).with_overrides({"GATEWAY": "memory"})


@pytest.mark.parametrize("name", ["Memory", "pay-pal", "2pay", "", "x" * 33])
def test_a_gateway_name_out_of_the_format_cannot_be_registered(name: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        register_gateway(name, memory.KIND)
    assert name not in GATEWAYS


def test_a_name_is_registered_once_and_built_in_gateways_cannot_be_removed(memory_gateway: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_gateway(memory_gateway, memory.KIND)
    with pytest.raises(ValueError, match="already registered"):
        register_gateway("stripe", memory.KIND)
    with pytest.raises(ValueError, match="built in"):
        unregister_gateway("simulator")
    assert list(GATEWAYS) == ["simulator", "stripe", memory_gateway]


def test_the_api_document_takes_any_name_the_registry_takes_and_lists_none() -> None:
    gateway = document()["components"]["schemas"]["Payment"]["properties"]["gateway"]

    assert "enum" not in gateway
    assert ecma_pattern(gateway["pattern"]).pattern == NAME_RE.pattern
    assert all(NAME_RE.match(name) for name in GATEWAYS)


def test_gateway_s_documentation_names_every_gateway_of_the_table() -> None:
    [spec] = [spec for spec in SETTINGS if spec.name == "GATEWAY"]

    assert all(f"`{name}` ({kind.about})" in spec.meaning for name, kind in GATEWAYS.items())


def test_reading_the_configuration_does_not_load_the_stripe_sdk() -> None:
    code = "import sys, config; config.Config.from_env({}); print('stripe' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert loaded.stdout.strip() == "False"
