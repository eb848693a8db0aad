"""Other systems the service talks to: the trip service, the payment gateway, the rider and driver services.

Each sits behind a small class chosen at start-up (see `build_external_services`), so tests and
future real integrations swap the implementation without touching the charge logic.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import requests

from config import Config
from utils.errors import AppError
from utils.helpers import MAX_BIGINT
from utils.logger import get_logger
from utils.metrics import DEPENDENCY_REJECTIONS
from utils.resilience import Bulkhead, CircuitBreaker

logger = get_logger(__name__)

MAX_DISTANCE_KM = Decimal("10000")


def internal_session() -> requests.Session:
    """A session for calls to sibling services.

    trust_env is off: these calls never go through HTTP(S)_PROXY settings, and scanning the
    environment for them cost ~0.8 ms per request (measured), more than the call itself on loopback.
    """
    session = requests.Session()
    session.trust_env = False
    return session


GATEWAY_ERROR_CODES = ("INSUFFICIENT_FUNDS", "CARD_DECLINED", "GATEWAY_ERROR")


@dataclass(frozen=True)
class Trip:
    """What the charge needs to know about a trip."""

    trip_id: int
    status: str
    distance_km: Decimal | None
    surge_multiplier: Decimal
    rider_id: int | None = None
    driver_id: int | None = None
    mock: bool = False  # the development mock trip, not an answer of the trip service


# The reference's development trip: 10.5 km at surge 1.0 (31.25 with the default fares).
MOCK_TRIP_DISTANCE_KM = Decimal("10.5")


class TripServiceUnavailableError(AppError):
    """The trip service could not answer (down, timed out, or 5xx)."""

    def __init__(self) -> None:
        """503 trip_service_unavailable."""
        super().__init__(
            "The trip service is unavailable; retry shortly.", status_code=503, code="trip_service_unavailable"
        )


class TripServiceBadResponseError(AppError):
    """The trip service answered, but not with something we can use."""

    def __init__(self, reason: str) -> None:
        """502 trip_service_bad_response."""
        super().__init__(
            f"The trip service gave an unusable answer: {reason}.",
            status_code=502,
            code="trip_service_bad_response",
        )


class TripNotFoundError(AppError):
    """The trip service does not know the trip."""

    def __init__(self, trip_id: int) -> None:
        """400 trip_not_found, as the contract says (the charge request refers to a bad trip)."""
        super().__init__(f"Trip {trip_id} was not found.", status_code=400, code="trip_not_found", trip_id=trip_id)


def _decimal(value: Any) -> Decimal | None:
    """Return a finite Decimal for a JSON number, else None (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def parse_trip(trip_id: int, payload: Any, surge_levels: dict[str, Decimal]) -> Trip:
    """Turn the trip service's JSON into a Trip, or raise TripServiceBadResponseError."""
    if not isinstance(payload, dict):
        raise TripServiceBadResponseError("the body is not a JSON object")
    status = payload.get("status")
    if not isinstance(status, str) or not status.strip():
        raise TripServiceBadResponseError("no trip status")
    status = status.strip().upper()

    raw_distance = payload.get("distance_km", payload.get("distance"))
    distance = None if raw_distance is None else _decimal(raw_distance)
    if raw_distance is not None and (distance is None or not 0 <= distance <= MAX_DISTANCE_KM):
        raise TripServiceBadResponseError("the distance is not a usable number")
    if status == "COMPLETED" and distance is None:
        raise TripServiceBadResponseError("a completed trip without a distance")

    surge = Decimal("1.0")
    if payload.get("surge_multiplier") is not None:
        parsed = _decimal(payload["surge_multiplier"])
        if parsed is None or not Decimal(0) < parsed <= 10:
            raise TripServiceBadResponseError("the surge multiplier is not a usable number")
        surge = parsed
    elif payload.get("surge_level") is not None:
        level = payload["surge_level"]
        if not isinstance(level, str) or level.strip().upper() not in surge_levels:
            raise TripServiceBadResponseError("unknown surge level")
        surge = surge_levels[level.strip().upper()]

    # The answer must be about the trip asked for; a trip service that mixes answers up must never
    # get one trip's fare charged to another.
    answered_id = payload.get("trip_id")
    if answered_id is not None and (isinstance(answered_id, bool) or str(answered_id) != str(trip_id)):
        raise TripServiceBadResponseError(f"it answered for trip {answered_id!r} instead of trip {trip_id}")
    return Trip(trip_id, status, distance, surge, _party_id(payload, "rider_id"), _party_id(payload, "driver_id"))


def _party_id(payload: dict[str, Any], name: str) -> int | None:
    """The trip's rider or driver id: absent/null is None; anything but a storable positive id is unusable."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_BIGINT:
        # Stored as null it would lose who pays; stored as is it would not fit the column (a 500).
        raise TripServiceBadResponseError(f"the {name} is not a positive id")
    return value


class TripClient(Protocol):
    """Looks up a trip; raises TripNotFoundError, TripServiceUnavailableError or TripServiceBadResponseError."""

    def get_trip(self, trip_id: int) -> Trip:
        """Return the trip."""
        ...


class HttpTripClient:
    """`GET {TRIP_SERVICE_URL}/v1/trips/{id}` with bounded timeouts and one quick retry on connection errors.

    A bulkhead caps the calls in flight and a circuit breaker stops calling a trip service that
    keeps failing (timeouts, refused connections, 5xx), so a hung trip service costs a charge
    microseconds, not a read timeout, and cannot tie up the worker's threads.
    """

    def __init__(self, config: Config, session: requests.Session | None = None) -> None:
        """Take the URL, timeouts, surge table and the mock-trip switch from config."""
        self._url = config.TRIP_SERVICE_URL
        self._timeout = (config.HTTP_CONNECT_TIMEOUT, config.HTTP_READ_TIMEOUT)
        self._surge_levels = config.SURGE_MULTIPLIERS
        self._mock = config.TRIP_SERVICE_MOCK
        self._session = session or internal_session()
        self._bulkhead = Bulkhead(config.TRIP_SERVICE_MAX_CONCURRENCY, config.TRIP_SERVICE_QUEUE_TIMEOUT)
        self.breaker = CircuitBreaker(config.TRIP_SERVICE_BREAKER_THRESHOLD, config.TRIP_SERVICE_BREAKER_RESET)

    def _fetch(self, trip_id: int) -> requests.Response:
        """GET the trip; a refused/reset connection is retried once, a timeout is not (it already cost time)."""
        url = f"{self._url}/v1/trips/{trip_id}"
        try:
            return self._session.get(url, timeout=self._timeout)
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout):
                raise
            logger.info("trip service connection failed; retrying once", extra={"trip_id": trip_id})
            return self._session.get(url, timeout=self._timeout)

    def get_trip(self, trip_id: int) -> Trip:
        """Return the trip, or (TRIP_SERVICE_MOCK only) the mock trip when the trip service cannot answer."""
        response, reason = self._guarded_fetch(trip_id)
        if response is None:
            return self._unavailable(trip_id, reason)
        if response.status_code == 404:
            raise TripNotFoundError(trip_id)
        if response.status_code >= 500:
            return self._unavailable(trip_id, f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise TripServiceBadResponseError(f"HTTP {response.status_code}")
        try:
            # Decimal for every JSON number, so distances stay exact.
            payload = json.loads(response.text, parse_float=Decimal)
        except ValueError:
            raise TripServiceBadResponseError("the body is not JSON") from None
        except RecursionError:
            raise TripServiceBadResponseError("the body is nested too deeply") from None
        return parse_trip(trip_id, payload, self._surge_levels)

    def _guarded_fetch(self, trip_id: int) -> tuple[requests.Response | None, str]:
        """The trip service's response, or None and why it could not be asked or did not answer."""
        if not self.breaker.allow():
            DEPENDENCY_REJECTIONS.labels("trip_service", "circuit_open").inc()
            return None, "circuit open"
        healthy = False
        try:
            with self._bulkhead.slot() as acquired:
                if not acquired:
                    DEPENDENCY_REJECTIONS.labels("trip_service", "bulkhead_full").inc()
                    return None, "too many calls in flight"
                try:
                    response = self._fetch(trip_id)
                except requests.RequestException as exc:
                    return None, type(exc).__name__
            healthy = response.status_code < 500
            return response, f"HTTP {response.status_code}"
        finally:
            # Every call the breaker allowed reports back, or a half-open trial would never end.
            if healthy:
                self.breaker.record_success()
            else:
                self.breaker.record_failure()

    def _unavailable(self, trip_id: int, reason: str) -> Trip:
        """Raise 503, or with TRIP_SERVICE_MOCK fall back to the development mock trip (marked as such)."""
        if self._mock:
            logger.warning(
                "trip service unavailable: charging the MOCK trip because TRIP_SERVICE_MOCK=true",
                extra={"trip_id": trip_id, "reason": reason},
            )
            return Trip(trip_id, "COMPLETED", MOCK_TRIP_DISTANCE_KM, Decimal("1.0"), mock=True)
        logger.warning("trip service unavailable", extra={"trip_id": trip_id, "reason": reason})
        raise TripServiceUnavailableError()


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer: SUCCESS, FAILED (with an error code) or PENDING (outcome not known yet)."""

    status: str
    error_code: str | None = None


class PaymentGateway(Protocol):
    """Takes money. `reference` is unique per payment and is what a real gateway would de-duplicate on."""

    def charge(self, reference: str, amount: Decimal, currency: str, method: str) -> GatewayResult:
        """Attempt the charge once."""
        ...


class SimulatedGateway:
    """The contract's simulator: CASH always succeeds; others succeed with GATEWAY_SUCCESS_RATE."""

    def __init__(self, success_rate: float, pending_rate: float = 0.0, rng: random.Random | None = None) -> None:
        """`pending_rate` is the share of non-cash attempts that end without a verdict (a gateway timeout)."""
        self._success_rate = success_rate
        self._pending_rate = pending_rate
        self._rng = rng or random.SystemRandom()

    def charge(self, reference: str, amount: Decimal, currency: str, method: str) -> GatewayResult:
        """Decide the outcome."""
        if method == "CASH":
            return GatewayResult("SUCCESS")
        if self._pending_rate and self._rng.random() < self._pending_rate:
            return GatewayResult("PENDING")
        if self._rng.random() < self._success_rate:
            return GatewayResult("SUCCESS")
        return GatewayResult("FAILED", self._rng.choice(GATEWAY_ERROR_CODES))


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

    def _get(self, url: str) -> dict[str, Any] | None:
        """Fetch one profile; any failure is None."""
        try:
            response = self._session.get(url, timeout=self._timeout)
            if response.status_code != 200:
                return None
            return _scalar_fields(json.loads(response.text, parse_float=Decimal))
        except (requests.RequestException, ValueError, RecursionError):
            logger.info("profile lookup failed", extra={"url_path": url.rsplit("/", 3)[-3:]})
            return None

    def get_rider(self, rider_id: int) -> dict[str, Any] | None:
        """Return the rider's details or None."""
        return self._get(f"{self._riders}/v1/riders/{rider_id}")

    def get_driver(self, driver_id: int) -> dict[str, Any] | None:
        """Return the driver's details or None."""
        return self._get(f"{self._drivers}/v1/drivers/{driver_id}")


@dataclass(frozen=True)
class ExternalServices:
    """The set of collaborators the services use."""

    trips: TripClient
    gateway: PaymentGateway
    profiles: ProfileClient


def build_external_services(config: Config) -> ExternalServices:
    """Choose the implementations from configuration."""
    return ExternalServices(
        trips=HttpTripClient(config),
        gateway=SimulatedGateway(config.GATEWAY_SUCCESS_RATE, config.GATEWAY_PENDING_RATE),
        profiles=HttpProfileClient(config),
    )
