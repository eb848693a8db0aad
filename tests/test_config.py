"""Configuration: defaults, typed parsing, fail-fast validation that names the variable."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from config import SETTINGS, Config, ConfigError, load_environment

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


# --- settings are declared once -----------------------------------------------------------------------


def test_every_field_of_config_is_a_declared_setting() -> None:
    assert [spec.name for spec in SETTINGS] == [f.name for f in dataclasses.fields(Config)]


def test_every_setting_has_a_meaning() -> None:
    assert [spec.name for spec in SETTINGS if not spec.meaning.strip()] == []


def test_every_setting_has_a_default_unless_it_is_a_secret_or_optional() -> None:
    for spec in SETTINGS:
        if spec.secret:
            assert not spec.default, f"{spec.name} is a secret and must have no default"
        elif spec.default is None:
            assert spec.shown_default() == "unset", spec.name
        else:
            assert getattr(Config(), spec.name) == spec.default, spec.name


def test_no_secret_has_a_default_and_none_shows_in_repr() -> None:
    secrets = {spec.name for spec in SETTINGS if spec.secret}
    config = Config.from_env(
        {
            "DB_PASS": "hunter2",
            "API_KEYS": "ops:plain-ops-key",
            "NOTIFY_SIGNING_SECRET": "whsec_hidden",
            "GATEWAY": "stripe",
            "STRIPE_API_KEY": "sk_test_hidden",
            "STRIPE_WEBHOOK_SECRETS": "whsec_webhookhidden",
        }
    )

    assert secrets == {"DB_PASS", "API_KEYS", "NOTIFY_SIGNING_SECRET", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS"}
    assert "whsec_webhookhidden" not in repr(config)
    assert Config.from_env({}).STRIPE_WEBHOOK_SECRETS == ()
    assert Config.from_env({}).STRIPE_API_KEY is None
    assert "sk_test_hidden" not in repr(config)
    assert Config.from_env({}).DB_PASS is None
    assert Config.from_env({}).API_KEYS == {}
    assert Config.from_env({}).NOTIFY_SIGNING_SECRET is None
    assert "hunter2" not in repr(config)
    assert "whsec_hidden" not in repr(config)
    assert "API_KEYS" not in repr(config)


def test_every_default_passes_its_own_check() -> None:
    for spec in SETTINGS:
        assert spec.check(spec.default) == spec.default, spec.name


def test_every_number_read_from_the_environment_has_bounds() -> None:
    from config import INTEGER, NUMBER

    unbounded = [spec.name for spec in SETTINGS if spec.kind in (INTEGER, NUMBER) and spec.bounds is None]

    assert unbounded == []


def test_a_bound_refuses_the_value_just_past_it_from_the_environment() -> None:
    config = Config.from_env({"DB_POOL_SIZE": "500", "GATEWAY_SUCCESS_RATE": "1"})

    assert config.DB_POOL_SIZE == 500
    with pytest.raises(ConfigError, match="DB_POOL_SIZE must be between 1 and 500, got 501"):
        Config.from_env({"DB_POOL_SIZE": "501"})
    with pytest.raises(ConfigError, match=r"GATEWAY_SUCCESS_RATE must be between 0\.0 and 1\.0"):
        Config.from_env({"GATEWAY_SUCCESS_RATE": "1.01"})


def test_fields_not_read_from_the_environment_keep_their_defaults() -> None:
    config = Config.from_env({"TESTING": "true", "MAX_CONTENT_LENGTH": "1", "SERVICE_NAME": "x"})

    assert config.TESTING is False
    assert config.MAX_CONTENT_LENGTH == 64 * 1024
    assert config.SERVICE_NAME == "payment-service"


# --- overrides are checked like the environment ---------------------------------------------------------


def test_overrides_of_valid_values_are_applied() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    config = Config.from_env({}).with_overrides(
        {
            "DB_POOL_SIZE": 3,
            "DB_POOL_TIMEOUT": 1,
            "GATEWAY_SUCCESS_RATE": 1.0,
            "BASE_FARE": Decimal("12000"),
            "CANCELLATION_FEE": Decimal("0"),
            "API_KEYS": {"trip-service": digest},
            "RATE_LIMIT_ENABLED": False,
            "RATE_LIMIT_CHARGE": "1 per 1 second",
            "RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
            "TESTING": True,
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": "postgresql://u@h:5432/db",
            "DB_NAME": "x",
            "DB_PASS": None,
            "TRIP_SERVICE_URL": "http://127.0.0.1:9/",
            "SURGE_MULTIPLIERS": {"LOW": Decimal("1.0"), "PEAK": Decimal("2.25")},
        }
    )

    assert config.DB_POOL_SIZE == 3
    assert config.DB_POOL_TIMEOUT == 1.0
    assert isinstance(config.DB_POOL_TIMEOUT, float)
    assert Decimal("12000") == config.BASE_FARE
    assert {"trip-service": digest} == config.API_KEYS
    assert config.RATE_LIMIT_ENABLED is False
    assert config.TESTING is True
    assert config.LOG_LEVEL == "WARNING"
    assert config.get_database_uri() == "postgresql://u@h:5432/db"
    assert config.TRIP_SERVICE_URL == "http://127.0.0.1:9"
    assert {"LOW": Decimal("1.0"), "PEAK": Decimal("2.25")} == config.SURGE_MULTIPLIERS


def test_optional_settings_can_be_overridden_back_to_unset() -> None:
    config = Config.from_env({"DATABASE_URL": "postgresql://u@h/db"}).with_overrides({"DATABASE_URL": None})

    assert config.DATABASE_URL is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "3"),
        ("DB_POOL_SIZE", 3.0),
        ("DB_POOL_SIZE", True),
        ("DB_POOL_SIZE", 0),
        ("DB_POOL_SIZE", 501),
        ("DB_PORT", None),
        ("DB_POOL_TIMEOUT", "1"),
        ("DB_POOL_TIMEOUT", float("nan")),
        ("DB_POOL_TIMEOUT", 0),
        ("HEALTH_CHECK_TIMEOUT", 5),
        ("GATEWAY_SUCCESS_RATE", 1.5),
        ("GATEWAY_SUCCESS_RATE", False),
        ("BASE_FARE", 5),
        ("BASE_FARE", 5.0),
        ("BASE_FARE", "5.00"),
        ("BASE_FARE", Decimal("1.005")),
        ("BASE_FARE", Decimal("-1")),
        ("BASE_FARE", Decimal("NaN")),
        ("CANCELLATION_FEE", Decimal("1e9")),
        ("RATE_LIMIT_ENABLED", "false"),
        ("RATE_LIMIT_ENABLED", 0),
        ("TESTING", 1),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", 10),
        ("RATE_LIMIT_CHARGE", "lots"),
        ("RATE_LIMIT_STORAGE_URI", "http://x"),
        ("CURRENCY", "rupees"),
        ("TRIP_SERVICE_URL", "trip-service:8081"),
        ("TRIP_SERVICE_URL", None),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", ""),
        ("DB_NAME", ""),
        ("DB_HOST", None),
        ("DB_PASS", 1234),
        ("API_KEYS", "ops:key"),
        ("API_KEYS", {"ops": "plain-key"}),
        ("API_KEYS", {"bad name": "0" * 64}),
        ("API_KEYS", {"a": "0" * 64, "b": "0" * 64}),
        ("SURGE_MULTIPLIERS", "LOW:1.0"),
        ("SURGE_MULTIPLIERS", {}),
        ("SURGE_MULTIPLIERS", {"LOW": 1.0}),
        ("SURGE_MULTIPLIERS", {"LOW": Decimal("0")}),
        ("SURGE_MULTIPLIERS", {"low": Decimal("1.0")}),
        ("MAX_CONTENT_LENGTH", 0),
    ],
)
def test_an_override_of_the_wrong_type_or_out_of_bounds_is_refused_naming_it(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({}).with_overrides({name: value})


def test_a_refused_override_says_what_is_allowed() -> None:
    config = Config.from_env({})

    with pytest.raises(ConfigError, match="DB_POOL_SIZE must be between 1 and 500, got 0"):
        config.with_overrides({"DB_POOL_SIZE": 0})
    with pytest.raises(ConfigError, match="DB_POOL_SIZE must be an integer, got '3'"):
        config.with_overrides({"DB_POOL_SIZE": "3"})


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_a_database_url_with_a_bad_port_is_a_configuration_error_without_the_password(port: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as refused:
        Config.from_env({"DATABASE_URL": f"postgresql://alice:Sup3rS3cret@127.0.0.1:{port}/payments"})

    assert "Sup3rS3cret" not in str(refused.value)


def test_a_publishable_stripe_key_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_KEY must be a secret"):
        Config.from_env({"GATEWAY": "stripe", "STRIPE_API_KEY": "pk_test_abc"})


def test_no_record_after_below_the_minimum_age_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"RECONCILE_NO_RECORD_AFTER \(60\) must not be below RECONCILE_MIN_AGE"):
        Config.from_env({"RECONCILE_MIN_AGE": "120", "RECONCILE_NO_RECORD_AFTER": "60"})


def test_every_invalid_value_is_reported_at_once_one_line_each() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"DB_POOL_SIZE": "0", "LOG_LEVEL": "LOUD", "SERVICE_PORT": "http"})

    assert len(refused.value.problems) == 3
    assert [line.split(" ")[2] for line in refused.value.lines()] == ["SERVICE_PORT", "LOG_LEVEL", "DB_POOL_SIZE"]
    assert all(line.startswith("configuration error: ") for line in refused.value.lines())


def test_a_surge_multiplier_out_of_range_is_refused_saying_the_range() -> None:
    with pytest.raises(ConfigError, match=r"multiplier of HIGH must be above 0 and at most 10, got 1000"):
        Config.from_env({"SURGE_MULTIPLIERS": "LOW:1.0,HIGH:1000"})


def test_reconciling_before_a_stripe_call_can_have_timed_out_is_refused() -> None:
    stripe = {"GATEWAY": "stripe", "STRIPE_API_KEY": "sk_test_x"}

    with pytest.raises(ConfigError, match=r"RECONCILE_MIN_AGE \(1\) must be above GATEWAY_TIMEOUT \(10\)"):
        Config.from_env({**stripe, "RECONCILE_MIN_AGE": "1", "GATEWAY_TIMEOUT": "10"})
    assert Config.from_env({**stripe, "RECONCILE_MIN_AGE": "11", "GATEWAY_TIMEOUT": "10"}).RECONCILE_MIN_AGE == 11
    # The simulator answers from the service's own database: no call is ever left waiting.
    assert Config.from_env({"RECONCILE_MIN_AGE": "1"}).RECONCILE_MIN_AGE == 1
    # With the loop off, reconciliation only runs when asked (manage.py reconcile), on any row asked for.
    assert Config.from_env({**stripe, "RECONCILE_MIN_AGE": "0", "RECONCILE_INTERVAL": "0"}).RECONCILE_MIN_AGE == 0


def test_a_first_retry_delay_above_its_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"NOTIFY_BACKOFF_BASE \(10\) must not be above NOTIFY_BACKOFF_MAX \(5\)"):
        Config.from_env({"NOTIFY_BACKOFF_BASE": "10", "NOTIFY_BACKOFF_MAX": "5"})


def test_a_stripe_key_with_the_simulator_is_refused_in_any_mode() -> None:
    for mode in ("development", "production"):
        with pytest.raises(ConfigError, match="STRIPE_API_KEY is set but GATEWAY is simulator"):
            Config.from_env({"APP_ENV": mode, "STRIPE_API_KEY": "sk_live_x"})
    with pytest.raises(ConfigError, match="STRIPE_API_KEY is set but GATEWAY is simulator"):
        Config.from_env({"GATEWAY": "simulator", "STRIPE_API_KEY": "sk_live_x"})


PRODUCTION = {
    "APP_ENV": "production",
    "GATEWAY": "stripe",
    "STRIPE_API_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRETS": "whsec_a",
    "API_KEYS": "trips:k1",
    "NOTIFY_SIGNING_SECRET": "signing-secret",
}


def test_production_with_safe_settings_starts() -> None:
    config = Config.from_env(PRODUCTION)

    assert config.APP_ENV == "production"
    assert config.deploy_findings() == []


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"GATEWAY": "simulator", "STRIPE_API_KEY": ""}, "GATEWAY is simulator"),
        ({"GATEWAY": "", "STRIPE_API_KEY": ""}, "GATEWAY is simulator (also its default)"),
        ({"TRIP_SERVICE_MOCK": "true"}, "TRIP_SERVICE_MOCK=true"),
        ({"DEBUG": "true"}, "DEBUG=true"),
        ({"API_KEYS": ""}, "API_KEYS is not set"),
        ({"NOTIFY_SIGNING_SECRET": ""}, "NOTIFY_SIGNING_SECRET is not set"),
        ({"STRIPE_WEBHOOK_SECRETS": ""}, "STRIPE_WEBHOOK_SECRETS is not set with GATEWAY=stripe"),
    ],
)
def test_production_refuses_each_unsafe_setting_naming_it(change: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({**PRODUCTION, **change})

    assert len(refused.value.problems) == 1
    assert refused.value.problems[0].startswith(setting)
    # The same settings only warn nobody in development: the mode is what refuses them.
    assert Config.from_env({**PRODUCTION, **change, "APP_ENV": "development"}).APP_ENV == "development"


def test_production_lists_every_unsafe_setting_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"APP_ENV": "production", "DEBUG": "true", "TRIP_SERVICE_MOCK": "true"})

    named = [problem.split(" ")[0].split("=")[0] for problem in refused.value.problems]
    assert named == ["GATEWAY", "TRIP_SERVICE_MOCK", "DEBUG", "API_KEYS", "NOTIFY_SIGNING_SECRET"]


def test_webhook_secrets_take_several_for_a_rotation_and_never_echo_a_bad_one() -> None:
    config = Config.from_env({"STRIPE_WEBHOOK_SECRETS": "whsec_old, whsec_new"})
    assert config.STRIPE_WEBHOOK_SECRETS == ("whsec_old", "whsec_new")

    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS entry 2 is not") as refused:
        Config.from_env({"STRIPE_WEBHOOK_SECRETS": "whsec_old,sk_live_oops"})
    assert "sk_live_oops" not in str(refused.value)
    with pytest.raises(ConfigError, match="names the same secret twice"):
        Config.from_env({"STRIPE_WEBHOOK_SECRETS": "whsec_a,whsec_a"})


# --- CURRENCY: a real ISO 4217 code whose amounts NUMERIC(10,2) can hold ------------------------------


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("ABC", "not an ISO 4217 currency code"),
        ("XXX", "no minor unit"),
        ("XAU", "no minor unit"),
        ("BHD", "3 decimals"),
        ("KWD", "3 decimals"),
    ],
)
def test_start_up_refuses_a_currency_iso_4217_does_not_give_at_most_two_decimals(code: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"CURRENCY.*{why}"):
        Config.from_env({"CURRENCY": code})
    with pytest.raises(ConfigError, match=f"CURRENCY.*{why}"):
        Config.from_env({}).with_overrides({"CURRENCY": code})


def test_a_lower_case_currency_is_read_as_its_iso_4217_code() -> None:
    assert Config.from_env({"CURRENCY": "jpy"}).CURRENCY == "JPY"


def test_start_up_refuses_a_currency_stripe_counts_more_coarsely_than_iso_4217_naming_both_settings() -> None:
    stripe = {"GATEWAY": "stripe", "STRIPE_API_KEY": "sk_test_x"}

    with pytest.raises(ConfigError, match="CURRENCY=MGA cannot be used with GATEWAY=stripe"):
        Config.from_env({**stripe, "CURRENCY": "MGA"})
    assert Config.from_env({"CURRENCY": "MGA"}).CURRENCY == "MGA"  # the simulator moves any stored amount
    assert Config.from_env({**stripe, "CURRENCY": "JPY"}).CURRENCY == "JPY"


def test_start_up_refuses_a_cancellation_fee_with_more_decimals_than_the_currency_has() -> None:
    with pytest.raises(ConfigError, match=r"CANCELLATION_FEE.*CURRENCY=JPY"):
        Config.from_env({"CURRENCY": "JPY", "CANCELLATION_FEE": "100.50"})
    assert Decimal("100") == Config.from_env({"CURRENCY": "JPY", "CANCELLATION_FEE": "100"}).CANCELLATION_FEE


def test_a_zero_decimal_currency_s_largest_fare_is_whole_units() -> None:
    # A 1,000 km trip prices at 99,999,999.50 yen here, which NUMERIC(10,2) stores but a yen payment cannot be.
    with pytest.raises(ConfigError, match="is 100000000 JPY, above the largest payment amount 99999999"):
        Config.from_env(
            {
                "CURRENCY": "JPY",
                "BASE_FARE": "9.5",
                "RATE_PER_KM": "99999.99",
                "SURGE_MULTIPLIERS": "A:1",
                "HOLD_MULTIPLIER": "1",
            }
        )


def test_production_refuses_a_stripe_that_moves_no_real_money() -> None:
    for change, finding in (
        ({"STRIPE_API_KEY": "sk_test_x"}, "STRIPE_API_KEY is a test-mode key"),
        ({"STRIPE_API_BASE": "http://localhost:8420"}, "STRIPE_API_BASE is set (http://localhost:8420)"),
    ):
        with pytest.raises(ConfigError) as refused:
            Config.from_env({**PRODUCTION, **change})
        assert len(refused.value.problems) == 1
        assert refused.value.problems[0].startswith(finding)


def test_settings_that_cannot_work_together_are_refused_in_any_mode() -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_BASE is set but GATEWAY is simulator"):
        Config.from_env({"STRIPE_API_BASE": "http://localhost:8420"})
    with pytest.raises(ConfigError, match="BASE_FARE and RATE_PER_KM are both 0"):
        Config.from_env({"BASE_FARE": "0", "RATE_PER_KM": "0"})
    assert Config.from_env({"BASE_FARE": "0"}).RATE_PER_KM > 0
