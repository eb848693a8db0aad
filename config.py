"""Service configuration, read once from the environment (and `.env`) and validated up front.

Each setting is declared once, as a field of `Config`: its type, default, bounds and meaning. The same
declaration reads it from the environment (`Config.from_env`), checks an override given as a Python
value (`Config.with_overrides`) and writes the configuration table of docs/configuration.md (`python config.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import limits
from dotenv import dotenv_values

from models.money import CurrencyError, fits_currency, max_amount, minor_unit_exponent, to_minor_unit
from services.gateways.registry import GATEWAYS
from services.gateways.stripe.units import stripe_decimals

_API_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Start-up refuses fare settings under which a trip this long, at the highest configured surge
# level, would price above the largest storable amount (longer trips get 400 fare_out_of_range).
ORDINARY_TRIP_KM = Decimal("1000")
# The largest surge multiplier a level may have (surge pricing beyond 10x is a configuration slip).
MAX_SURGE = Decimal(10)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SPEC = "setting"  # the key of a field's metadata that holds its Setting


class ConfigError(ValueError):
    """Configuration values are missing, invalid or unsafe; one problem per line, each naming its variable."""

    def __init__(self, *problems: str) -> None:
        """Keep every problem, so one start shows them all rather than the first alone."""
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def lines(self) -> list[str]:
        """The problems as the service prints them when it refuses to start."""
        return [f"configuration error: {problem}" for problem in self.problems]


# --- kinds of setting: how a value is read from text, checked as a Python value, and shown ----------


@dataclass(frozen=True)
class Kind:
    """How one kind of setting is read from the environment's text and checked when given as a value."""

    read: Callable[[Setting, str], Any]  # stripped, non-blank text -> value, or ConfigError
    check: Callable[[Setting, Any], Any]  # a Python value (an override) -> value, or ConfigError
    show: Callable[[Any], str] = str  # a default as it would be written in the environment


@dataclass(frozen=True)
class Setting:
    """One setting of `Config`: its kind, default, bounds and meaning (the name is the field's)."""

    kind: Kind
    default: Any
    meaning: str
    bounds: tuple[Any, Any] | None = None  # inclusive; numbers only
    choices: tuple[str, ...] = ()
    secret: bool = False  # never has a default; kept out of repr
    from_env: bool = True  # False: fixed by the code (or by tests), not read from the environment
    name: str = ""

    def read(self, text: str) -> Any:
        """Parse the environment's text for this setting."""
        return self.kind.read(self, text)

    def check(self, value: Any) -> Any:
        """Validate an override given as a Python value; return it as stored."""
        return self.kind.check(self, value)

    def shown_default(self) -> str:
        """The default as the table in docs/configuration.md shows it."""
        if self.secret:
            return "none"
        if self.default is None:
            return "unset"
        return f"`{self.kind.show(self.default)}`"


def _within(setting: Setting, number: Any, shown: str) -> Any:
    if setting.bounds is not None:
        low, high = setting.bounds
        if not low <= number <= high:  # also rejects NaN
            raise ConfigError(f"{setting.name} must be between {low} and {high}, got {shown}")
    return number


