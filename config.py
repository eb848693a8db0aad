"""Service configuration, read once from the environment (and `.env`) and validated up front."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import limits
from dotenv import dotenv_values

from models.money import MAX_AMOUNT, to_cents

_API_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# Start-up refuses fare settings under which a trip this long, at the highest configured surge
# level, would price above the largest storable amount (longer trips get 400 fare_out_of_range).
ORDINARY_TRIP_KM = Decimal("1000")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    """Return the stripped value of `name`, or None when it is unset or blank."""
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _str(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """Read a plain string."""
    value = _raw(env, name)
    return default if value is None else value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    """Read an integer within [minimum, maximum]."""
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


def _float(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    """Read a finite float within [minimum, maximum] (used for timeouts, never for money)."""
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not minimum <= number <= maximum:  # also rejects NaN
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return number


def _money(env: Mapping[str, str], name: str, default: str) -> Decimal:
    """Read a non-negative amount of money as an exact Decimal with at most two decimals."""
    value = _raw(env, name)
    text = default if value is None else value
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal amount such as 5.00, got {text!r}") from None
    if not amount.is_finite() or amount < 0 or amount.as_tuple().exponent < -2 or amount >= Decimal("1e8"):
        raise ConfigError(f"{name} must be a finite amount >= 0 with at most two decimals, got {text!r}")
    return amount


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean written as true/false, yes/no, on/off or 1/0."""
    value = _raw(env, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    """Read an http(s) base URL, without a trailing slash."""
    value = _raw(env, name) or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Read one of a fixed set of upper-case words."""
    value = (_raw(env, name) or default).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    """Read a rate-limit string such as '50 per minute' or '20/60 seconds' (checked by the limits library)."""
    value = _raw(env, name) or default
    try:
        limits.parse(value)
    except ValueError:
        raise ConfigError(f"{name} must look like '50 per minute', got {value!r}") from None
    return value


def _api_keys(env: Mapping[str, str], name: str) -> dict[str, str]:
    """Read `name:key` entries (comma-separated) into name -> SHA-256 hex digest of the key.

    A key may be given as `sha256:<64 hex digits>` so the plain key never has to be stored.
    """
    value = _raw(env, name)
    if value is None:
        return {}
    digests: dict[str, str] = {}
    for entry in value.split(","):
        key_name, sep, secret = entry.strip().partition(":")
        if not sep or not _API_KEY_NAME_RE.match(key_name) or not secret:
            raise ConfigError(
                f"{name} entries must look like 'name:key' or 'name:sha256:<hex>' (entry {len(digests) + 1})"
            )
        if key_name in digests:
            raise ConfigError(f"{name} names {key_name!r} twice")
        if secret.startswith("sha256:"):
            digest = secret.removeprefix("sha256:").lower()
            if not _SHA256_RE.match(digest):
                raise ConfigError(f"{name}: the sha256 value of {key_name!r} must be 64 hex digits")
        else:
            digest = hashlib.sha256(secret.encode()).hexdigest()
        # One key under two names would make the client's identity (and so its rate limit and its
        # idempotency scope) depend on which entry matched: refuse it, plain or as its sha256.
        twin = next((other for other, known in digests.items() if known == digest), None)
        if twin is not None:
            raise ConfigError(f"{name} gives {twin!r} and {key_name!r} the same key; give each client its own")
        digests[key_name] = digest
    return digests


def _surge(env: Mapping[str, str], name: str) -> dict[str, Decimal]:
    """Read surge multipliers written as LEVEL:multiplier pairs, e.g. 'LOW:1.0,MEDIUM:1.2,HIGH:1.5'."""
    value = _raw(env, name) or "LOW:1.0,MEDIUM:1.2,HIGH:1.5"
    table: dict[str, Decimal] = {}
    for item in value.split(","):
        level, sep, factor = item.partition(":")
        level = level.strip().upper()
        try:
            multiplier = Decimal(factor.strip())
        except InvalidOperation:
            multiplier = Decimal("NaN")
        if not sep or not level or not multiplier.is_finite() or not Decimal(0) < multiplier <= 10:
            raise ConfigError(f"{name} must look like 'LOW:1.0,MEDIUM:1.2,HIGH:1.5', got {value!r}")
        table[level] = multiplier
    return table


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    """Read an optional postgresql:// URL."""
    value = _raw(env, name)
    if value is not None and urlsplit(value).scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{name} must start with postgresql://, got a {urlsplit(value).scheme!r} URL")
    return value


def load_environment(dotenv_path: str | None = ".env") -> dict[str, str]:
    """Merge `.env` (if present) under the real environment, which always wins."""
    merged: dict[str, str] = {}
    if dotenv_path and os.path.exists(dotenv_path):
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class Config:
    """Typed, validated settings of one service instance."""

    SERVICE_NAME: str = "payment-service"
    VERSION: str = "1.0.0"
    SERVICE_PORT: int = 8082
    DEBUG: bool = False
    LOG_LEVEL: str = "INFO"

    DATABASE_URL: str | None = None
    DB_HOST: str = "localhost"
    DB_PORT: int = 5432
    DB_NAME: str = "payments"
    DB_USER: str = "postgres"
    DB_PASS: str | None = field(default=None, repr=False)
    DB_POOL_SIZE: int = 10
    DB_POOL_TIMEOUT: float = 5.0
    DB_CONNECT_TIMEOUT: int = 3
    DB_STATEMENT_TIMEOUT_MS: int = 5000
    DB_PREPARED_STATEMENTS: bool = True

    TRIP_SERVICE_URL: str = "http://localhost:8081"
    TRIP_SERVICE_MOCK: bool = False
    NOTIFICATION_SERVICE_URL: str = "http://localhost:8084"
    RIDER_SERVICE_URL: str = "http://localhost:8080"
    DRIVER_SERVICE_URL: str = "http://localhost:8083"
    HTTP_CONNECT_TIMEOUT: float = 1.0
    HTTP_READ_TIMEOUT: float = 3.0
    HEALTH_CHECK_TIMEOUT: float = 1.0
    RECEIPT_LOOKUP_TIMEOUT: float = 1.0
    TRIP_SERVICE_MAX_CONCURRENCY: int = 2
    TRIP_SERVICE_QUEUE_TIMEOUT: float = 0.25
    TRIP_SERVICE_BREAKER_THRESHOLD: int = 5
    TRIP_SERVICE_BREAKER_RESET: float = 2.0
    HEALTH_CHECK_CACHE_SECONDS: float = 5.0

    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_DEFAULT: str = "1000 per minute"
    RATE_LIMIT_CHARGE: str = "50 per minute"
    RATE_LIMIT_REFUND: str = "20 per minute"
    RATE_LIMIT_STORAGE_URI: str = field(default="memory://", repr=False)
    TRUSTED_PROXY_COUNT: int = 0
    API_KEYS: dict[str, str] = field(default_factory=dict, repr=False)
    METRICS_REQUIRE_API_KEY: bool = False

    CURRENCY: str = "INR"
    BASE_FARE: Decimal = Decimal("5.00")
    RATE_PER_KM: Decimal = Decimal("2.50")
    SURGE_MULTIPLIERS: dict[str, Decimal] = field(
        default_factory=lambda: {"LOW": Decimal("1.0"), "MEDIUM": Decimal("1.2"), "HIGH": Decimal("1.5")}
    )
    CANCELLATION_FEE: Decimal = Decimal("3.00")
    IDEMPOTENCY_KEY_TTL: int = 86400
    IDEMPOTENCY_LOCK_TIMEOUT: int = 60
    GATEWAY_SUCCESS_RATE: float = 0.8
    GATEWAY_PENDING_RATE: float = 0.0
    NOTIFY_DISPATCHER_ENABLED: bool = True
    NOTIFY_MAX_ATTEMPTS: int = 10
    NOTIFY_BACKOFF_BASE: float = 1.0
    NOTIFY_BACKOFF_MAX: float = 300.0
    NOTIFY_POLL_INTERVAL: float = 1.0
    NOTIFY_BATCH_SIZE: int = 20

    MAX_CONTENT_LENGTH: int = 64 * 1024
    TESTING: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from `env` (default: `.env` merged under os.environ); raise ConfigError if invalid."""
        env = load_environment() if env is None else env
        log_level = _choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
        config = cls(
            SERVICE_PORT=_int(env, "SERVICE_PORT", 8082, 1, 65535),
            DEBUG=_bool(env, "DEBUG", False),
            LOG_LEVEL=log_level,
            DATABASE_URL=_database_url(env, "DATABASE_URL"),
            DB_HOST=_str(env, "DB_HOST", "localhost") or "localhost",
            DB_PORT=_int(env, "DB_PORT", 5432, 1, 65535),
            DB_NAME=_str(env, "DB_NAME", "payments") or "payments",
            DB_USER=_str(env, "DB_USER", "postgres") or "postgres",
            DB_PASS=_str(env, "DB_PASS", None),
            DB_POOL_SIZE=_int(env, "DB_POOL_SIZE", 10, 1, 500),
            DB_POOL_TIMEOUT=_float(env, "DB_POOL_TIMEOUT", 5.0, 0.01, 300.0),
            DB_CONNECT_TIMEOUT=_int(env, "DB_CONNECT_TIMEOUT", 3, 1, 300),
            DB_STATEMENT_TIMEOUT_MS=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000, 0, 3_600_000),
            DB_PREPARED_STATEMENTS=_bool(env, "DB_PREPARED_STATEMENTS", True),
            TRIP_SERVICE_URL=_url(env, "TRIP_SERVICE_URL", cls.TRIP_SERVICE_URL),
            TRIP_SERVICE_MOCK=_bool(env, "TRIP_SERVICE_MOCK", False),
            NOTIFICATION_SERVICE_URL=_url(env, "NOTIFICATION_SERVICE_URL", cls.NOTIFICATION_SERVICE_URL),
            RIDER_SERVICE_URL=_url(env, "RIDER_SERVICE_URL", cls.RIDER_SERVICE_URL),
            DRIVER_SERVICE_URL=_url(env, "DRIVER_SERVICE_URL", cls.DRIVER_SERVICE_URL),
            HTTP_CONNECT_TIMEOUT=_float(env, "HTTP_CONNECT_TIMEOUT", 1.0, 0.01, 60.0),
            HTTP_READ_TIMEOUT=_float(env, "HTTP_READ_TIMEOUT", 3.0, 0.01, 120.0),
            HEALTH_CHECK_TIMEOUT=_float(env, "HEALTH_CHECK_TIMEOUT", 1.0, 0.01, 1.0),
            RECEIPT_LOOKUP_TIMEOUT=_float(env, "RECEIPT_LOOKUP_TIMEOUT", 1.0, 0.01, 10.0),
            TRIP_SERVICE_MAX_CONCURRENCY=_int(env, "TRIP_SERVICE_MAX_CONCURRENCY", 2, 1, 1000),
            TRIP_SERVICE_QUEUE_TIMEOUT=_float(env, "TRIP_SERVICE_QUEUE_TIMEOUT", 0.25, 0.0, 60.0),
            TRIP_SERVICE_BREAKER_THRESHOLD=_int(env, "TRIP_SERVICE_BREAKER_THRESHOLD", 5, 1, 1000),
            TRIP_SERVICE_BREAKER_RESET=_float(env, "TRIP_SERVICE_BREAKER_RESET", 2.0, 0.01, 3600.0),
            HEALTH_CHECK_CACHE_SECONDS=_float(env, "HEALTH_CHECK_CACHE_SECONDS", 5.0, 0.0, 3600.0),
            RATE_LIMIT_ENABLED=_bool(env, "RATE_LIMIT_ENABLED", True),
            RATE_LIMIT_DEFAULT=_rate_limit(env, "RATE_LIMIT_DEFAULT", "1000 per minute"),
            RATE_LIMIT_CHARGE=_rate_limit(env, "RATE_LIMIT_CHARGE", "50 per minute"),
            RATE_LIMIT_REFUND=_rate_limit(env, "RATE_LIMIT_REFUND", "20 per minute"),
            RATE_LIMIT_STORAGE_URI=_storage_uri(env, "RATE_LIMIT_STORAGE_URI"),
            TRUSTED_PROXY_COUNT=_int(env, "TRUSTED_PROXY_COUNT", 0, 0, 10),
            API_KEYS=_api_keys(env, "API_KEYS"),
            METRICS_REQUIRE_API_KEY=_bool(env, "METRICS_REQUIRE_API_KEY", False),
            CURRENCY=_currency(env, "CURRENCY"),
            BASE_FARE=_money(env, "BASE_FARE", "5.00"),
            RATE_PER_KM=_money(env, "RATE_PER_KM", "2.50"),
            SURGE_MULTIPLIERS=_surge(env, "SURGE_MULTIPLIERS"),
            CANCELLATION_FEE=_money(env, "CANCELLATION_FEE", "3.00"),
            IDEMPOTENCY_KEY_TTL=_int(env, "IDEMPOTENCY_KEY_TTL", 86400, 60, 365 * 86400),
            IDEMPOTENCY_LOCK_TIMEOUT=_int(env, "IDEMPOTENCY_LOCK_TIMEOUT", 60, 1, 3600),
            GATEWAY_SUCCESS_RATE=_float(env, "GATEWAY_SUCCESS_RATE", 0.8, 0.0, 1.0),
            GATEWAY_PENDING_RATE=_float(env, "GATEWAY_PENDING_RATE", 0.0, 0.0, 1.0),
            NOTIFY_DISPATCHER_ENABLED=_bool(env, "NOTIFY_DISPATCHER_ENABLED", True),
            NOTIFY_MAX_ATTEMPTS=_int(env, "NOTIFY_MAX_ATTEMPTS", 10, 1, 100),
            NOTIFY_BACKOFF_BASE=_float(env, "NOTIFY_BACKOFF_BASE", 1.0, 0.01, 3600.0),
            NOTIFY_BACKOFF_MAX=_float(env, "NOTIFY_BACKOFF_MAX", 300.0, 0.01, 86400.0),
            NOTIFY_POLL_INTERVAL=_float(env, "NOTIFY_POLL_INTERVAL", 1.0, 0.01, 60.0),
            NOTIFY_BATCH_SIZE=_int(env, "NOTIFY_BATCH_SIZE", 20, 1, 1000),
        )
        config.check_fares()
        return config

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Config:
        """Return a copy with some fields replaced (used by tests and tools); unknown names are an error."""
        if not overrides:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown configuration names: {', '.join(unknown)}")
        config = dataclasses.replace(self, **overrides)
        config.check_fares()
        return config

    def check_fares(self) -> None:
        """Refuse fare settings under which an ordinary trip could not be stored as a payment."""
        level, surge = max(self.SURGE_MULTIPLIERS.items(), key=lambda item: item[1])
        fare = to_cents((self.BASE_FARE + ORDINARY_TRIP_KM * self.RATE_PER_KM) * surge)
        if fare > MAX_AMOUNT:
            raise ConfigError(
                f"BASE_FARE + {ORDINARY_TRIP_KM} km x RATE_PER_KM at the highest SURGE_MULTIPLIERS level"
                f" ({level} {surge}) is {fare}, above the largest payment amount {MAX_AMOUNT}:"
                " lower BASE_FARE or RATE_PER_KM"
            )

    def get_database_uri(self) -> str:
        """Return the libpq connection URI (DATABASE_URL when given, else built from DB_*)."""
        if self.DATABASE_URL:
            return self.DATABASE_URL
        user = quote(self.DB_USER, safe="")
        password = f":{quote(self.DB_PASS, safe='')}" if self.DB_PASS else ""
        name = quote(self.DB_NAME, safe="")
        if self.DB_HOST.startswith("/"):
            # A Unix-socket directory cannot sit in the authority part of a URI; libpq takes it as a parameter.
            return f"postgresql://{user}{password}@/{name}?host={quote(self.DB_HOST, safe='/')}&port={self.DB_PORT}"
        return f"postgresql://{user}{password}@{self.DB_HOST}:{self.DB_PORT}/{name}"

    def describe_database(self) -> str:
        """Return where the database is, without any password, for logs and messages."""
        if self.DATABASE_URL:
            parts = urlsplit(self.DATABASE_URL)
            return f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"
        return f"{self.DB_HOST}:{self.DB_PORT}/{self.DB_NAME}"


def _storage_uri(env: Mapping[str, str], name: str) -> str:
    """Read where rate-limit counters live: memory:// (per process) or redis://host:port[/db]."""
    value = _raw(env, name) or "memory://"
    if urlsplit(value).scheme not in ("memory", "redis", "rediss", "redis+unix"):
        raise ConfigError(f"{name} must be memory:// or a redis:// URL, got a {urlsplit(value).scheme!r} URL")
    return value


def _currency(env: Mapping[str, str], name: str) -> str:
    """Read an ISO 4217 currency code."""
    value = (_raw(env, name) or "INR").upper()
    if not _CURRENCY_RE.match(value):
        raise ConfigError(f"{name} must be a three-letter ISO 4217 code such as INR, got {value!r}")
    return value
