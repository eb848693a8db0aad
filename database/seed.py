"""Load payments from a CSV file (the reference's `rhfd_payments.csv` format), all or nothing.

The reference header may be followed by an `amount_refunded` column. Every refunded amount becomes a
refund record (reason `imported`), so the ledger invariant holds for loaded rows too: a payment's
amount_refunded is the sum of its refund records and never exceeds its amount. Each loaded payment gets
its history as migration 0011 gave the rows before it: a PURCHASE, and a REFUND per refund record.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2.extensions
import psycopg2.extras

from models.money import MAX_AMOUNT, decimals_of, fits_currency
from models.payment import PAYMENT_METHODS
from models.states import LOADABLE
from utils.helpers import MAX_BIGINT

EXPECTED_HEADER = ["payment_id", "trip_id", "amount", "method", "status", "reference", "created_at"]
# The project's own file adds the refunded amount, which the reference format cannot express.
EXTENDED_HEADER = [*EXPECTED_HEADER, "amount_refunded"]
_INT_RE = re.compile(r"^[0-9]{1,19}$")
_MONEY_RE = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")
# The id sequence continues after the largest loaded id, so an id near the top of BIGINT would leave
# it no room (one at 9223372036854775807 made every later charge fail). Up to 10^15 leaves room for
# over 9 * 10^18 new payments, and every id stays exact in JavaScript clients (below 2^53).
MAX_LOADED_PAYMENT_ID = 10**15
_REFERENCE_RE = re.compile(r"^[\x21-\x7e]{1,100}$")

# A row whose payment_id is already present is left as it is, so a second load changes nothing. The one
# exception repairs what the old loader stored: the same PARTIALLY_REFUNDED payment with amount_refunded 0
# and no refund records gets the file's amount_refunded. `xmax = 0` marks a row this statement inserted
# (an updated row carries this transaction's id there), so inserts and repairs are counted apart.
INSERT_PAYMENTS = """
INSERT INTO payments AS p (payment_id, trip_id, amount, amount_refunded, currency, method, status, reference,
                           created_at, updated_at)
VALUES %s
ON CONFLICT (payment_id) DO UPDATE
   SET amount_refunded = EXCLUDED.amount_refunded,
       updated_at = now()
 WHERE p.status = 'PARTIALLY_REFUNDED'
   AND EXCLUDED.status = 'PARTIALLY_REFUNDED'
   AND p.amount_refunded = 0
   AND (p.trip_id, p.amount, p.reference) = (EXCLUDED.trip_id, EXCLUDED.amount, EXCLUDED.reference)
   AND NOT EXISTS (SELECT 1 FROM payment_refunds AS r WHERE r.payment_id = p.payment_id)
RETURNING p.payment_id, (p.xmax = 0) AS inserted
"""
INSERT_TEMPLATE = (
    "(%(payment_id)s, %(trip_id)s, %(amount)s, %(amount_refunded)s, %(currency)s, %(method)s, %(status)s,"
    " %(reference)s, %(created_at)s, %(created_at)s)"
)
# For the given payments, records as refunded whatever amount_refunded holds beyond their refund records
# (dated like the payment): a second load adds nothing, and REFUNDED rows of the old loader get theirs.
INSERT_IMPORTED_REFUNDS = """
INSERT INTO payment_refunds (payment_id, refund_amount, reason, created_at)
SELECT p.payment_id, p.amount_refunded - COALESCE(r.recorded, 0), 'imported', p.created_at
FROM payments AS p
LEFT JOIN (SELECT payment_id, sum(refund_amount) AS recorded
           FROM payment_refunds
           WHERE payment_id = ANY(%(payment_ids)s::bigint[]) AND status <> 'FAILED'
           GROUP BY payment_id) AS r
       ON r.payment_id = p.payment_id
WHERE p.payment_id = ANY(%(payment_ids)s::bigint[])
  AND p.amount_refunded > COALESCE(r.recorded, 0)
ORDER BY p.payment_id
"""
# The history of the loaded payments (contract section 13), as migration 0011 gave the rows that existed
# before it: a PURCHASE for each row this load inserted, settled as its status says (no gateway took it),
# and a REFUND for each refund record of the file's refunded rows that has none yet (a repaired row's new
# record), so a second load adds nothing.
INSERT_LOADED_PURCHASES = """
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, created_at, updated_at)
SELECT p.payment_id, 'PURCHASE',
       CASE p.status WHEN 'FAILED' THEN 'FAILED' WHEN 'PENDING' THEN 'PENDING' ELSE 'SUCCEEDED' END,
       p.amount, p.currency, p.created_at, p.updated_at
FROM payments AS p
WHERE p.payment_id = ANY(%(payment_ids)s::bigint[])
ORDER BY p.payment_id
"""
INSERT_LOADED_REFUNDS = """
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, gateway_reference, error_code,
                                  refund_id, created_at, updated_at)
