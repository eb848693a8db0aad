"""GET /v1/payments and GET /v1/payments/<id> against the real database."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg2
import pytest
from flask.testing import FlaskClient

from config import Config
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from services.payment_queries import filter_scope

PAYMENT_KEYS = {
    "payment_id",
    "trip_id",
    "rider_id",
    "driver_id",
    "amount",
    "currency",
    "method",
    "status",
    "reference",
    "amount_refunded",
    "gateway",
    "gateway_reference",
    "authorized_amount",
    "created_at",
    "updated_at",
}


def test_get_payment_returns_the_contract_object(client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    payment_id = insert_payment(trip_id=101, rider_id=7, driver_id=9, amount=Decimal("31.25"))

    response = client.get(f"/v1/payments/{payment_id}")

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == PAYMENT_KEYS
    assert body["payment_id"] == payment_id
    assert (body["trip_id"], body["rider_id"], body["driver_id"]) == (101, 7, 9)
    assert body["amount"] == 31.25
    assert body["amount_refunded"] == 0.0
    assert body["currency"] == "INR"
    assert body["created_at"] == "2025-11-03T11:24:00+00:00"


@pytest.mark.parametrize(
    ("stored", "text"),
    [("0.10", "0.1"), ("31.25", "31.25"), ("12345678.99", "12345678.99"), ("40.00", "40.0"), ("0.07", "0.07")],
)
def test_amounts_are_json_numbers_equal_to_the_stored_decimal(
    client: FlaskClient, insert_payment: Callable[..., int], stored: str, text: str
) -> None:
    payment_id = insert_payment(amount=Decimal(stored))

    raw = client.get(f"/v1/payments/{payment_id}").get_data(as_text=True)

    assert f'"amount":{text},' in raw
    assert Decimal(text) == Decimal(stored)


def test_unknown_payment_returns_404_payment_not_found(client: FlaskClient) -> None:
    response = client.get("/v1/payments/999999")

    assert response.status_code == 404
    assert response.get_json() == {
        "error": "Payment not found.",
        "code": "payment_not_found",
        "status_code": 404,
        "payment_id": 999999,
    }


@pytest.mark.parametrize("raw_id", ["abc", "0", "-1", "1.5", "+1", "99999999999999999999", "%20"])
def test_impossible_payment_ids_return_404_payment_not_found(client: FlaskClient, raw_id: str) -> None:
    response = client.get(f"/v1/payments/{raw_id}")

    assert response.status_code == 404
    assert response.get_json()["code"] == "payment_not_found"


def test_list_is_empty_on_an_empty_table(client: FlaskClient) -> None:
    response = client.get("/v1/payments")

    assert response.status_code == 200
    assert response.get_json() == {
        "payments": [], "count": 0, "limit": 100, "offset": 0, "has_more": False, "next_cursor": None,
    }  # fmt: skip


def test_list_is_newest_first_with_payment_id_breaking_ties(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    same_moment = datetime(2025, 1, 1, tzinfo=UTC)
    older = insert_payment(created_at=same_moment - timedelta(days=1))
    tie_a = insert_payment(created_at=same_moment)
    tie_b = insert_payment(created_at=same_moment)
    newest = insert_payment(created_at=same_moment + timedelta(days=1))

    ids = [p["payment_id"] for p in client.get("/v1/payments").get_json()["payments"]]

    assert ids == [newest, tie_b, tie_a, older]


def test_limit_offset_and_has_more_page_through_everything(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    created = [insert_payment() for _ in range(5)]
    expected = list(reversed(created))

    first = client.get("/v1/payments?limit=2").get_json()
    second = client.get("/v1/payments?limit=2&offset=2").get_json()
    last = client.get("/v1/payments?limit=2&offset=4").get_json()
    beyond = client.get("/v1/payments?limit=2&offset=5").get_json()

    assert [p["payment_id"] for p in first["payments"]] == expected[0:2]
    assert (first["count"], first["limit"], first["offset"], first["has_more"]) == (2, 2, 0, True)
    assert [p["payment_id"] for p in second["payments"]] == expected[2:4]
    assert second["has_more"] is True
    assert [p["payment_id"] for p in last["payments"]] == expected[4:5]
    assert (last["count"], last["has_more"]) == (1, False)
    assert (beyond["payments"], beyond["count"], beyond["has_more"]) == ([], 0, False)


def test_exactly_a_full_last_page_has_no_more(client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    for _ in range(3):
        insert_payment()

    body = client.get("/v1/payments?limit=3").get_json()

    assert (body["count"], body["has_more"]) == (3, False)


def test_next_cursor_walks_every_page_in_order_with_filters_and_ties(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    # Several payments share a created_at, so the cursor must break ties by payment_id.
    cards = [insert_payment(method="CARD", created_at=moment - timedelta(minutes=n // 3)) for n in range(11)]
    insert_payment(method="UPI", created_at=moment)
    expected = [p["payment_id"] for p in client.get("/v1/payments?method=CARD&limit=1000").get_json()["payments"]]

    seen, query = [], "method=CARD&limit=3"
    while True:
        body = client.get(f"/v1/payments?{query}").get_json()
        seen += [p["payment_id"] for p in body["payments"]]
        if body["next_cursor"] is None:
            assert body["has_more"] is False
            break
        assert body["has_more"] is True
        query = f"method=CARD&limit=3&cursor={body['next_cursor']}"

    assert seen == expected
    assert sorted(seen) == sorted(cards)


def test_an_offset_page_also_offers_the_cursor_of_the_next_page(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    for _ in range(6):
        insert_payment()

    by_offset = client.get("/v1/payments?limit=2&offset=2").get_json()
    following = client.get(f"/v1/payments?limit=2&cursor={by_offset['next_cursor']}").get_json()

    assert following["payments"] == client.get("/v1/payments?limit=2&offset=4").get_json()["payments"]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


NO_FILTERS = filter_scope(None, None, None, None, None)


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        _cursor("2025-01-01T00:00:00|5|" + NO_FILTERS),  # no time zone
        _cursor("2025-01-01T00:00:00+00:00|0|" + NO_FILTERS),
        _cursor("2025-01-01T00:00:00+00:00|-4|" + NO_FILTERS),
        _cursor("2025-01-01T00:00:00+00:00|99999999999999999999|" + NO_FILTERS),
        _cursor("yesterday|5|" + NO_FILTERS),
        _cursor("2025-01-01T00:00:00+00:00|5|not-a-digest"),
        _cursor("2025-01-01T00:00:00+00:00|5"),  # no filter digest
        "%FF%FE",
        "a" * 201,
    ],
)
def test_a_malformed_cursor_is_400_naming_it(client: FlaskClient, cursor: str) -> None:
    response = client.get(f"/v1/payments?cursor={cursor}")

    assert response.status_code == 400
    assert response.get_json()["field"] == "cursor"


def test_a_cursor_continues_only_the_list_that_issued_it(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    for status in ("SUCCESS", "FAILED", "SUCCESS", "FAILED"):
        insert_payment(status=status)
    unfiltered = client.get("/v1/payments?limit=1").get_json()["next_cursor"]
    failed = client.get("/v1/payments?limit=1&status=FAILED").get_json()["next_cursor"]

    crossed = client.get(f"/v1/payments?limit=1&status=FAILED&cursor={unfiltered}")
    same = client.get(f"/v1/payments?limit=1&status=failed&cursor={failed}")

    assert (crossed.status_code, crossed.get_json()["field"]) == (400, "cursor")
    assert same.status_code == 200 and [p["status"] for p in same.get_json()["payments"]] == ["FAILED"]


def test_cursor_and_offset_together_are_400(client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    for _ in range(3):
        insert_payment()
    cursor = client.get("/v1/payments?limit=1").get_json()["next_cursor"]

    response = client.get(f"/v1/payments?limit=1&offset=1&cursor={cursor}")

    assert (response.status_code, response.get_json()["field"]) == (400, "cursor")


@pytest.mark.parametrize(
    ("query", "matching"),
    [
        ("trip_id=500", {"trip"}),
        ("rider_id=7", {"rider"}),
        ("driver_id=9", {"driver"}),
        ("status=FAILED", {"failed"}),
        ("status=failed", {"failed"}),
        ("method=UPI", {"upi"}),
        ("method=upi", {"upi"}),
        ("status=SUCCESS&method=CARD", {"trip", "rider", "driver"}),
        ("rider_id=7&driver_id=9", set()),
    ],
)
def test_each_filter_returns_only_matching_payments(
    client: FlaskClient, insert_payment: Callable[..., int], query: str, matching: set[str]
) -> None:
    ids = {
        "trip": insert_payment(trip_id=500),
        "rider": insert_payment(rider_id=7),
        "driver": insert_payment(driver_id=9),
        "failed": insert_payment(status="FAILED"),
        "upi": insert_payment(method="UPI"),
    }

    body = client.get(f"/v1/payments?{query}").get_json()

    assert {p["payment_id"] for p in body["payments"]} == {ids[name] for name in matching}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("trip_id=abc", "trip_id"),
        ("trip_id=0", "trip_id"),
        ("trip_id=-3", "trip_id"),
        ("trip_id=1.5", "trip_id"),
        ("trip_id=", "trip_id"),
        ("trip_id=99999999999999999999", "trip_id"),
        ("rider_id=x", "rider_id"),
        ("rider_id=0", "rider_id"),
        ("driver_id=%201", "driver_id"),
        ("driver_id=1e3", "driver_id"),
        ("status=PAID", "status"),
        ("status=", "status"),
        ("method=BITCOIN", "method"),
        ("method=", "method"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("limit=%EF%BC%91", "limit"),  # a full-width digit one: isdigit() but not ASCII
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=1.0", "offset"),
        ("offset=99999999999999999999", "offset"),
        ("limit=5&limit=6", "limit"),
        ("stauts=FAILED", "stauts"),
    ],
)
def test_bad_list_parameter_returns_400_naming_it(client: FlaskClient, query: str, parameter: str) -> None:
    response = client.get(f"/v1/payments?{query}")

    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "validation_error"
    assert body["status_code"] == 400
    assert body["field"] == parameter
    assert parameter in body["error"]


def test_limit_bounds_are_inclusive(client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    insert_payment()

    assert client.get("/v1/payments?limit=1").status_code == 200
    assert client.get("/v1/payments?limit=1000").get_json()["limit"] == 1000


def test_seeded_csv_rows_have_null_rider_and_driver(client: FlaskClient, test_config: Config) -> None:
    conn = psycopg2.connect(test_config.get_database_uri())
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()

    body = client.get("/v1/payments?limit=5").get_json()

    assert body["count"] == 5
    assert all(p["rider_id"] is None and p["driver_id"] is None for p in body["payments"])
