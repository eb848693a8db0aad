"""Database-layer fixtures: a small connection pool on the test database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from config import Config
from database.pool import ConnectionPool


@pytest.fixture
def pool(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[ConnectionPool]:
    """A small pool on the test database."""
    pool = ConnectionPool(test_config.get_database_uri(), size=2, wait_timeout=0.5, connect_timeout=2)
    yield pool
    pool.close()