SELECT r.payment_id, 'REFUND', r.status, r.refund_amount, p.currency, r.gateway, r.gateway_reference,
       CASE WHEN r.status = 'FAILED' THEN r.error_code END, r.refund_id, r.created_at, r.updated_at
FROM payment_refunds AS r
JOIN payments AS p ON p.payment_id = r.payment_id
WHERE r.payment_id = ANY(%(payment_ids)s::bigint[])
  AND NOT EXISTS (SELECT 1 FROM payment_transactions AS t WHERE t.refund_id = r.refund_id)
ORDER BY r.refund_id
"""
# Keeps concurrent payment inserts out while ids are loaded and the sequence is moved past them.
LOCK_PAYMENTS = "LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE"
ADVANCE_SEQUENCE = """
SELECT setval(pg_get_serial_sequence('payments', 'payment_id'), max_id)
FROM (SELECT MAX(payment_id) AS max_id FROM payments) AS m,
     payments_payment_id_seq AS s
WHERE m.max_id IS NOT NULL
  AND m.max_id >= CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
"""


class SeedError(ValueError):
    """The CSV file is malformed; the message names the line."""


@dataclass(frozen=True)
class LoadResult:
    """What a load did: rows read from the file, rows newly inserted, stored rows given their refunded part."""

    rows_in_file: int
    inserted: int
    repaired: int = 0


def _parse_int(value: str, column: str, line: int) -> int:
    """Parse a positive BIGINT."""
    if not _INT_RE.match(value) or not 0 < int(value) <= MAX_BIGINT:
        raise SeedError(f"line {line}: {column} must be a positive integer, got {value!r}")
    return int(value)


def _parse_money(value: str, column: str, line: int, currency: str) -> Decimal:
    """Parse a non-negative amount of money with at most two decimals, and no more than `currency` has."""
    # Plain digits with an optional point, as the reference file writes them: Decimal alone would also
    # take 1e2, NaN or a full-width digit.
    if not _MONEY_RE.match(value):
        raise SeedError(f"line {line}: {column} must be a decimal number such as 31.25, got {value!r}")
    amount = Decimal(value)  # cannot fail: the pattern admits only plain decimals
    if amount > MAX_AMOUNT or amount.as_tuple().exponent < -2:
        raise SeedError(f"line {line}: {column} must be between 0 and {MAX_AMOUNT} with at most two decimals")
    if not fits_currency(amount, currency):
        # 31.25 cannot be an amount of yen: the row would be a payment no fare or refund can produce.
        raise SeedError(
            f"line {line}: {column} {value} has more decimals than {currency} has ({decimals_of(currency)}),"
            f" the currency the file's amounts are loaded in"
        )
    return amount


def _refunded_part(raw: str | None, status: str, amount: Decimal, line: int, currency: str) -> Decimal:
    """The amount already refunded, checked against the status; `raw` is None when the file has no such column."""
    given = _parse_money(raw, "amount_refunded", line, currency) if raw else None
    if status == "REFUNDED":
        if given is not None and given != amount:
            raise SeedError(f"line {line}: a REFUNDED payment's amount_refunded must equal its amount {amount}")
        return amount
    if status == "PARTIALLY_REFUNDED":
        if given is None or not 0 < given < amount:
            raise SeedError(
                f"line {line}: a PARTIALLY_REFUNDED payment needs its amount_refunded"
                f" (more than 0 and less than its amount {amount})"
            )
        return given
    if given:
        raise SeedError(f"line {line}: a {status} payment has nothing refunded; amount_refunded must be 0")
    return Decimal("0.00")


def _parse_timestamp(value: str, line: int) -> datetime:
    """Parse 'YYYY-MM-DD HH:MM:SS', taken as UTC."""
    try:
        moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise SeedError(f"line {line}: created_at must look like 2025-10-01 06:47:34, got {value!r}") from None
    moment = moment.replace(tzinfo=UTC)
    # A payment from the future would top every list for years and, if PENDING, never be old
    # enough for reconciliation to settle it while it blocks its trip.
    if moment > datetime.now(UTC):
        raise SeedError(f"line {line}: created_at {value} (UTC) is in the future")
    return moment


def parse_csv(path: Path, currency: str) -> list[dict[str, object]]:
    """Read and validate the whole file; raise SeedError naming the first bad line."""
    try:
        # utf-8-sig: a byte-order mark, as spreadsheet programs write at the start, is read as nothing.
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc.strerror}") from None
    rows: list[dict[str, object]] = []
    seen_ids: dict[int, int] = {}
    seen_refs: dict[str, int] = {}
    live_trips: dict[int, int] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise SeedError(f"{path} is empty; expected the header {','.join(EXPECTED_HEADER)}")
            columns = [h.strip() for h in header]
            if columns not in (EXPECTED_HEADER, EXTENDED_HEADER):
                raise SeedError(
                    f"line 1: header must be {','.join(EXPECTED_HEADER)}, optionally followed by ,amount_refunded"
                )
            for record in reader:
                line = reader.line_num
                if not record or record == [""]:
                    continue
                if len(record) != len(columns):
                    raise SeedError(f"line {line}: expected {len(columns)} fields, found {len(record)}")
                rows.append(_parse_row([v.strip() for v in record], line, currency, seen_ids, seen_refs, live_trips))
        except csv.Error as exc:
            raise SeedError(f"line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise SeedError(f"{path} is not UTF-8 text") from None
    return rows


def _parse_row(
    record: list[str],
    line: int,
    currency: str,
    seen_ids: dict[int, int],
    seen_refs: dict[str, int],
    live_trips: dict[int, int],
) -> dict[str, object]:
    """Validate one record and check it against the rows before it."""
    width = len(EXPECTED_HEADER)
    raw_id, raw_trip, raw_amount, raw_method, raw_status, reference, raw_created = record[:width]
    raw_refunded = record[width] if len(record) > width else None
    payment_id = _parse_int(raw_id, "payment_id", line)
    if payment_id > MAX_LOADED_PAYMENT_ID:
        raise SeedError(
            f"line {line}: payment_id {payment_id} is above {MAX_LOADED_PAYMENT_ID:,}: new payments take ids after"
            " the largest one loaded, so a larger id leaves them too little room"
        )
    trip_id = _parse_int(raw_trip, "trip_id", line)
    amount = _parse_money(raw_amount, "amount", line, currency)
    if amount == 0:
        raise SeedError(f"line {line}: amount must be greater than 0")
    method = raw_method.upper()
    if method not in PAYMENT_METHODS:
        raise SeedError(f"line {line}: method must be one of {', '.join(PAYMENT_METHODS)}, got {raw_method!r}")
    status = raw_status.upper()
    if status not in LOADABLE:
        raise SeedError(f"line {line}: status must be one of {', '.join(LOADABLE)}, got {raw_status!r}")
    if not _REFERENCE_RE.match(reference):
        raise SeedError(f"line {line}: reference must be 1-100 printable characters without spaces")
    created_at = _parse_timestamp(raw_created, line)
    amount_refunded = _refunded_part(raw_refunded, status, amount, line, currency)
    if payment_id in seen_ids:
        raise SeedError(f"line {line}: payment_id {payment_id} already appears on line {seen_ids[payment_id]}")
    if reference in seen_refs:
        raise SeedError(f"line {line}: reference {reference} already appears on line {seen_refs[reference]}")
    if status != "FAILED":
        if trip_id in live_trips:
            raise SeedError(
                f"line {line}: trip {trip_id} already has a non-failed payment on line {live_trips[trip_id]}"
            )
        live_trips[trip_id] = line
    seen_ids[payment_id] = line
    seen_refs[reference] = line
    return {
        "payment_id": payment_id,
        "trip_id": trip_id,
        "amount": amount,
        "amount_refunded": amount_refunded,
        "currency": currency,
        "method": method,
        "status": status,
        "reference": reference,
        "created_at": created_at,
    }


def load_payments(conn: psycopg2.extensions.connection, rows: list[dict[str, object]]) -> tuple[int, int]:
    """Insert the rows and their imported refunds in the caller's transaction; return (inserted, repaired)."""
    with conn.cursor() as cur:
        cur.execute(LOCK_PAYMENTS)
        inserted_ids: list[int] = []
        repaired = 0
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            outcomes = psycopg2.extras.execute_values(
                cur, INSERT_PAYMENTS, chunk, template=INSERT_TEMPLATE, page_size=1000, fetch=True
            )
            inserted_ids += [payment_id for payment_id, was_inserted in outcomes if was_inserted]
            repaired += sum(1 for _, was_inserted in outcomes if not was_inserted)
        refunded = [row["payment_id"] for row in rows if row["amount_refunded"] > 0]
        if refunded:
            cur.execute(INSERT_IMPORTED_REFUNDS, {"payment_ids": refunded})
        if inserted_ids:
            cur.execute(INSERT_LOADED_PURCHASES, {"payment_ids": inserted_ids})
        if refunded:
            cur.execute(INSERT_LOADED_REFUNDS, {"payment_ids": refunded})
        cur.execute(ADVANCE_SEQUENCE)
    return len(inserted_ids), repaired


def load_csv(conn: psycopg2.extensions.connection, path: Path, currency: str) -> LoadResult:
    """Validate the whole file, then load it in one transaction (nothing is loaded if any line is bad)."""
    rows = parse_csv(path, currency)
    try:
        inserted, repaired = load_payments(conn, rows)
        conn.commit()
    except psycopg2.IntegrityError as exc:
        conn.rollback()
        detail = exc.diag.message_detail or exc.diag.message_primary or str(exc)
        raise SeedError(f"{path.name} conflicts with payments already stored: {detail}") from None
    except BaseException:
        conn.rollback()
        raise
    return LoadResult(rows_in_file=len(rows), inserted=inserted, repaired=repaired)
