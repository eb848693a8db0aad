"""Health, readiness and the (cached, bounded) status of the services we depend on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import requests

from database.migrate import pending_migrations
from database.pool import ConnectionPool, DatabaseUnavailableError
from services.clients.http import internal_session
from utils.logger import get_logger

logger = get_logger(__name__)


class DependencyMonitor:
    """Checks `GET {url}/health` of each dependency, at most once per cache period, within one timeout."""

    def __init__(self, urls: dict[str, str], timeout: float, cache_seconds: float) -> None:
        """`urls` maps a dependency name (e.g. trip_service) to its base URL."""
        self._urls = urls
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._statuses = {name: "DOWN" for name in urls}
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(urls)), thread_name_prefix="dependency-check")
        self._session = internal_session()

    def _probe(self, url: str) -> str:
        """Return UP when the dependency answers its health endpoint with a 2xx."""
        try:
            response = self._session.get(f"{url}/health", timeout=(self._timeout, self._timeout))
            return "UP" if response.ok else "DOWN"
        except requests.RequestException:
            return "DOWN"

    def statuses(self) -> dict[str, str]:
        """Return UP/DOWN per dependency; refreshed in parallel when stale, never slower than the timeout."""
        if time.monotonic() - self._checked_at < self._cache_seconds:
            return dict(self._statuses)
        # One refresher at a time; concurrent callers get the last known answer instead of queueing.
        if not self._lock.acquire(blocking=False):
            return dict(self._statuses)
        try:
            futures = {name: self._executor.submit(self._probe, url) for name, url in self._urls.items()}
            deadline = time.monotonic() + self._timeout
            fresh = {}
            for name, future in futures.items():
                try:
                    fresh[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    fresh[name] = "DOWN"
            self._statuses = fresh
            self._checked_at = time.monotonic()
            return dict(fresh)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the checker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class HealthService:
    """Answers the questions of /health and /ready."""

    def __init__(self, pool: ConnectionPool, dependencies: DependencyMonitor) -> None:
        """Keep the pool and the dependency monitor."""
        self.pool = pool
        self.dependencies = dependencies

    def database_up(self) -> bool:
        """Return True when the database answers a trivial query."""
        return self.pool.ping()

    def ready(self) -> bool:
        """Return True when the database is reachable and every migration has been applied."""
        try:
            with self.pool.transaction() as conn:
                return not pending_migrations(conn)
        except DatabaseUnavailableError:
            return False
