#!/usr/bin/env bash
# Read-path throughput: wrk -t2 -c16 -d10s against gunicorn -w 2 serving this repo.
#
#   bash bench/read_api.sh            # seed data only (320 payments)
#   ROWS=1000000 bash bench/read_api.sh   # plus N synthetic payments, to see filtered pages at size
#
# Needs `wrk` (Debian package) and `make install`. Uses DB_HOST/DB_PORT/DB_USER from the
# environment (default 127.0.0.1:5432 postgres); creates and drops its own database.
source "$(dirname "$0")/common.sh"

PORT="${PORT:-8093}"
ROWS="${ROWS:-0}"

.venv/bin/python database_setup.py >/dev/null
if [ "$ROWS" -gt 0 ]; then
    insert_synthetic_payments "$ROWS"
fi
start_gunicorn "$PORT" /tmp/bench_gunicorn.log -w 2 --threads 1

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