def _read_int(setting: Setting, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{setting.name} must be an integer, got {text!r}") from None
    return _within(setting, number, str(number))


def _check_int(setting: Setting, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{setting.name} must be an integer, got {value!r}")
    return _within(setting, value, repr(value))


def _read_float(setting: Setting, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{setting.name} must be a number, got {text!r}") from None
    return _within(setting, number, repr(text))


def _check_float(setting: Setting, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{setting.name} must be a number, got {value!r}")
    return _within(setting, float(value), repr(value))


def _valid_amount(setting: Setting, amount: Decimal, shown: str) -> Decimal:
    if not amount.is_finite() or amount < 0 or amount.as_tuple().exponent < -2 or amount >= Decimal("1e8"):
        raise ConfigError(f"{setting.name} must be a finite amount >= 0 with at most two decimals, got {shown}")
    return amount


def _read_money(setting: Setting, text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{setting.name} must be a decimal amount such as 5.00, got {text!r}") from None
    return _valid_amount(setting, amount, repr(text))


def _check_money(setting: Setting, value: Any) -> Decimal:
    if not isinstance(value, Decimal):
        raise ConfigError(f"{setting.name} must be a Decimal amount such as Decimal('5.00'), got {value!r}")
    return _valid_amount(setting, value, repr(value))


def _read_factor(setting: Setting, text: str) -> Decimal:
    try:
        factor = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{setting.name} must be a decimal number such as 1.25, got {text!r}") from None
    return _valid_factor(setting, factor, repr(text))


def _check_factor(setting: Setting, value: Any) -> Decimal:
    if not isinstance(value, Decimal):
        raise ConfigError(f"{setting.name} must be a Decimal such as Decimal('1.25'), got {value!r}")
    return _valid_factor(setting, value, repr(value))


def _valid_factor(setting: Setting, factor: Decimal, shown: str) -> Decimal:
    if not factor.is_finite() or factor.as_tuple().exponent < -4:
        raise ConfigError(f"{setting.name} must be a finite decimal with at most four decimals, got {shown}")
    return _within(setting, factor, shown)


def _read_bool(setting: Setting, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{setting.name} must be true or false, got {text!r}")


def _check_bool(setting: Setting, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{setting.name} must be True or False, got {value!r}")
    return value


def _checked_text(read: Callable[[Setting, str], Any]) -> Callable[[Setting, Any], Any]:
    """Check a string override with the same parser as the environment's text (None if optional)."""

    def check(setting: Setting, value: Any) -> Any:
        if value is None and setting.default is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{setting.name} must be a non-blank string, got {value!r}")
        return read(setting, value.strip())

    return check


def _read_text(setting: Setting, text: str) -> str:
    return text


def _read_http_url(setting: Setting, text: str) -> str:
    """An http(s) base URL, without a trailing slash."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{setting.name} must be an http(s) URL, got {text!r}")
    return text.rstrip("/")


def _read_choice(setting: Setting, text: str) -> str:
    """One of a fixed set of words, in any case; stored as the set spells it."""
    for choice in setting.choices:
        if text.upper() == choice.upper():
            return choice
    raise ConfigError(f"{setting.name} must be one of {', '.join(setting.choices)}, got {text!r}")


def _read_gateway(setting: Setting, text: str) -> str:
    """The name of a gateway of the registry's table, read when asked so that one registered later counts."""
    return _read_choice(dataclasses.replace(setting, choices=tuple(GATEWAYS)), text)


def _gateway_meaning() -> str:
    """GATEWAY's documentation, from the registry's table: each gateway with what it is."""
    named = [f"`{name}` ({kind.about})" for name, kind in GATEWAYS.items()]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    return (
        f"the gateway new payments use (each payment keeps the one that made it): {listed}; CASH never calls a gateway"
    )


def _read_rate_limit(setting: Setting, text: str) -> str:
    """A rate-limit string such as '50 per minute' or '20/60 seconds' (checked by the limits library)."""
    try:
        limits.parse(text)
    except ValueError:
        raise ConfigError(f"{setting.name} must look like '50 per minute', got {text!r}") from None
    return text


def _read_storage_uri(setting: Setting, text: str) -> str:
    """Where rate-limit counters live: memory:// (per process) or redis://host:port[/db]."""
    if urlsplit(text).scheme not in ("memory", "redis", "rediss", "redis+unix"):
        raise ConfigError(f"{setting.name} must be memory:// or a redis:// URL, got a {urlsplit(text).scheme!r} URL")
    return text


def _read_currency(setting: Setting, text: str) -> str:
    """An ISO 4217 currency code (any case) of a currency with at most two decimals, from the ISO table."""
    value = text.upper()
    try:
        minor_unit_exponent(value)
    except CurrencyError as exc:
        raise ConfigError(
            f"{setting.name} must be an ISO 4217 currency with at most two decimals such as INR: {exc}"
        ) from None
    return value


def _read_database_url(setting: Setting, text: str) -> str:
    """A postgresql:// URL."""
    parts = urlsplit(text)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{setting.name} must start with postgresql://, got a {parts.scheme!r} URL")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        # The message names the setting only: the URL may hold a password.
        raise ConfigError(f"{setting.name} has a port that is not a number from 1 to 65535") from None
    return text


def _twin(digests: Mapping[str, str], digest: str) -> str | None:
    """The name already holding `digest`, if any."""
    return next((other for other, known in digests.items() if known == digest), None)


def _read_api_keys(setting: Setting, text: str) -> dict[str, str]:
    """`name:key` entries (comma-separated) into name -> SHA-256 hex digest of the key.

    A key may be given as `sha256:<64 hex digits>` so the plain key never has to be stored.
    """
    name = setting.name
    digests: dict[str, str] = {}
    for entry in text.split(","):
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
        twin = _twin(digests, digest)
        if twin is not None:
            raise ConfigError(f"{name} gives {twin!r} and {key_name!r} the same key; give each client its own")
        digests[key_name] = digest
    return digests


def _check_api_keys(setting: Setting, value: Any) -> dict[str, str]:
    """A dict of client name -> lower-case SHA-256 hex digest, no digest under two names."""
    name = setting.name
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a dict of client name -> sha256 hex digest, got a {type(value).__name__}")
    digests: dict[str, str] = {}
    for key_name, digest in value.items():
        if not isinstance(key_name, str) or not _API_KEY_NAME_RE.match(key_name):
            raise ConfigError(f"{name}: {key_name!r} is not a client name (letters, digits, '.', '_', '-')")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise ConfigError(f"{name}: the value of {key_name!r} must be 64 lower-case hex digits")
        twin = _twin(digests, digest)
        if twin is not None:
            raise ConfigError(f"{name} gives {twin!r} and {key_name!r} the same key; give each client its own")
        digests[key_name] = digest
    return digests


def _read_webhook_secrets(setting: Setting, text: str) -> tuple[str, ...]:
    """Comma-separated Stripe endpoint signing secrets (`whsec_...`); several during a rotation."""
    secrets = tuple(part.strip() for part in text.split(","))
    for position, secret in enumerate(secrets, start=1):
        # Never echo a secret back: name its position only.
        if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
            raise ConfigError(
                f"{setting.name} entry {position} is not a Stripe webhook signing secret (whsec_...);"
                " separate several with commas"
            )
    if len(set(secrets)) != len(secrets):
        raise ConfigError(f"{setting.name} names the same secret twice")
    return secrets


def _check_webhook_secrets(setting: Setting, value: Any) -> tuple[str, ...]:
    """A tuple of `whsec_` secrets, as the environment's text would give."""
    if not isinstance(value, tuple) or not all(isinstance(secret, str) for secret in value):
        raise ConfigError(f"{setting.name} must be a tuple of strings such as ('whsec_...',)")
    return _read_webhook_secrets(setting, ",".join(value)) if value else ()


def _valid_multiplier(multiplier: Any) -> bool:
    return isinstance(multiplier, Decimal) and multiplier.is_finite() and Decimal(0) < multiplier <= MAX_SURGE


def _read_surge(setting: Setting, text: str) -> dict[str, Decimal]:
    """Surge multipliers written as LEVEL:multiplier pairs, e.g. 'LOW:1.0,MEDIUM:1.2,HIGH:1.5'."""
    table: dict[str, Decimal] = {}
    for item in text.split(","):
        level, sep, factor = item.partition(":")
        level = level.strip().upper()
        try:
            multiplier = Decimal(factor.strip())
        except InvalidOperation:
            multiplier = Decimal("NaN")
        if not sep or not level or not multiplier.is_finite():
            raise ConfigError(f"{setting.name} must look like 'LOW:1.0,MEDIUM:1.2,HIGH:1.5', got {text!r}")
        if not _valid_multiplier(multiplier):
            raise ConfigError(
                f"{setting.name}: the multiplier of {level} must be above 0 and at most {MAX_SURGE},"
                f" got {factor.strip()}"
            )
        table[level] = multiplier
    return table


def _check_surge(setting: Setting, value: Any) -> dict[str, Decimal]:
    """A non-empty dict of upper-case level -> Decimal multiplier in (0, 10]."""
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(level, str) and level and level == level.strip().upper() for level in value)
        or not all(_valid_multiplier(multiplier) for multiplier in value.values())
    ):
        raise ConfigError(
            f"{setting.name} must map upper-case levels to Decimal multipliers above 0 and at most {MAX_SURGE}"
            f" such as {{'LOW': Decimal('1.0')}}, got {value!r}"
        )
    return dict(value)


def _show_surge(table: Mapping[str, Decimal]) -> str:
    return ",".join(f"{level}:{multiplier}" for level, multiplier in table.items())


INTEGER = Kind(_read_int, _check_int)
NUMBER = Kind(_read_float, _check_float, repr)  # timeouts and rates, never money
MONEY = Kind(_read_money, _check_money)  # an exact Decimal >= 0 with at most two decimals
FACTOR = Kind(_read_factor, _check_factor)  # an exact Decimal multiplier (fares are money, so no floats)
BOOLEAN = Kind(_read_bool, _check_bool, lambda value: "true" if value else "false")
TEXT = Kind(_read_text, _checked_text(_read_text))
HTTP_URL = Kind(_read_http_url, _checked_text(_read_http_url))
CHOICE = Kind(_read_choice, _checked_text(_read_choice))
GATEWAY_NAME = Kind(_read_gateway, _checked_text(_read_gateway))  # a CHOICE among services/gateways/registry.py's
RATE_LIMIT = Kind(_read_rate_limit, _checked_text(_read_rate_limit))
STORAGE_URI = Kind(_read_storage_uri, _checked_text(_read_storage_uri))
CURRENCY_CODE = Kind(_read_currency, _checked_text(_read_currency))
POSTGRES_URL = Kind(_read_database_url, _checked_text(_read_database_url))
KEY_DIGESTS = Kind(_read_api_keys, _check_api_keys)
SURGE_TABLE = Kind(_read_surge, _check_surge, _show_surge)
WEBHOOK_SECRETS = Kind(_read_webhook_secrets, _check_webhook_secrets)


def setting(
    kind: Kind,
    default: Any,
    meaning: str,
    *,
    bounds: tuple[Any, Any] | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
    hidden: bool = False,
    from_env: bool = True,
) -> Any:
    """Declare a field of `Config` as a setting (`hidden`: kept out of repr, e.g. may carry a password)."""
    spec = Setting(kind, default, meaning, bounds, choices, secret, from_env)
    metadata = {_SPEC: spec}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), repr=not (secret or hidden), metadata=metadata)
    return field(default=default, repr=not (secret or hidden), metadata=metadata)


def load_environment(dotenv_path: str | None = ".env") -> dict[str, str]:
    """Merge `.env` (if present) under the real environment, which always wins."""
    merged: dict[str, str] = {}
    if dotenv_path and os.path.exists(dotenv_path):
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ)
    return merged


# setting() returns a dataclasses.field; ruff's RUF009 cannot tell, hence its noqa on the Decimal and dict fields.
@dataclass(frozen=True)
class Config:
    """Typed, validated settings of one service instance; each field is declared once, with its meaning."""

    SERVICE_NAME: str = setting(TEXT, "payment-service", "name in `/health` and on receipts", from_env=False)
    VERSION: str = setting(TEXT, "1.0.0", "version in `/health`", from_env=False)

    APP_ENV: str = setting(
        CHOICE,
        "development",
        "`development` or `production`; in `production` the service refuses to start with a setting unsafe for"
        " real money (the simulator, the mock trip, `DEBUG`, no `API_KEYS`, no `NOTIFY_SIGNING_SECRET`, Stripe"
        " without `STRIPE_WEBHOOK_SECRETS`), printing one line per problem; `python manage.py check --deploy`"
        " lists them without starting",
        choices=("development", "production"),
    )
    SERVICE_PORT: int = setting(
        INTEGER,
        8082,
        "port the service listens on, with `python app.py` and with gunicorn and `gunicorn.conf.py` (0.0.0.0, unless"
        " `GUNICORN_BIND` or `-b` says otherwise)",
        bounds=(1, 65535),
    )
    DEBUG: bool = setting(
        BOOLEAN,
        False,
        "readable logs instead of JSON; nothing else (never the interactive debugger, never a different charge)",
    )
    LOG_LEVEL: str = setting(CHOICE, "INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`", choices=_LOG_LEVELS)
    LOG_FORMAT: str = setting(
        CHOICE,
        "json",
        "`json` (one object per line, for log collectors: the default under gunicorn and in containers) or"
        " `text` (readable lines); `python app.py` (what `make run` starts) uses `text` unless this is set",
        choices=("json", "text"),
    )

    DATABASE_URL: str | None = setting(POSTGRES_URL, None, "`postgresql://...`; when set, the `DB_*` parts are ignored")
    DB_HOST: str = setting(TEXT, "localhost", "host name, IP, or Unix-socket directory")
    DB_PORT: int = setting(INTEGER, 5432, "port of the database server", bounds=(1, 65535))
    DB_NAME: str = setting(TEXT, "payments", "created by `database_setup.py` if missing")
    DB_USER: str = setting(TEXT, "postgres", "database role the service connects as")
    DB_PASS: str | None = setting(
        TEXT, None, "password of `DB_USER`; no default; leave unset for trust/peer auth", secret=True
    )
    DB_POOL_SIZE: int = setting(INTEGER, 10, "connections per process (gunicorn worker)", bounds=(1, 500))
    DB_POOL_TIMEOUT: float = setting(
        NUMBER, 5.0, "seconds a request waits for a free connection before `503`", bounds=(0.01, 300.0)
    )
    DB_CONNECT_TIMEOUT: int = setting(
        INTEGER, 3, "seconds to open a connection (libpq's minimum is 2)", bounds=(1, 300)
    )
    DB_STATEMENT_TIMEOUT_MS: int = setting(
        INTEGER, 5000, "server-side limit per statement; `0` disables", bounds=(0, 3_600_000)
    )
    DB_PREPARED_STATEMENTS: bool = setting(
        BOOLEAN,
        True,
        "run the hot statements as server-side prepared statements; set `false` behind a pooler in transaction"
        " or statement mode (PgBouncer, any version: its prepared-statement support since 1.21 covers only"
        " protocol-level statements, not SQL `PREPARE`)",
    )
    DB_SESSION_OPTIONS: bool = setting(
        BOOLEAN,
        True,
        "send the session settings (UTC time zone, statement and idle-in-transaction timeouts, keepalives) when"
        " connecting; set `false` behind PgBouncer in transaction mode, which refuses them: its `connect_query`"
        " must set them instead (see [operations.md](operations.md#behind-pgbouncer))",
    )
    DB_MIGRATION_LOCK_TIMEOUT: float = setting(
        NUMBER,
        60.0,
        "seconds a statement of a migration run outside a transaction (`CREATE INDEX CONCURRENTLY`) waits for a"
        " lock, or for older transactions to end, before `database_setup.py` fails naming the oldest; `0` waits"
        " forever",
        bounds=(0.0, 86400.0),
    )

    TRIP_SERVICE_URL: str = setting(HTTP_URL, "http://localhost:8081", "trip service base URL")
    TRIP_SERVICE_MOCK: bool = setting(
        BOOLEAN,
        False,
        "development only: when the trip service cannot answer, price the mock trip (completed, 10.5 km,"
        " surge 1.0) instead of `503`; logged as a warning at start and on every use, and marked"
        ' `"mock_trip": true` in the fare',
    )
    NOTIFICATION_SERVICE_URL: str = setting(HTTP_URL, "http://localhost:8084", "notification service base URL")
    RIDER_SERVICE_URL: str = setting(HTTP_URL, "http://localhost:8080", "rider service base URL")
    DRIVER_SERVICE_URL: str = setting(HTTP_URL, "http://localhost:8083", "driver service base URL")
    HTTP_CONNECT_TIMEOUT: float = setting(
        NUMBER, 1.0, "seconds to connect, for calls to other services", bounds=(0.01, 60.0)
    )
    HTTP_READ_TIMEOUT: float = setting(
        NUMBER, 3.0, "seconds to wait for an answer, for calls to other services", bounds=(0.01, 120.0)
    )
    HEALTH_CHECK_TIMEOUT: float = setting(
        NUMBER, 1.0, "seconds (at most 1) for a dependency's `/health` in our `/health`", bounds=(0.01, 1.0)
    )
    HEALTH_CHECK_CACHE_SECONDS: float = setting(
        NUMBER, 5.0, "how long a dependency status is reused", bounds=(0.0, 3600.0)
    )
    RECEIPT_LOOKUP_TIMEOUT: float = setting(
        NUMBER, 1.0, "seconds for each rider/driver lookup when a receipt is first made", bounds=(0.01, 10.0)
    )
    TRIP_SERVICE_MAX_CONCURRENCY: int = setting(
        INTEGER,
        2,
        "trip service calls in flight per process; keep it below `GUNICORN_THREADS` so a hung trip service"
        " cannot take every thread",
        bounds=(1, 1000),
    )
    TRIP_SERVICE_QUEUE_TIMEOUT: float = setting(
        NUMBER,
        0.25,
        "seconds a charge waits for one of those slots before `503 trip_service_unavailable`",
        bounds=(0.0, 60.0),
    )
    TRIP_SERVICE_BREAKER_THRESHOLD: int = setting(
        INTEGER,
        5,
        "trip service failures in a row (timeout, refused, 5xx, no free slot) that open the circuit: charges"
        " then get `503` at once",
        bounds=(1, 1000),
    )
    TRIP_SERVICE_BREAKER_RESET: float = setting(
        NUMBER,
        2.0,
        "seconds the circuit stays open before one trial call decides whether it closes",
        bounds=(0.01, 3600.0),
    )

    API_KEYS: dict[str, str] = setting(  # noqa: RUF009
        KEY_DIGESTS,
        {},
        "`name:key` entries, comma-separated; a key may be `sha256:<hex digest>` (see [api.md](api.md#access-control))",
        secret=True,
    )
    RATE_LIMIT_ENABLED: bool = setting(BOOLEAN, True, "apply the per-client rate limits below")
    RATE_LIMIT_DEFAULT: str = setting(RATE_LIMIT, "1000 per minute", "other `/v1` routes, per client")
    RATE_LIMIT_CHARGE: str = setting(RATE_LIMIT, "50 per minute", "charges per client")
    RATE_LIMIT_REFUND: str = setting(RATE_LIMIT, "20 per minute", "refunds per client")
    RATE_LIMIT_STORAGE_URI: str = setting(
        STORAGE_URI,
        "memory://",
        "where counters live: `memory://` (per process) or `redis://host:6379/0` (shared)",
        hidden=True,
    )
    METRICS_REQUIRE_API_KEY: bool = setting(
        BOOLEAN, False, "also require an API key on `/metrics` and `/metrics/prometheus`"
    )
    TRUSTED_PROXY_COUNT: int = setting(
        INTEGER,
        0,
        "proxies in front of the service whose `X-Forwarded-For` is believed; 0 = use the socket address",
        bounds=(0, 10),
    )

    CURRENCY: str = setting(
        CURRENCY_CODE,
        "INR",
        "ISO 4217 code (any case) stored on each payment; fares, holds and captures round half-up to its"
        " smallest unit (the paisa for INR, the yen for JPY). Codes ISO 4217 does not list, ones without a"
        " minor unit (`XXX`, `XAU`) and three-decimal ones (`BHD`, `KWD`) stop start-up, and so does a"
        " currency Stripe counts more coarsely than ISO 4217 (`MGA`) with `GATEWAY=stripe`",
    )
    BASE_FARE: Decimal = setting(  # noqa: RUF009
        MONEY,
        Decimal("5.00"),
        "exact decimal; with `RATE_PER_KM`, a 1,000 km trip at the highest `SURGE_MULTIPLIERS` level must price"
        " within the largest storable amount (99,999,999.99; 99,999,999 in a zero-decimal currency) or start-up"
        " stops naming both",
    )
    RATE_PER_KM: Decimal = setting(MONEY, Decimal("2.50"), "exact decimal")  # noqa: RUF009
    SURGE_MULTIPLIERS: dict[str, Decimal] = setting(  # noqa: RUF009
        SURGE_TABLE,
        {"LOW": Decimal("1.0"), "MEDIUM": Decimal("1.2"), "HIGH": Decimal("1.5")},
        "`LEVEL:multiplier` pairs",
    )
    CANCELLATION_FEE: Decimal = setting(  # noqa: RUF009
        MONEY, Decimal("3.00"), "exact decimal, charged as it is: no more decimals than `CURRENCY` has"
    )
    HOLD_MULTIPLIER: Decimal = setting(  # noqa: RUF009
        FACTOR,
        Decimal("1.25"),
        "a hold (`POST /v1/payments/authorize` without `amount`) is the trip's fare x this, so a longer ride"
        " than estimated still fits; exact decimal",
        bounds=(Decimal(1), Decimal(10)),
    )
    HOLD_TTL: int = setting(
        INTEGER,
        604800,
        "seconds a hold stays `AUTHORIZED`; reconciliation voids older ones (card networks release"
        " authorizations after about 7 days)",
        bounds=(1, 30 * 86400),
    )
    IDEMPOTENCY_KEY_TTL: int = setting(
        INTEGER, 86400, "seconds an idempotency key is remembered", bounds=(60, 365 * 86400)
    )
    IDEMPOTENCY_LOCK_TIMEOUT: int = setting(
        INTEGER,
        60,
        "seconds after which a key held by a request whose process died may be taken over (a request that"
        " answers gives its key back itself)",
        bounds=(1, 3600),
    )
    GATEWAY_SUCCESS_RATE: float = setting(
        NUMBER,
        0.8,
        "simulated gateway: share of CARD/WALLET/UPI charges approved (CASH always is)",
        bounds=(0.0, 1.0),
    )
    GATEWAY_PENDING_RATE: float = setting(
        NUMBER, 0.0, "simulated gateway: share of charges left undecided (`PENDING`)", bounds=(0.0, 1.0)
    )
    GATEWAY: str = setting(GATEWAY_NAME, "simulator", _gateway_meaning())
    GATEWAY_SETTLE_SECONDS: float = setting(
        NUMBER,
        30.0,
        "simulated gateway: an undecided charge or refund is decided at the first look-up this many seconds"
        " after it was made",
        bounds=(0.0, 86400.0),
    )
    GATEWAY_TIMEOUT: float = setting(
        NUMBER,
        10.0,
        "seconds a call to Stripe may take; no answer leaves the payment `PENDING` for reconciliation",
        bounds=(0.1, 120.0),
    )
    STRIPE_API_KEY: str | None = setting(
        TEXT, None, "Stripe secret key (`sk_test_...` for test mode); required with `GATEWAY=stripe`", secret=True
    )
    STRIPE_API_BASE: str | None = setting(
        HTTP_URL, None, "Stripe API address; unset: Stripe itself; set for a local server such as localstripe"
    )
    STRIPE_WEBHOOK_SECRETS: tuple[str, ...] = setting(
        WEBHOOK_SECRETS,
        (),
        "Stripe webhook endpoint signing secrets (`whsec_...`), comma-separated, several while one is rotated;"
        " required with `GATEWAY=stripe` in production (the webhook endpoint that uses them is planned)",
        secret=True,
    )
    RECONCILE_INTERVAL: float = setting(
        NUMBER,
        60.0,
        "seconds between reconciliation passes of the background loop in each process; `0` turns it off",
        bounds=(0.0, 86400.0),
    )
    RECONCILE_MIN_AGE: float = setting(
        NUMBER,
        60.0,
        "seconds a `PENDING` payment or refund is left alone before reconciliation looks it up",
        bounds=(0.0, 86400.0),
    )
    RECONCILE_NO_RECORD_AFTER: float = setting(
        NUMBER,
        900.0,
        "seconds after which a `PENDING` payment the gateway has no record of becomes `FAILED`"
        " (`GATEWAY_NO_RECORD`); younger ones are sent to the gateway again under the same key",
        bounds=(0.0, 30 * 86400.0),
    )
    RECONCILE_BATCH_SIZE: int = setting(INTEGER, 50, "rows a reconciliation pass takes at a time", bounds=(1, 1000))
    NOTIFY_DISPATCHER_ENABLED: bool = setting(BOOLEAN, True, "run a delivery thread in each process")
    NOTIFY_MAX_ATTEMPTS: int = setting(
        INTEGER, 10, "deliveries tried before a notification is marked `DEAD`", bounds=(1, 100)
    )
    NOTIFY_BACKOFF_BASE: float = setting(NUMBER, 1.0, "seconds: first retry delay", bounds=(0.01, 3600.0))
    NOTIFY_BACKOFF_MAX: float = setting(NUMBER, 300.0, "seconds: cap of the retry delay", bounds=(0.01, 86400.0))
    NOTIFY_POLL_INTERVAL: float = setting(
        NUMBER, 1.0, "seconds between outbox polls when nothing woke the dispatcher", bounds=(0.01, 60.0)
    )
    NOTIFY_BATCH_SIZE: int = setting(INTEGER, 20, "rows claimed per pass", bounds=(1, 1000))
    NOTIFY_RETENTION: int = setting(
        INTEGER,
        7 * 86400,
        "seconds a delivered notification is kept before housekeeping deletes it (its id deduplicates"
        " repeats only while it is kept); dead ones are kept for operators",
        bounds=(3600, 365 * 86400),
    )
    HOUSEKEEPING_INTERVAL: float = setting(
        NUMBER,
        300.0,
        "seconds between the background purges of expired idempotency keys and delivered notifications in"
        " each process, in batches of 1,000; `0` turns them off (then run `manage.py purge`)",
        bounds=(0.0, 86400.0),
    )
    NOTIFY_SIGNING_SECRET: str | None = setting(
        TEXT,
        None,
        "signs every notification (`Payment-Signature` header, see [api.md](api.md#notifications)); no default;"
        " unset: sent unsigned, with a warning at start",
        secret=True,
    )

    MAX_CONTENT_LENGTH: int = setting(
        INTEGER, 64 * 1024, "largest request body, in bytes", bounds=(1, 1 << 30), from_env=False
    )
    TESTING: bool = setting(BOOLEAN, False, "Flask's testing mode (set by the test suite)", from_env=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, refuse_unsafe: bool = True) -> Config:
        """Build a Config from `env` (default: `.env` merged under os.environ); raise ConfigError if invalid.

        A variable that is unset or blank takes its default. Every invalid value is reported at once, one
        line each; then contradictions between settings, and (in production, unless `refuse_unsafe` is
        False) settings unsafe for real money.
        """
        env = load_environment() if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in SETTINGS:
            text = env.get(spec.name) if spec.from_env else None
            if text is not None and text.strip():
                try:
                    values[spec.name] = spec.read(text.strip())
                except ConfigError as exc:
                    problems.extend(exc.problems)
        if problems:
            raise ConfigError(*problems)
        config = cls(**values)
        config.check_consistency(refuse_unsafe=refuse_unsafe)
        return config

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Config:
        """Return a copy with some fields replaced (used by tests and tools).

        Values are Python values of the declared type (an int will do for a float); each is checked as
        its environment variable would be. Unknown names, wrong types and values out of bounds are an error.
        """
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(_BY_NAME))
        if unknown:
            raise ConfigError(f"unknown configuration names: {', '.join(unknown)}")
        config = dataclasses.replace(self, **{name: _BY_NAME[name].check(value) for name, value in overrides.items()})
        config.check_consistency()
        return config

    def check_consistency(self, *, refuse_unsafe: bool = True) -> None:
        """Refuse contradictory settings in any mode, and unsafe ones in production; every problem at once."""
        problems = self.contradictions()
        if refuse_unsafe and self.APP_ENV == "production":
            problems += self.production_findings()
        if problems:
            raise ConfigError(*problems)

    def contradictions(self) -> list[str]:
        """Combinations of settings that each look valid alone but cannot work together."""
        problems = self.fare_problems() + self.gateway_currency_problems()
        if self.GATEWAY == "stripe" and not self.STRIPE_API_KEY:
            problems.append("STRIPE_API_KEY is required when GATEWAY=stripe (a secret key such as sk_test_...)")
        if self.STRIPE_API_KEY and not self.STRIPE_API_KEY.startswith(("sk_", "rk_")):
            problems.append(
                "STRIPE_API_KEY must be a secret (sk_...) or restricted (rk_...) key; a publishable pk_ key cannot"
                " charge"
            )
        if self.GATEWAY == "simulator":
            for name in ("STRIPE_API_KEY", "STRIPE_API_BASE"):
                if getattr(self, name):
                    problems.append(
                        f"{name} is set but GATEWAY is simulator (its default): no card would reach Stripe; set"
                        f" GATEWAY=stripe, or unset {name}"
                    )
        if self.BASE_FARE == 0 and self.RATE_PER_KM == 0:
            problems.append(
                "BASE_FARE and RATE_PER_KM are both 0: every trip would price at 0 and no charge could succeed"
            )
        if self.RECONCILE_NO_RECORD_AFTER < self.RECONCILE_MIN_AGE:
            problems.append(
                f"RECONCILE_NO_RECORD_AFTER ({self.RECONCILE_NO_RECORD_AFTER:g}) must not be below RECONCILE_MIN_AGE"
                f" ({self.RECONCILE_MIN_AGE:g}): a payment cannot be unknown to the gateway before it is looked up"
            )
        # Only the background loop finds payments by itself; with it off (RECONCILE_INTERVAL=0),
        # reconciliation runs when an operator asks, on rows the operator chose to look at.
        if self.GATEWAY == "stripe" and self.RECONCILE_INTERVAL and self.RECONCILE_MIN_AGE <= self.GATEWAY_TIMEOUT:
            problems.append(
                f"RECONCILE_MIN_AGE ({self.RECONCILE_MIN_AGE:g}) must be above GATEWAY_TIMEOUT"
                f" ({self.GATEWAY_TIMEOUT:g}) with GATEWAY=stripe: the reconciliation loop would look up payments"
                " whose charge may still be waiting for Stripe's answer"
            )
        if self.NOTIFY_BACKOFF_BASE > self.NOTIFY_BACKOFF_MAX:
            problems.append(
                f"NOTIFY_BACKOFF_BASE ({self.NOTIFY_BACKOFF_BASE:g}) must not be above NOTIFY_BACKOFF_MAX"
                f" ({self.NOTIFY_BACKOFF_MAX:g}), the cap of every retry delay"
            )
        return problems

    def production_findings(self) -> list[str]:
        """Settings that are fine for trying the service but unsafe with real riders and real money."""
        findings = []
        if self.GATEWAY == "simulator":
            findings.append(
                "GATEWAY is simulator (also its default): it moves no money and declines a share of card charges"
                " at random; set GATEWAY=stripe"
            )
        if self.TRIP_SERVICE_MOCK:
            findings.append(
                "TRIP_SERVICE_MOCK=true prices a made-up 10.5 km trip whenever the trip service cannot answer;"
                " set it to false"
            )
        if self.DEBUG:
            findings.append("DEBUG=true is for development (readable logs, not JSON); set it to false")
        if not self.API_KEYS:
            findings.append("API_KEYS is not set: every /v1 route would be open to anyone; give each client its key")
        if not self.NOTIFY_SIGNING_SECRET:
            findings.append(
                "NOTIFY_SIGNING_SECRET is not set: notifications would go out unsigned, so receivers cannot tell"
                " them from forgeries"
            )
        if (
            self.GATEWAY == "stripe"
            and self.STRIPE_API_KEY
            and self.STRIPE_API_KEY.startswith(("sk_test_", "rk_test_"))
        ):
            findings.append(
                "STRIPE_API_KEY is a test-mode key (sk_test_/rk_test_): Stripe moves no real money with it; use the"
                " live key"
            )
        if self.GATEWAY == "stripe" and self.STRIPE_API_BASE:
            findings.append(
                f"STRIPE_API_BASE is set ({self.STRIPE_API_BASE}): payments would go to that server, not Stripe;"
                " unset it"
            )
        if self.GATEWAY == "stripe" and not self.STRIPE_WEBHOOK_SECRETS:
            findings.append(
                "STRIPE_WEBHOOK_SECRETS is not set with GATEWAY=stripe: Stripe's events (disputes, late"
                " outcomes) could not be verified; set the endpoint's whsec_ secret"
            )
        return findings

    def deploy_findings(self) -> list[str]:
        """Everything `manage.py check --deploy` reports: contradictions, unsafe settings, and the mode itself."""
        findings = self.contradictions() + self.production_findings()
        if self.APP_ENV != "production":
            findings.append(
                "APP_ENV is development (its default): the service would start with unsafe settings instead of"
                " refusing them; set APP_ENV=production"
            )
        return findings

    def fare_problems(self) -> list[str]:
        """Fare settings under which an ordinary trip could not be stored as a payment in CURRENCY."""
        currency, largest = self.CURRENCY, max_amount(self.CURRENCY)
        if not fits_currency(self.CANCELLATION_FEE, currency):
            # Charged as it is, so it must be an amount of the currency (a trip's fare is rounded instead).
            return [
                f"CANCELLATION_FEE ({self.CANCELLATION_FEE}) has more decimals than CURRENCY={currency} has"
                f" ({minor_unit_exponent(currency)} in ISO 4217): give a whole number of its smallest unit"
            ]
        level, surge = max(self.SURGE_MULTIPLIERS.items(), key=lambda item: item[1])
        fare = to_minor_unit((self.BASE_FARE + ORDINARY_TRIP_KM * self.RATE_PER_KM) * surge, currency)
        if fare > largest:
            return [
                f"BASE_FARE + {ORDINARY_TRIP_KM} km x RATE_PER_KM at the highest SURGE_MULTIPLIERS level"
                f" ({level} {surge}) is {fare} {currency}, above the largest payment amount {largest}:"
                " lower BASE_FARE or RATE_PER_KM"
            ]
        hold = to_minor_unit(
            (self.BASE_FARE + ORDINARY_TRIP_KM * self.RATE_PER_KM) * surge * self.HOLD_MULTIPLIER, currency
        )
        if hold > largest:
            return [
                f"The hold of a {ORDINARY_TRIP_KM} km trip at the highest SURGE_MULTIPLIERS level x HOLD_MULTIPLIER"
                f" ({self.HOLD_MULTIPLIER}) is {hold} {currency}, above the largest payment amount {largest}:"
                " lower HOLD_MULTIPLIER, BASE_FARE or RATE_PER_KM"
            ]
        return []

    def gateway_currency_problems(self) -> list[str]:
        """A CURRENCY whose smallest ISO 4217 unit the gateway cannot move (MGA cents at Stripe)."""
        if self.GATEWAY != "stripe":
            return []
        iso, stripe = minor_unit_exponent(self.CURRENCY), stripe_decimals(self.CURRENCY)
        if stripe < iso:
            # Fares are rounded to ISO's unit; Stripe's coarser one would refuse most of them at the gateway.
            return [
                f"CURRENCY={self.CURRENCY} cannot be used with GATEWAY=stripe: ISO 4217 gives {self.CURRENCY}"
                f" {iso} decimals but Stripe takes only {stripe}, so most fares could not be charged;"
                " use GATEWAY=simulator or another CURRENCY"
            ]
        return []

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


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata[_SPEC], name=f.name) for f in dataclasses.fields(Config)
)
_BY_NAME = {spec.name: spec for spec in SETTINGS}


def markdown_table() -> str:
    """The configuration table of docs/configuration.md: one row per environment variable, in declaration order."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for spec in SETTINGS:
        if spec.from_env:
            meaning = spec.meaning.replace("|", "\\|")
            if spec.bounds is not None:
                # Start-up refuses a value outside them, naming the variable.
                meaning += f" (from {spec.bounds[0]} to {spec.bounds[1]})"
            rows.append(f"| `{spec.name}` | {spec.shown_default()} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
