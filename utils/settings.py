"""How a setting is declared, read and checked: the kinds of values, and the error naming the setting.

`config.Config` declares each setting once with `setting(kind, default, meaning, ...)`; a `Kind` reads
the environment's text (`read`) and checks a Python override (`check`), each raising ConfigError
with a sentence that names the setting and says what is expected.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import limits
from dotenv import dotenv_values

from models.money import CurrencyError, minor_unit_exponent

_API_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The largest surge multiplier a level may have (surge pricing beyond 10x is a configuration slip).
MAX_SURGE = Decimal(10)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SPEC_KEY = "setting"  # the key of a field's metadata that holds its Setting


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


def checked_text(read: Callable[[Setting, str], Any]) -> Callable[[Setting, Any], Any]:
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


def read_choice(setting: Setting, text: str) -> str:
    """One of a fixed set of words, in any case; stored as the set spells it."""
    for choice in setting.choices:
        if text.upper() == choice.upper():
            return choice
    raise ConfigError(f"{setting.name} must be one of {', '.join(setting.choices)}, got {text!r}")


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
TEXT = Kind(_read_text, checked_text(_read_text))
HTTP_URL = Kind(_read_http_url, checked_text(_read_http_url))
CHOICE = Kind(read_choice, checked_text(read_choice))
RATE_LIMIT = Kind(_read_rate_limit, checked_text(_read_rate_limit))
STORAGE_URI = Kind(_read_storage_uri, checked_text(_read_storage_uri))
CURRENCY_CODE = Kind(_read_currency, checked_text(_read_currency))
POSTGRES_URL = Kind(_read_database_url, checked_text(_read_database_url))
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
    metadata = {SPEC_KEY: spec}
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
