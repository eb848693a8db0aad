#!/usr/bin/env bash
# Charge throughput: wrk -t2 -c16 with bench/charge.lua (unique key and trip per request) against
# gunicorn -w 2, DEBUG on with no trip service (the reference's mock trip), gateway approving 80%.
#
#   bash bench/charge.sh      (needs wrk and `make install`; DB_* as for the tests)
source "$(dirname "$0")/common.sh"

export DEBUG=true
# Nothing listens on these ports: the trip check falls back to the mock trip, notifications fail fast.
export TRIP_SERVICE_URL=http://127.0.0.1:9 NOTIFICATION_SERVICE_URL=http://127.0.0.1:9
PORT="${PORT:-8094}"
WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-1}"

.venv/bin/python database_setup.py --no-seed >/dev/null
start_gunicorn "$PORT" /tmp/bench_charge_gunicorn.log -w "$WORKERS" --threads "$THREADS"

echo "wrk -t2 -c16 -d$DURATION POST /v1/payments/charge against gunicorn -w $WORKERS --threads $THREADS"
wrk -t2 -c16 -d"$DURATION" -s bench/charge.lua "http://127.0.0.1:$PORT" | tail -n 1
echo "payments stored: $("${PSQL[@]}" -d "$DB_NAME" -Atc 'SELECT count(*) FROM payments')"
