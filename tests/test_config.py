"""Configuration: defaults, typed parsing, fail-fast validation that names the variable."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from config import Config, ConfigError, load_environment

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_reference_design() -> None:
    config = Config.from_env({})

    assert config.SERVICE_PORT == 8082
    assert Decimal("5.00") == config.BASE_FARE
    assert Decimal("2.50") == config.RATE_PER_KM
    assert {"LOW": Decimal("1.0"), "MEDIUM": Decimal("1.2"), "HIGH": Decimal("1.5")} == config.SURGE_MULTIPLIERS
    assert Decimal("3.00") == config.CANCELLATION_FEE
    assert config.IDEMPOTENCY_KEY_TTL == 86400
    assert config.CURRENCY == "INR"
    assert config.RATE_LIMIT_CHARGE == "50 per minute"
    assert config.RATE_LIMIT_REFUND == "20 per minute"
    assert config.RATE_LIMIT_DEFAULT == "1000 per minute"
    assert config.RATE_LIMIT_ENABLED is True
    assert config.DEBUG is False


def test_no_password_has_a_default() -> None:
    assert Config.from_env({}).DB_PASS is None


def test_money_settings_are_exact_decimals() -> None:
    config = Config.from_env({"BASE_FARE": "0.10", "RATE_PER_KM": "2.2"})

    assert Decimal("0.10") == config.BASE_FARE
    assert isinstance(config.RATE_PER_KM, Decimal)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BASE_FARE", "abc"),
        ("BASE_FARE", "-1"),
        ("BASE_FARE", "1.005"),
        ("BASE_FARE", "NaN"),
        ("BASE_FARE", "Infinity"),
        ("RATE_PER_KM", "x"),
        ("CANCELLATION_FEE", "1e9"),
        ("DB_PORT", "-1"),
        ("DB_PORT", "70000"),
        ("DB_PORT", "five"),
        ("SERVICE_PORT", "0"),
        ("DB_POOL_SIZE", "0"),
        ("DB_POOL_TIMEOUT", "nan"),
        ("DB_CONNECT_TIMEOUT", "0"),
        ("IDEMPOTENCY_KEY_TTL", "10"),
        ("DEBUG", "maybe"),
        ("RATE_LIMIT_ENABLED", "2"),
        ("RATE_LIMIT_CHARGE", "lots"),
        ("RATE_LIMIT_DEFAULT", "50 per fortnight"),
        ("SURGE_MULTIPLIERS", "LOW=1"),
        ("SURGE_MULTIPLIERS", "LOW:0"),
        ("SURGE_MULTIPLIERS", "LOW:abc"),
        ("CURRENCY", "rupees"),
        ("LOG_LEVEL", "LOUD"),
        ("TRIP_SERVICE_URL", "trip-service:8081"),
        ("NOTIFICATION_SERVICE_URL", "ftp://x"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("HEALTH_CHECK_TIMEOUT", "5"),
    ],
)
def test_invalid_value_raises_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_values_are_parsed_into_their_types() -> None:
    config = Config.from_env(
        {
            "SERVICE_PORT": "9000",
            "DEBUG": "yes",
            "RATE_LIMIT_ENABLED": "off",
            "SURGE_MULTIPLIERS": "low:1.0, peak:2.25",
            "CURRENCY": "usd",
            "DB_POOL_TIMEOUT": "0.5",
            "TRIP_SERVICE_URL": "http://trips:8081/",
        }
    )

    assert config.SERVICE_PORT == 9000
    assert config.DEBUG is True
    assert config.RATE_LIMIT_ENABLED is False
    assert {"LOW": Decimal("1.0"), "PEAK": Decimal("2.25")} == config.SURGE_MULTIPLIERS
    assert config.CURRENCY == "USD"
    assert config.DB_POOL_TIMEOUT == 0.5
    assert config.TRIP_SERVICE_URL == "http://trips:8081"


def test_blank_values_count_as_unset() -> None:
    assert Config.from_env({"DB_PORT": "  ", "DB_PASS": ""}) == Config.from_env({})


def test_database_uri_from_parts_quotes_the_password() -> None:
    config = Config.from_env(
        {"DB_HOST": "db", "DB_PORT": "5433", "DB_NAME": "pay", "DB_USER": "svc", "DB_PASS": "Superb#915/@"}
    )

    assert config.get_database_uri() == "postgresql://svc:Superb%23915%2F%40@db:5433/pay"


def test_database_uri_accepts_a_unix_socket_directory() -> None:
    config = Config.from_env({"DB_HOST": "/var/run/postgresql", "DB_NAME": "pay"})

    assert config.get_database_uri() == "postgresql://postgres@/pay?host=/var/run/postgresql&port=5432"


def test_database_url_wins_over_parts() -> None:
    url = "postgresql://u:p@elsewhere:6543/other"

    assert Config.from_env({"DATABASE_URL": url, "DB_HOST": "ignored"}).get_database_uri() == url


def test_describe_database_never_shows_the_password() -> None:
    by_parts = Config.from_env({"DB_PASS": "hunter2"})
    by_url = Config.from_env({"DATABASE_URL": "postgresql://u:hunter2@h:1/db"})

    assert "hunter2" not in by_parts.describe_database()
    assert "hunter2" not in by_url.describe_database()
    assert "hunter2" not in repr(by_parts)


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SERVICE_PORT=9100\nBASE_FARE=7.50\n")
    monkeypatch.setenv("SERVICE_PORT", "9200")

    config = Config.from_env(load_environment(str(dotenv)))

    assert config.SERVICE_PORT == 9200
    assert Decimal("7.50") == config.BASE_FARE


def test_overrides_replace_fields_and_reject_unknown_names() -> None:
    config = Config.from_env({})

    assert config.with_overrides({"DB_NAME": "x"}).DB_NAME == "x"
    with pytest.raises(ConfigError, match="NOPE"):
        config.with_overrides({"NOPE": 1})


def test_service_refuses_to_start_with_an_invalid_value() -> None:
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env={"BASE_FARE": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "BASE_FARE" in result.stderr
    assert "Traceback" not in result.stderr
