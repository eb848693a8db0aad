#!/usr/bin/env bash
# Scrape cost: p50/p99 of GET /metrics and GET /metrics/prometheus against gunicorn -w 2,
# with ROWS synthetic payments (default 10000), and what a full-table aggregate would cost instead.
#
#   bash bench/metrics.sh                 # 10,000 payments
#   ROWS=1000000 bash bench/metrics.sh    # a million
set -euo pipefail
cd "$(dirname "$0")/.."

export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
export DB_NAME="payments_bench_$$" LOG_LEVEL=WARNING RATE_LIMIT_ENABLED=false
PORT="${PORT:-8095}"
DURATION="${DURATION:-10s}"
ROWS="${ROWS:-10000}"
PSQL=(psql -q -X -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER")

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cleanup() {
    [ -n "${GUNICORN_PID:-}" ] && kill "$GUNICORN_PID" 2>/dev/null && wait "$GUNICORN_PID" 2>/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
}
trap cleanup EXIT

.venv/bin/python database_setup.py --no-seed >/dev/null
echo "inserting $ROWS payments, 10,000 per transaction (the stats trigger runs for each row)..."
"${PSQL[@]}" -d "$DB_NAME" <<SQL
DO \$\$
BEGIN
  FOR batch IN 0 .. ($ROWS - 1) / 10000 LOOP
    INSERT INTO payments (trip_id, amount, amount_refunded, method, status, reference, created_at, updated_at)
    SELECT 100000 + g, round((5 + random() * 80)::numeric, 2), 0,
           (ARRAY['CARD','UPI','WALLET','CASH'])[1 + g % 4],
           CASE WHEN g % 50 = 0 THEN 'FAILED' WHEN g % 97 = 0 THEN 'PENDING' ELSE 'SUCCESS' END,
           'BENCH-' || g, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
    FROM generate_series(batch * 10000 + 1, least((batch + 1) * 10000, $ROWS)) AS g;
    COMMIT;
  END LOOP;
END
\$\$;
UPDATE payments SET amount_refunded = amount, status = 'REFUNDED' WHERE payment_id % 89 = 0 AND status = 'SUCCESS';
VACUUM ANALYZE payments;
VACUUM ANALYZE payment_stats;
SQL

echo "for comparison, one full-table aggregate (what /metrics would run without payment_stats):"
"${PSQL[@]}" -d "$DB_NAME" -c '\timing on' \
    -c "SELECT status, method, count(*), sum(amount), sum(amount_refunded) FROM payments GROUP BY 1, 2" \
    | grep -E '^Time'

.venv/bin/gunicorn -c gunicorn.conf.py app:app -w 2 --threads 1 -b "127.0.0.1:$PORT" --log-level warning \
    >/tmp/bench_metrics_gunicorn.log 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && break; sleep 0.2; done

run() {
    local out
    out=$(wrk -t2 -c8 -d"$DURATION" --latency "http://127.0.0.1:$PORT$1")
    printf '%-22s %9s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")"
}
echo "payments: $("${PSQL[@]}" -d "$DB_NAME" -Atc 'SELECT count(*) FROM payments'); wrk -t2 -c8 -d$DURATION, gunicorn -w 2"
run /metrics
run /metrics/prometheus
