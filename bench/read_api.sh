#!/usr/bin/env bash
# Read-path throughput: wrk -t2 -c16 -d10s against gunicorn -w 2 serving this repo.
#
#   bash bench/read_api.sh            # seed data only (320 payments)
#   ROWS=1000000 bash bench/read_api.sh   # plus N synthetic payments, to see filtered pages at size
#
# Needs `wrk` (Debian package) and `make install`. Uses DB_HOST/DB_PORT/DB_USER from the
# environment (default 127.0.0.1:5432 postgres); creates and drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."

export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
export DB_NAME="payments_bench_$$" LOG_LEVEL=WARNING RATE_LIMIT_ENABLED=false
PORT="${PORT:-8093}"
DURATION="${DURATION:-10s}"
ROWS="${ROWS:-0}"
PSQL=(psql -q -X -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER")

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cleanup() {
    [ -n "${GUNICORN_PID:-}" ] && kill "$GUNICORN_PID" 2>/dev/null && wait "$GUNICORN_PID" 2>/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
}
trap cleanup EXIT

.venv/bin/python database_setup.py >/dev/null
if [ "$ROWS" -gt 0 ]; then
    echo "inserting $ROWS synthetic payments..."
    "${PSQL[@]}" -d "$DB_NAME" <<SQL
INSERT INTO payments (trip_id, rider_id, driver_id, amount, method, status, reference, created_at, updated_at)
SELECT 100000 + g, 1 + g % 50000, 1 + g % 5000, round((5 + random() * 80)::numeric, 2),
       (ARRAY['CARD','UPI','WALLET','CASH'])[1 + g % 4],
       CASE WHEN g % 50 = 0 THEN 'FAILED' WHEN g % 97 = 0 THEN 'REFUNDED' ELSE 'SUCCESS' END,
       'BENCH-' || g, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
FROM generate_series(1, $ROWS) AS g;
ANALYZE payments;
SQL
fi

.venv/bin/gunicorn app:app -w 2 -b "127.0.0.1:$PORT" --no-control-socket --log-level warning \
    --access-logfile /dev/null >/tmp/bench_gunicorn.log 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && break; sleep 0.2; done

run() {
    local label=$1 path=$2
    local out
    out=$(wrk -t2 -c16 -d"$DURATION" --latency "http://127.0.0.1:$PORT$path")
    local rps p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '%-42s %10s req/s   p99 %8s   non-2xx %s\n' "$label" "$rps" "$p99" "${non2xx:-0}"
}

echo "payments in table: $("${PSQL[@]}" -d "$DB_NAME" -Atc 'SELECT count(*) FROM payments')"
echo "wrk -t2 -c16 -d$DURATION against gunicorn -w 2 (sync workers)"
run "GET /live (ceiling, no database)" /live
run "GET /v1/payments/42" /v1/payments/42
run "GET /v1/payments?limit=20" "/v1/payments?limit=20"
run "GET /v1/payments?status=FAILED&limit=20" "/v1/payments?status=FAILED&limit=20"
run "GET /v1/payments?rider_id=7&limit=20" "/v1/payments?rider_id=7&limit=20"
