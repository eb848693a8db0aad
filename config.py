"""Service configuration, read once from the environment (and `.env`) and validated up front.

Each setting is declared once, as a field of `Config`: its type, default, bounds and meaning. The same
declaration reads it from the environment (`Config.from_env`), checks an override given as a Python
value (`Config.with_overrides`) and writes the configuration table of docs/configuration.md (`python config.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from services.gateways.registry import GATEWAYS
from utils import config_checks
from utils.settings import (
    BOOLEAN,
    CHOICE,
    CURRENCY_CODE,
    FACTOR,
    HTTP_URL,
    INTEGER,
    KEY_DIGESTS,
    LOG_LEVELS,
    MONEY,
    NUMBER,
    POSTGRES_URL,
    RATE_LIMIT,
    SPEC_KEY,
    STORAGE_URI,
    SURGE_TABLE,
    TEXT,
    WEBHOOK_SECRETS,
    ConfigError,
    Kind,
    Setting,
    checked_text,
    load_environment,
    read_choice,
    setting,
)


def _read_gateway(setting: Setting, text: str) -> str:
    """The name of a gateway of the registry's table, read when asked so that one registered later counts."""
    return read_choice(dataclasses.replace(setting, choices=tuple(GATEWAYS)), text)


def _gateway_meaning() -> str:
    """GATEWAY's documentation, from the registry's table: each gateway with what it is."""
    named = [f"`{name}` ({kind.about})" for name, kind in GATEWAYS.items()]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    return (
        f"the gateway new payments use (each payment keeps the one that made it): {listed}; CASH never calls a gateway"
    )


GATEWAY_NAME = Kind(_read_gateway, checked_text(_read_gateway))  # a CHOICE among services/gateways/registry.py's


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
    LOG_LEVEL: str = setting(CHOICE, "INFO", "`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`", choices=LOG_LEVELS)
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
        return config_checks.contradictions(self)

    def production_findings(self) -> list[str]:
        """Settings that are fine for trying the service but unsafe with real riders and real money."""
        return config_checks.production_findings(self)

    def deploy_findings(self) -> list[str]:
        """What production refuses, and what production mode itself needs: a deployment's checklist."""
        return config_checks.deploy_findings(self)

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
    dataclasses.replace(f.metadata[SPEC_KEY], name=f.name) for f in dataclasses.fields(Config)
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
