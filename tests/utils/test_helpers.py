"""JSON encoding of the contract's values."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from utils.helpers import dump_json


def test_a_timestamp_from_a_session_in_another_time_zone_is_written_in_utc() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2026, 12, 1, 17, 52, 35, 103008, tzinfo=kolkata)

    assert json.loads(dump_json({"created_at": moment})) == {"created_at": "2026-12-01T12:22:35.103008+00:00"}


def test_amounts_are_json_numbers_equal_to_the_stored_decimals() -> None:
    assert dump_json({"amount": Decimal("31.25")}) == '{"amount":31.25}'
