#!/usr/bin/env bash
# Charge throughput: wrk -t2 -c16 with bench/charge.lua (unique key and trip per request) against
# gunicorn -w 2, DEBUG on with no trip service (the reference's mock trip), gateway approving 80%.
#
#   bash bench/charge.sh      (needs wrk and `make install`; DB_* as for the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
export DB_NAME="payments_bench_$$" LOG_LEVEL=WARNING RATE_LIMIT_ENABLED=false DEBUG=true
# Nothing listens on these ports: the trip check falls back to the mock trip, notifications fail fast.
export TRIP_SERVICE_URL=http://127.0.0.1:9 NOTIFICATION_SERVICE_URL=http://127.0.0.1:9
PORT="${PORT:-8094}"
DURATION="${DURATION:-10s}"
WORKERS="${WORKERS:-2}"
THREADS="${THREADS:-1}"
PSQL=(psql -q -X -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER")

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cleanup() {
    [ -n "${GUNICORN_PID:-}" ] && kill "$GUNICORN_PID" 2>/dev/null && wait "$GUNICORN_PID" 2>/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
}
trap cleanup EXIT

.venv/bin/python database_setup.py --no-seed >/dev/null
.venv/bin/gunicorn app:app -w "$WORKERS" --threads "$THREADS" -b "127.0.0.1:$PORT" --no-control-socket \
    --log-level warning >/tmp/bench_charge_gunicorn.log 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && break; sleep 0.2; done

echo "wrk -t2 -c16 -d$DURATION POST /v1/payments/charge against gunicorn -w $WORKERS --threads $THREADS"
wrk -t2 -c16 -d"$DURATION" -s bench/charge.lua "http://127.0.0.1:$PORT" | tail -n 1
echo "payments stored: $("${PSQL[@]}" -d "$DB_NAME" -Atc 'SELECT count(*) FROM payments')"
