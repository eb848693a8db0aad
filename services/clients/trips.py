"""The trip service: `GET {TRIP_SERVICE_URL}/v1/trips/{id}`, read strictly and guarded against a sick peer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import requests

from config import Config
from services.clients.http import internal_session
from utils.errors import DomainError
from utils.helpers import MAX_BIGINT
from utils.logger import get_logger
from utils.metrics import DEPENDENCY_REJECTIONS
from utils.outage import DependencyWatch
from utils.resilience import Bulkhead, CircuitBreaker

logger = get_logger(__name__)

MAX_DISTANCE_KM = Decimal("10000")


@dataclass(frozen=True, slots=True)
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


class TripServiceUnavailableError(DomainError):
    """The trip service could not answer (down, timed out, or 5xx)."""

    code = "trip_service_unavailable"

    def __init__(self) -> None:
        """The same sentence whatever went wrong (the log has the reason)."""
        super().__init__("The trip service is unavailable; retry shortly.")


class TripServiceBadResponseError(DomainError):
    """The trip service answered, but not with something we can use."""

    code = "trip_service_bad_response"

    def __init__(self, reason: str) -> None:
        """Say what was unusable."""
        super().__init__(
            f"The trip service gave an unusable answer: {reason}.",
        )


class TripNotFoundError(DomainError):
    """The trip service does not know the trip."""

    code = "trip_not_found"

    def __init__(self, trip_id: int) -> None:
        """Name the trip (a 400, as the contract says: the charge request refers to a bad trip)."""
        super().__init__(f"Trip {trip_id} was not found.", trip_id=trip_id)


def _decimal(value: Any) -> Decimal | None:
    """Return a finite Decimal for a JSON number, else None (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _shown(value: Any) -> str:
    """A value of the trip service's answer as a message shows it: numbers as written, the rest quoted, short."""
    text = str(value) if isinstance(value, int | Decimal) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        raise TripServiceBadResponseError(
            f"the distance {_shown(raw_distance)} is not a number of kilometres from 0 to {MAX_DISTANCE_KM}"
        )
    if status == "COMPLETED" and distance is None:
        raise TripServiceBadResponseError("a completed trip without a distance")

    surge = Decimal("1.0")
    if payload.get("surge_multiplier") is not None:
        parsed = _decimal(payload["surge_multiplier"])
        if parsed is None or not Decimal(0) < parsed <= 10:
            raise TripServiceBadResponseError(
                f"the surge multiplier {_shown(payload['surge_multiplier'])} is not a number above 0 and at most 10"
            )
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
        self.watch = DependencyWatch("trip service", logger)

    def _fetch(self, trip_id: int) -> requests.Response:
        """GET the trip; a refused/reset connection is retried once, a timeout is not (it already cost time)."""
        url = f"{self._url}/v1/trips/{trip_id}"
        try:
            return self._session.get(url, timeout=self._timeout)
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout):
                raise
            logger.debug("trip service connection failed; retrying once", extra={"trip_id": trip_id})
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
        self.watch.succeeded()
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
            self.watch.failed(reason, trip_id=trip_id)
            logger.warning(
                "trip service unavailable: charging the MOCK trip because TRIP_SERVICE_MOCK=true",
                extra={"trip_id": trip_id, "reason": reason},
            )
            return Trip(trip_id, "COMPLETED", MOCK_TRIP_DISTANCE_KM, Decimal("1.0"), mock=True)
        self.watch.failed(reason, trip_id=trip_id)
        raise TripServiceUnavailableError()
