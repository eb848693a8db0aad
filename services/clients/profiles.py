"""The rider and driver services, asked for the public details a receipt shows (best effort)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Protocol

import requests

from config import Config
from services.clients.http import internal_session
from utils.logger import get_logger
from utils.outage import DependencyWatch

logger = get_logger(__name__)


class ProfileClient(Protocol):
    """Looks up riders and drivers for receipts; returns None whenever it cannot (never raises)."""

    def get_rider(self, rider_id: int) -> dict[str, Any] | None:
        """Return the rider's public details."""
        ...

    def get_driver(self, driver_id: int) -> dict[str, Any] | None:
        """Return the driver's public details."""
        ...


MAX_PROFILE_FIELDS = 30
MAX_PROFILE_TEXT = 200


def _clean(text: Any) -> str:
    """Shorten a string and drop NUL characters, which PostgreSQL text and JSONB cannot hold."""
    return str(text)[:MAX_PROFILE_TEXT].replace("\x00", "")


def _modest_number(value: Any) -> bool:
    """True for a finite JSON number small enough to store and print as is."""
    return isinstance(value, int | Decimal) and Decimal(value).is_finite() and abs(value) < 10**15


def _scalar_fields(payload: Any) -> dict[str, Any] | None:
    """Keep only short scalar fields of a profile, so a receipt never stores whatever a peer sends."""
    if not isinstance(payload, dict):
        return None
    kept: dict[str, Any] = {}
    for key, value in list(payload.items())[:MAX_PROFILE_FIELDS]:
        if isinstance(value, str):
            kept[_clean(key)] = _clean(value)
        elif value is None or isinstance(value, bool) or _modest_number(value):
            kept[_clean(key)] = value
    return kept


class HttpProfileClient:
    """`GET {RIDER_SERVICE_URL}/v1/riders/{id}` and `GET {DRIVER_SERVICE_URL}/v1/drivers/{id}`, best effort."""

    def __init__(self, config: Config, session: requests.Session | None = None) -> None:
        """Use the short RECEIPT_LOOKUP_TIMEOUT for both connect and read."""
        self._riders = config.RIDER_SERVICE_URL
        self._drivers = config.DRIVER_SERVICE_URL
        timeout = config.RECEIPT_LOOKUP_TIMEOUT
        self._timeout = (min(timeout, config.HTTP_CONNECT_TIMEOUT), timeout)
        self._session = session or internal_session()
        self._watches = {
            self._riders: DependencyWatch("rider service", logger),
            self._drivers: DependencyWatch("driver service", logger),
        }

    def _get(self, base: str, url: str) -> dict[str, Any] | None:
        """Fetch one profile from the service at `base`; any failure is None (an outage is logged once)."""
        watch = self._watches[base]
        try:
            response = self._session.get(url, timeout=self._timeout)
        except requests.RequestException as exc:
            watch.failed(type(exc).__name__)
            return None
        if response.status_code >= 500:
            watch.failed(f"HTTP {response.status_code}")
            return None
        watch.succeeded()
        if response.status_code != 200:
            return None
        try:
            return _scalar_fields(json.loads(response.text, parse_float=Decimal))
        except (ValueError, RecursionError):
            logger.info("profile answer unusable", extra={"url_path": url.rsplit("/", 3)[-3:]})
            return None

    def get_rider(self, rider_id: int) -> dict[str, Any] | None:
        """Return the rider's details or None."""
        return self._get(self._riders, f"{self._riders}/v1/riders/{rider_id}")

    def get_driver(self, driver_id: int) -> dict[str, Any] | None:
        """Return the driver's details or None."""
        return self._get(self._drivers, f"{self._drivers}/v1/drivers/{driver_id}")
