"""Schemathesis hooks for scripts/fuzz.sh: fresh trips for the operations that pay for one.

The fuzzer draws trip ids from a small pool, so after the first payment of a trip every charge or
hold of it is a 409 and its links (capture, refund, receipt) are seldom walked. A body that names
a valid trip id gets a trip no request has used; everything else about it (and every malformed
body, an out-of-range trip id included) is left as drawn, so the negative cases stay negative.
The fuzzer's trip service (`tests.fakes.TripsForTheFuzzer`) finds a trip id divisible by 3
ACCEPTED at its first look, any other COMPLETED, so holds get the first kind, charges the second.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import schemathesis

MAX_ID = 9223372036854775807
# Far above the seed's trips, and different on every run against the same database.
_TRIPS = itertools.count(int(time.time()) * 1000 + os.getpid() % 1000)


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Give a charge or authorize body with a valid trip_id a fresh trip of the right kind."""
    path = getattr(getattr(context, "operation", None), "path", "")
    if not isinstance(body, dict) or type(body.get("trip_id")) is not int or not 0 < body["trip_id"] <= MAX_ID:
        return body
    if path == "/v1/payments/authorize":
        return {**body, "trip_id": 3 * next(_TRIPS)}
    if path == "/v1/payments/charge":
        return {**body, "trip_id": 3 * next(_TRIPS) + 1}
    return body
