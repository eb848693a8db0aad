"""PostgreSQL connection pool, its cursor, and the one-transaction context manager every service uses.

psycopg2 ships `ThreadedConnectionPool`, but it does not fit a threaded web server: it closes
a returned connection whenever it already holds `minconn` idle ones (so with minconn < maxconn
it reconnects on most requests, about 12x slower than reusing one here), it fails at once with
PoolError when exhausted instead of waiting, and it connects eagerly, so the service could not
start while the database is down. This small pool keeps connections, waits with a bound,
connects lazily, and drops connections that broke (e.g. after a database restart).

Statements marked `Prepared` (database.prepared) run as server-side prepared statements.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from database.prepared import Prepared, PreparingConnection
from utils.errors import DomainError
from utils.logger import get_logger
from utils.outage import DependencyWatch

logger = get_logger(__name__)

# Sent first in an `execute_together` message, the rest of it commits without waiting for its WAL
# to reach the disk. Only for writes whose loss in a crash is recoverable; each use says why.
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"

# Errors after which a connection cannot be trusted again.
BROKEN_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Cursor(psycopg2.extensions.cursor):
    """A cursor whose rows are plain dicts, and which runs `Prepared` statements as prepared statements.

    Rows are built with dict(zip(...)) in C: psycopg2's RealDictCursor fills each row through a
    Python __setitem__ per column, which took ~2 ms of a 100-row page.
    """

    _columns: list[str] | None = None

    def execute(self, query: Any, vars: Any = None) -> None:
        """Execute `query`; a `Prepared` one is prepared first if this session has not seen it."""
        self._columns = None
        known = getattr(self.connection, "prepared", None)
        if not isinstance(query, Prepared) or known is None:
            return super().execute(query, vars)
        if query.name not in known:
            # PREPARE is not transactional: it stays even if this transaction rolls back, and a
            # PREPARE that failed is not recorded, so `known` matches the session either way.
            super().execute(query.prepare)
            known.add(query.name)
        return super().execute(query.execute, vars)

    def execute_together(self, *statements: tuple[str, Mapping[str, Any]]) -> None:
        """Send several statements in one message (one round trip); the rows are the last one's.

        In a `single_statement` block PostgreSQL runs such a message as one implicit transaction:
        all of it commits, or none of it. This is how the charge's hot path keeps one round trip
        per transaction (psycopg2 would otherwise add one each for BEGIN and COMMIT).
        """
        known = getattr(self.connection, "prepared", None)
        parts = []
        for query, params in statements:
            if isinstance(query, Prepared) and known is not None:
                if query.name not in known:
                    # Prepared on its own first: a failed batch must not leave `known` out of step.
                    super().execute(query.prepare)
                    known.add(query.name)
                parts.append(self.mogrify(query.execute, params))
            else:
                parts.append(self.mogrify(query, params))
        self._columns = None
        super().execute(b";\n".join(parts))

    def _names(self) -> list[str]:
        """The result's column names (read once per statement)."""
        if self._columns is None:
            self._columns = [column.name for column in self.description or ()]
        return self._columns

    def fetchone(self) -> dict[str, Any] | None:
        """The next row as a dict, or None."""
        row = super().fetchone()
        return None if row is None else dict(zip(self._names(), row, strict=True))

    def fetchmany(self, size: int | None = None) -> list[dict[str, Any]]:
        """Up to `size` more rows as dicts."""
        names = self._names()
        rows = super().fetchmany() if size is None else super().fetchmany(size)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def fetchall(self) -> list[dict[str, Any]]:
        """The remaining rows as dicts."""
        names = self._names()
        return [dict(zip(names, row, strict=True)) for row in super().fetchall()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts, one at a time."""
        while (row := self.fetchone()) is not None:
            yield row


class DatabaseUnavailableError(DomainError):
    """The database could not be reached (or no connection was free in time)."""

    code = "database_unavailable"

    def __init__(self, message: str = "The payment database is unavailable; retry shortly.") -> None:
        """A retryable outage; the message may say which (pool exhausted, pool closed)."""
        super().__init__(message)


class IdsExhaustedError(DatabaseUnavailableError):
    """A table's id sequence has reached its maximum: no new row of that kind can be written."""

    code = "ids_exhausted"

    def __init__(self) -> None:
        """Say so without the SQL: nothing was written, and only an operator can make room."""
        super().__init__(
            "The payment database has run out of ids for new records; nothing was written. An operator must"
            " make room (see the README's operator notes) before new payments can be stored."
        )


# A database that is reachable but not migrated yet (make run serves before database_setup.py has
# run; a pod starts before the migration Job ends): background loops say so once, not every pass.
UNMIGRATED_ERRORS = (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn)


def unmigrated_reason(exc: psycopg2.Error) -> str:
    """One line for the log: what is missing, and what to run."""
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"not migrated ({first.strip()}): run python database_setup.py"


IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000


def session_settings(statement_timeout_ms: int) -> dict[str, str]:
    """The settings every session gets: startup options here, a pooler's connect_query behind one."""
    return {
        "timezone": "UTC",
        "statement_timeout": str(statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
        "tcp_keepalives_idle": "15",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }


class ConnectionPool:
    """A bounded, thread-safe pool of psycopg2 connections that are opened on demand."""

    def __init__(
        self,
        dsn: str,
        size: int,
        wait_timeout: float,
        connect_timeout: int,
        statement_timeout_ms: int = 0,
        application_name: str = "payment-service",
        prepare_statements: bool = True,
        session_options: bool = True,
    ) -> None:
        """Remember how to connect; no connection is opened until one is needed."""
        self._dsn = dsn
        self._connect_kwargs: dict[str, Any] = {
            # A plain connection runs `Prepared` statements as ordinary ones (for poolers such as
            # PgBouncer in transaction mode, where a session's prepared statements do not follow it).
            "connection_factory": PreparingConnection if prepare_statements else psycopg2.extensions.connection,
            "connect_timeout": connect_timeout,
            "application_name": application_name,
            # Client-side TCP keepalives: a dead server is noticed instead of waited on.
            "keepalives": 1,
            "keepalives_idle": 15,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if session_options:
            # UTC sessions make every TIMESTAMPTZ come back with a +00:00 offset. A session whose
            # client vanished mid-transaction (a network partition: no FIN, no RST) would keep its
            # row locks for hours under the server's defaults; the idle-in-transaction timeout and
            # the server's keepalives end it. No transaction of the service waits between statements
            # (gateway calls happen outside transactions), so the timeout never ends a live one.
            # (A pooler in transaction mode refuses startup options; its connect_query sets these.)
            self._connect_kwargs["options"] = " ".join(
                f"-c {name}={value}" for name, value in session_settings(statement_timeout_ms).items()
            )
        self.size = size
        self._wait_timeout = wait_timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: deque[psycopg2.extensions.connection] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self.watch = DependencyWatch("database", logger)

    def _connect(self) -> psycopg2.extensions.connection:
        """Open a new connection, translating failure into DatabaseUnavailableError."""
        try:
            conn = psycopg2.connect(self._dsn, **self._connect_kwargs)
        except psycopg2.OperationalError as exc:
            # The client's 503 keeps the generic message; the log says where and why (never the password),
            # once when connecting starts failing, then once more with the count when it works again.
            self.watch.failed(connection_failure_reason(exc), database=describe_dsn(self._dsn))
            raise DatabaseUnavailableError() from exc
        self.watch.succeeded()
        return conn

    @staticmethod
    def _looks_alive(conn: psycopg2.extensions.connection) -> bool:
        """Cheaply tell whether an idle connection is still usable, without a round trip."""
        if conn.closed:
            return False
        # An idle connection has nothing to read; a readable socket means the server closed it
        # or sent an error (e.g. terminated by a restart). We never LISTEN, so no notifications.
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def getconn(self) -> psycopg2.extensions.connection:
        """Borrow a connection, waiting up to the pool timeout for a free one."""
        if self._closed:
            raise DatabaseUnavailableError("The connection pool is closed.")
        if not self._slots.acquire(timeout=self._wait_timeout):
            logger.warning("database pool exhausted", extra={"pool_size": self.size})
            raise DatabaseUnavailableError("No database connection became free in time; retry shortly.")
        try:
            while True:
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
                if conn is None:
                    return self._connect()
                if self._looks_alive(conn):
                    return conn
                self._close_quietly(conn)
        except BaseException:
            self._slots.release()
            raise

    def putconn(self, conn: psycopg2.extensions.connection, discard: bool = False) -> None:
        """Give a connection back; broken or discarded ones are closed instead of kept."""
        try:
            keep = not (discard or self._closed or conn.closed)
            if keep and conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                try:
                    conn.rollback()
                except BROKEN_CONNECTION_ERRORS:
                    keep = False
            if keep:
                with self._lock:
                    self._idle.append(conn)
            else:
                self._close_quietly(conn)
        finally:
            self._slots.release()

    @contextmanager
    def transaction(self, single_statement: bool = False) -> Iterator[psycopg2.extensions.connection]:
        """Yield a connection inside one transaction: commit on success, roll back on error, always return it.

        `single_statement=True` is for a block that runs exactly one statement, which is then its
        own transaction; psycopg2 otherwise spends a round trip each on BEGIN and COMMIT.
        """
        conn = self.getconn()
        broken = False
        try:
            if single_statement:
                conn.autocommit = True
            yield conn
            conn.commit()
        except (psycopg2.errors.DuplicatePreparedStatement, psycopg2.errors.InvalidSqlStatementName) as exc:
            # Prepared statements belong to a server session; behind a pooler in transaction mode a
            # client's next transaction may run on another one. A deployment error, answered as an
            # outage (503, retryable) and named in the log, never as a 500.
            broken = True
            logger.error(
                "prepared statements do not survive this connection (a pooler in transaction mode?):"
                " set DB_PREPARED_STATEMENTS=false",
                extra={"error": str(exc).strip()},
            )
            raise DatabaseUnavailableError() from exc
        except psycopg2.errors.SequenceGeneratorLimitExceeded as exc:
            # Not the client's fault and not a bug of ours: the data left the sequence no room (e.g.
            # a loaded id near the top of BIGINT). Retryable only once an operator acts: 503, logged.
            broken = not self._rolled_back(conn)
            logger.error("an id sequence is exhausted: new rows cannot be stored", extra={"error": str(exc).strip()})
            raise IdsExhaustedError() from exc
        except BROKEN_CONNECTION_ERRORS as exc:
            # OperationalError also covers a statement timeout, a lock timeout or a deadlock, after
            # which the session is fine; only a connection that is gone (psycopg2 marks it closed)
            # or that cannot even roll back is dropped. Every case is a retryable 503 for the client.
            broken = bool(conn.closed) or not self._rolled_back(conn)
            logger.warning(
                "database connection lost" if broken else "database statement failed",
                extra={"error": str(exc).strip(), "pgcode": getattr(exc, "pgcode", None)},
            )
            raise DatabaseUnavailableError() from exc
        except psycopg2.DatabaseError as exc:
            # psycopg2 reports some lost connections as a plain DatabaseError ("server closed the
            # connection unexpectedly", seen when the server crashed mid-statement); it marks the
            # connection closed then. That is an outage (503), not an error in our SQL.
            broken = bool(conn.closed) or not self._rolled_back(conn)
            if conn.closed:
                logger.warning("database connection lost", extra={"error": str(exc).strip()})
                raise DatabaseUnavailableError() from exc
            raise
        except BaseException:
            broken = bool(conn.closed) or not self._rolled_back(conn)
            raise
        finally:
            if single_statement and not conn.closed:
                try:
                    conn.autocommit = False
                except BROKEN_CONNECTION_ERRORS:
                    broken = True
            self.putconn(conn, discard=broken)

    @staticmethod
    def _rolled_back(conn: psycopg2.extensions.connection) -> bool:
        """Roll back after a failed statement; False when the connection turned out to be unusable."""
        try:
            conn.rollback()
            return True
        except psycopg2.Error:
            return False

    @contextmanager
    def cursor(self, single_statement: bool = False) -> Iterator[Cursor]:
        """Yield a dict cursor inside one transaction (shorthand for services)."""
        with (
            self.transaction(single_statement) as conn,
            conn.cursor(cursor_factory=Cursor) as cur,
        ):
            yield cur

    def ping(self) -> bool:
        """Return True when a trivial query succeeds."""
        try:
            with self.cursor(single_statement=True) as cur:
                cur.execute("SELECT 1")
                return True
        except DatabaseUnavailableError:
            return False

    def idle_count(self) -> int:
        """Return how many connections sit idle in the pool."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close every idle connection and refuse new borrowers."""
        self._closed = True
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for conn in idle:
            self._close_quietly(conn)

    @staticmethod
    def _close_quietly(conn: psycopg2.extensions.connection) -> None:
        """Close a connection, ignoring errors from one that is already dead."""
        # Closing a dead socket may fail; there is nothing more to do about it.
        with contextlib.suppress(Exception):
            conn.close()


# libpq's wording of why a connection failed -> a few words for an operator (first match wins).
_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (r"connection refused", "connection refused"),
        (r"timeout expired|timed out", "timeout"),
        (r'database "([^"]*)" does not exist', 'unknown database "{0}"'),
        (r'password authentication failed for user "([^"]*)"', 'authentication failed for user "{0}"'),
        (r"no password supplied", "authentication failed: no password supplied"),
        (r'role "([^"]*)" does not exist', 'authentication failed: unknown user "{0}"'),
        (r"pg_hba\.conf", "authentication failed: no pg_hba.conf entry for this host, user and database"),
        (r'could not translate host name "([^"]*)"', 'unknown host "{0}"'),
        (r"no route to host|network is unreachable", "host unreachable"),
        (r"too many clients|remaining connection slots", "too many connections"),
        (r"the database system is (starting up|shutting down|in recovery mode)", "server {0}"),
    )
)
_LIBPQ_PREFIX = re.compile(r"^(connection to server (at|on) .*? failed: )?((FATAL|ERROR):\s*)?", re.IGNORECASE)


def connection_failure_reason(exc: BaseException) -> str:
    """Why connecting failed, in a few words (connection refused, unknown database "x", ...); no password."""
    text = str(exc).strip()
    for pattern, reason in _CONNECT_FAILURES:
        if found := pattern.search(text):
            return reason.format(*found.groups())
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return _LIBPQ_PREFIX.sub("", first_line)


def describe_dsn(dsn: str) -> str:
    """host:port/database of a libpq DSN or URI, without user or password (like Config.describe_database)."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return "the configured database"
    host = parts.get("host") or "local socket"
    return f"{'local socket' if host.startswith('/') else host}:{parts.get('port') or 5432}/{parts.get('dbname', '')}"


def wait_for_database(dsn: str, connect_timeout: int, deadline_seconds: float, where: str | None = None) -> None:
    """Block until a connection succeeds or the deadline passes (used by set-up scripts at start).

    On failure the error reads e.g. "cannot connect to 127.0.0.1:5999/payments: connection
    refused"; `where` names the database in it (default: host:port/database of `dsn`).
    """
    deadline = time.monotonic() + deadline_seconds
    delay = 0.25
    while True:
        try:
            psycopg2.connect(dsn, connect_timeout=connect_timeout).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                reason = connection_failure_reason(exc)
                if reason == "timeout":
                    reason = f"timeout after {connect_timeout}s"
                retried = f" (still failing after {deadline_seconds:g}s of retries)" if deadline_seconds > 0 else ""
                message = f"cannot connect to {where or describe_dsn(dsn)}: {reason}{retried}"
                raise DatabaseUnavailableError(message) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
