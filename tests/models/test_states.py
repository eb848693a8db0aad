"""models/states.py is the one definition: the database and openapi.yaml agree with it; its functions do as they say."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from api.openapi import document
from models import states
from models.states import (
    HOLD_ACTION_DONE,
    HOLD_ACTION_KIND,
    HOLD_OPERABLE,
    LIVE,
    LOADABLE,
    MONEY_IN,
    RECEIPTABLE,
    REFUNDABLE,
    REVENUE,
    TAKEN,
    TRANSITIONS,
    WHY_NOT_HOLD_OPERABLE,
    GatewayStatus,
    HoldAction,
    PaymentStatus,
    TransactionKind,
    TransactionStatus,
)

P = PaymentStatus
T = TransactionStatus
G = GatewayStatus

# The CHECK constraints on exactly one column of a table (status IN (...), kind IN (...)).
SINGLE_COLUMN_CHECKS = """
SELECT c.conname, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint AS c
JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.conrelid = %(table)s::regclass AND c.contype = 'c' AND cardinality(c.conkey) = 1 AND a.attname = %(column)s
"""
SELECT_TRANSITIONS = "SELECT from_status, to_status FROM payment_status_transitions"
INSERT_HOLD = """
INSERT INTO payments (trip_id, amount, authorized_amount, method, status, reference)
VALUES (%(trip_id)s, 20.00, 20.00, 'CARD', %(status)s, %(reference)s)
RETURNING payment_id
"""
UPDATE_STATUS = "UPDATE payments SET status = %(status)s WHERE payment_id = %(payment_id)s"
_QUOTED = re.compile(r"'((?:[^']|'')*)'")
PAYMENT_STATUSES = {str(status) for status in P}
KINDS = {str(kind) for kind in TransactionKind}
TRANSACTION_STATUSES = {str(status) for status in T}
STATE_SETS = (PAYMENT_STATUSES, KINDS, TRANSACTION_STATUSES)


def allowed_values(db: psycopg2.extensions.connection, table: str, column: str) -> set[str]:
    """The values the one CHECK constraint on `table.column` allows, read from the migrated database."""
    with db.cursor() as cur:
        cur.execute(SINGLE_COLUMN_CHECKS, {"table": table, "column": column})
        rows = cur.fetchall()
    assert len(rows) == 1, f"{table}.{column}: expected one CHECK constraint on it alone, found {rows}"
    definition = rows[0][1]
    assert re.search(r"= ANY \(ARRAY\[", definition), f"{table}.{column}: not a list of values: {definition}"
    return {value.replace("''", "'") for value in _QUOTED.findall(definition)}


def enums(node: Any, pointer: str = "") -> Iterator[tuple[str, list[Any]]]:
    """Every `enum` of the document with where it is (a JSON pointer)."""
    if isinstance(node, dict):
        if isinstance(node.get("enum"), list):
            yield pointer, node["enum"]
        for key, value in node.items():
            yield from enums(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from enums(value, f"{pointer}/{index}")


def enum_problems(doc: dict[str, Any]) -> list[str]:
    """Where openapi.yaml's enums of statuses and kinds disagree with models/states.py (empty: they agree).

    The named schemas and the list filter must list every value; any other enum holding one of these
    words (a response that can only be some of them) must take all its values from one of the sets.
    """
    schemas = doc["components"]["schemas"]
    complete = {
        "/components/schemas/Status": PAYMENT_STATUSES,
        "/components/schemas/TransactionKind": KINDS,
        "/components/schemas/TransactionStatus": TRANSACTION_STATUSES,
        "/components/schemas/RefundStatus": TRANSACTION_STATUSES,
    }
    problems = [f"{where} is missing" for where in complete if where.rsplit("/", 1)[-1] not in schemas]
    list_status = [p["schema"] for p in doc["paths"]["/v1/payments"]["get"]["parameters"] if p["name"] == "status"]
    found = dict(enums(doc))
    if list_status:
        found["/paths/~1v1~1payments/get/parameters/status"] = list_status[0].get("enum", [])
        complete["/paths/~1v1~1payments/get/parameters/status"] = PAYMENT_STATUSES
    for where, wanted in complete.items():
        if where in found and set(found[where]) != wanted:
            problems.append(f"{where}: {sorted(found[where])} is not {sorted(wanted)}")
    words = set().union(*STATE_SETS)
    for where, values in found.items():
        named = {v for v in values if isinstance(v, str)}
        if named & words and not any(named <= state_set for state_set in STATE_SETS):
            problems.append(f"{where}: {sorted(named)} mixes or misspells names of models/states.py")
    return problems


def test_the_payment_status_check_allows_exactly_the_payment_statuses(db: psycopg2.extensions.connection) -> None:
    assert allowed_values(db, "payments", "status") == PAYMENT_STATUSES


def test_the_transaction_checks_allow_exactly_the_kinds_and_statuses(db: psycopg2.extensions.connection) -> None:
    assert allowed_values(db, "payment_transactions", "kind") == KINDS
    assert allowed_values(db, "payment_transactions", "status") == TRANSACTION_STATUSES


def test_refund_records_have_the_statuses_of_refund_transactions(db: psycopg2.extensions.connection) -> None:
    assert allowed_values(db, "payment_refunds", "status") == TRANSACTION_STATUSES


def test_hold_actions_are_those_the_database_allows(db: psycopg2.extensions.connection) -> None:
    assert allowed_values(db, "payments", "hold_action") == {str(action) for action in HoldAction}


def test_the_transition_table_holds_exactly_the_transitions(db: psycopg2.extensions.connection) -> None:
    with db.cursor() as cur:
        cur.execute(SELECT_TRANSITIONS)
        rows = set(cur.fetchall())

    assert rows == {(str(before), str(after)) for before, after in TRANSITIONS}


def test_openapi_status_and_kind_enums_agree_with_the_states() -> None:
    assert enum_problems(document()) == []


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (["components", "schemas", "Status"], ["SUCCESS", "PENDING", "FAILED", "REFUNDED", "PARTIALLY_REFUNDED"]),
        (["components", "schemas", "TransactionKind"], ["AUTHORIZE", "CAPTURE", "PURCHASE", "VOID", "REFUND"]),
        (["components", "schemas", "RefundStatus"], ["SUCCEEDED", "PENDING", "FAILED", "COMPLETED"]),
        (["components", "schemas", "RefundResult", "properties", "status"], ["PARTIALLY_REFUNDED", "REFUND"]),
    ],
)
def test_an_enum_that_drifts_from_the_states_is_caught(where: list[str], value: list[str]) -> None:
    doc = copy.deepcopy(document())
    node = doc
    for key in where:
        node = node[key]
    node["enum"] = value

    problems = enum_problems(doc)

    assert problems
    assert all(p.startswith("/" + "/".join(where) + ":") for p in problems)


def test_the_list_filter_missing_a_status_is_caught() -> None:
    doc = copy.deepcopy(document())
    for parameter in doc["paths"]["/v1/payments"]["get"]["parameters"]:
        if parameter["name"] == "status":
            parameter["schema"]["enum"].remove("VOIDED")

    assert enum_problems(doc) == [
        "/paths/~1v1~1payments/get/parameters/status: "
        + f"{sorted(PAYMENT_STATUSES - {'VOIDED'})} is not {sorted(PAYMENT_STATUSES)}"
    ]


@pytest.mark.parametrize(("before", "after"), [(b, a) for b in P for a in P if a != b])
def test_the_database_allows_a_status_change_exactly_when_it_is_a_transition(
    db: psycopg2.extensions.connection, before: PaymentStatus, after: PaymentStatus
) -> None:
    with db.cursor() as cur:
        # A hold, so that AUTHORIZED and VOIDED rows satisfy the other constraints.
        cur.execute(INSERT_HOLD, {"trip_id": 77, "status": str(before), "reference": "transition"})
        payment_id = cur.fetchone()[0]
        if (before, after) in TRANSITIONS:
            cur.execute(UPDATE_STATUS, {"status": str(after), "payment_id": payment_id})
            assert cur.rowcount == 1
        else:
            with pytest.raises(psycopg2.errors.CheckViolation) as refused:
                cur.execute(UPDATE_STATUS, {"status": str(after), "payment_id": payment_id})
            assert refused.value.diag.constraint_name == "payments_status_transition"
            assert f"cannot go from {before} to {after}" in refused.value.diag.message_primary


def test_a_failed_payment_cannot_be_made_successful(db: psycopg2.extensions.connection) -> None:
    with db.cursor() as cur:
        cur.execute(INSERT_HOLD, {"trip_id": 78, "status": "FAILED", "reference": "failed"})
        payment_id = cur.fetchone()[0]
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute(UPDATE_STATUS, {"status": "SUCCESS", "payment_id": payment_id})
        cur.execute("SELECT status FROM payments WHERE payment_id = %(payment_id)s", {"payment_id": payment_id})
        assert cur.fetchone()[0] == "FAILED"
        # Writing the same status again is no change, and is allowed.
        cur.execute(UPDATE_STATUS, {"status": "FAILED", "payment_id": payment_id})
        assert cur.rowcount == 1


def test_every_status_is_reachable_from_where_payments_start() -> None:
    reached = {P.PENDING, *LOADABLE}
    while True:
        more = {after for before, after in TRANSITIONS if before in reached} - reached
        if not more:
            break
        reached |= more

    assert reached == set(P)


def test_allowed_is_the_transitions_plus_staying_put() -> None:
    for before in P:
        for after in P:
            assert states.allowed(before, after) == (before == after or (before, after) in TRANSITIONS)
    assert states.allowed("FAILED", "FAILED")
    assert not states.allowed("FAILED", "SUCCESS")
    with pytest.raises(ValueError):
        states.allowed("DONE", "SUCCESS")


def test_the_guards_partition_the_statuses_as_their_names_say() -> None:
    assert set(TAKEN) == set(RECEIPTABLE) == set(REVENUE) == {P.SUCCESS, P.PARTIALLY_REFUNDED, P.REFUNDED}
    assert set(REFUNDABLE) == {P.SUCCESS, P.PARTIALLY_REFUNDED}
    assert set(LIVE) == set(P) - {P.FAILED, P.VOIDED}
    assert set(HOLD_OPERABLE) == {P.AUTHORIZED}
    assert set(LOADABLE) == set(P) - {P.AUTHORIZED, P.VOIDED}
    assert set(MONEY_IN) == {TransactionKind.PURCHASE, TransactionKind.CAPTURE}
    # Every status a hold operation can be refused in has its explanation, and only those.
    assert set(WHY_NOT_HOLD_OPERABLE) == set(P) - set(HOLD_OPERABLE)


def test_hold_actions_record_their_kind_and_end_in_their_status() -> None:
    assert HOLD_ACTION_KIND == {
        HoldAction.CAPTURE: TransactionKind.CAPTURE,
        HoldAction.VOID: TransactionKind.VOID,
        HoldAction.EXPIRE: TransactionKind.VOID,
    }
    assert HOLD_ACTION_DONE == {HoldAction.CAPTURE: P.SUCCESS, HoldAction.VOID: P.VOIDED, HoldAction.EXPIRE: P.VOIDED}
    # An action in flight is a PENDING payment; getting to where it ends is a transition.
    assert all((P.PENDING, done) in TRANSITIONS for done in HOLD_ACTION_DONE.values())


@pytest.mark.parametrize(
    ("amount", "refunded", "status"),
    [
        ("31.25", "0", P.SUCCESS),
        ("31.25", "0.01", P.PARTIALLY_REFUNDED),
        ("31.25", "31.24", P.PARTIALLY_REFUNDED),
        ("31.25", "31.25", P.REFUNDED),
        ("1520", "1520", P.REFUNDED),
    ],
)
def test_status_after_refunds_follows_what_counts_as_refunded(amount: str, refunded: str, status: P) -> None:
    assert states.status_after_refunds(Decimal(amount), Decimal(refunded)) == status


def test_moving_between_any_two_refund_states_is_a_transition() -> None:
    for before in TAKEN:
        for after in TAKEN:
            assert states.allowed(before, after)


@pytest.mark.parametrize(
    ("payment_status", "transaction_status"),
    [(P.SUCCESS, T.SUCCEEDED), (P.AUTHORIZED, T.SUCCEEDED), (P.FAILED, T.FAILED), (P.PENDING, T.PENDING)],
)
def test_a_charge_or_authorization_transaction_settles_as_its_payment(payment_status: P, transaction_status: T) -> None:
    assert states.transaction_status(payment_status) == transaction_status


@pytest.mark.parametrize(
    ("action", "payment_status", "transaction_status"),
    [
        (HoldAction.CAPTURE, P.SUCCESS, T.SUCCEEDED),
        (HoldAction.CAPTURE, P.PENDING, T.PENDING),
        (HoldAction.CAPTURE, P.AUTHORIZED, T.FAILED),  # refused: the hold stands
        (HoldAction.CAPTURE, P.VOIDED, T.FAILED),  # the hold was found released
        (HoldAction.VOID, P.VOIDED, T.SUCCEEDED),
        (HoldAction.VOID, P.AUTHORIZED, T.FAILED),
        (HoldAction.VOID, P.PENDING, T.PENDING),
        (HoldAction.EXPIRE, P.VOIDED, T.SUCCEEDED),
        (HoldAction.EXPIRE, P.AUTHORIZED, T.FAILED),
    ],
)
def test_a_capture_or_void_transaction_settles_as_its_action_ended(
    action: HoldAction, payment_status: P, transaction_status: T
) -> None:
    assert states.hold_action_transaction_status(action, payment_status) == transaction_status


@pytest.mark.parametrize(
    ("answer", "capture", "outcome"),
    [
        (G.SUCCESS, True, P.SUCCESS),
        (G.FAILED, True, P.FAILED),
        (G.PENDING, True, P.PENDING),
        (G.ABSENT, True, P.PENDING),
        (G.AUTHORIZED, True, P.PENDING),  # a charge should never be merely held: look again
        (G.VOIDED, True, P.FAILED),
        (G.SUCCESS, False, P.SUCCESS),
        (G.AUTHORIZED, False, P.AUTHORIZED),
        (G.FAILED, False, P.FAILED),
        (G.VOIDED, False, P.FAILED),
        (G.PENDING, False, P.PENDING),
        (G.ABSENT, False, P.PENDING),
    ],
)
def test_a_gateways_answer_to_a_charge_or_hold_maps_to_a_payment_status(answer: G, capture: bool, outcome: P) -> None:
    assert states.charge_outcome(answer, capture) == outcome


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (G.SUCCESS, P.SUCCESS),
        (G.VOIDED, P.VOIDED),
        (G.FAILED, P.VOIDED),
        (G.AUTHORIZED, P.AUTHORIZED),
        (G.PENDING, P.PENDING),
        (G.ABSENT, P.PENDING),
    ],
)
def test_a_gateways_answer_to_a_capture_or_void_maps_to_a_payment_status(answer: G, outcome: P) -> None:
    assert states.hold_action_outcome(answer) == outcome


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [(G.SUCCESS, T.SUCCEEDED), (G.FAILED, T.FAILED), (G.PENDING, T.PENDING), (G.ABSENT, T.PENDING)],
)
def test_a_gateways_answer_to_a_refund_maps_to_a_refund_status(answer: G, outcome: T) -> None:
    assert states.refund_outcome(answer) == outcome


def test_every_outcome_of_a_pending_payment_is_a_transition_from_pending() -> None:
    outcomes = {states.charge_outcome(answer, capture) for answer in G for capture in (True, False)}
    outcomes |= {states.hold_action_outcome(answer) for answer in G}

    assert all(states.allowed(P.PENDING, outcome) for outcome in outcomes)
