# Shared set-up for the bench/ scripts (sourced, not run): database settings, a throwaway database
# dropped on exit, and a gunicorn to measure. Rate limiting is off: the benches measure the service.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
export DB_NAME="payments_bench_$$" LOG_LEVEL="${LOG_LEVEL:-WARNING}" RATE_LIMIT_ENABLED=false
DURATION="${DURATION:-10s}"
PSQL=(psql -q -X -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER")

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }

bench_cleanup() {
    if [ -n "${GUNICORN_PID:-}" ]; then kill "$GUNICORN_PID" 2>/dev/null && wait "$GUNICORN_PID" 2>/dev/null; fi
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
}
trap bench_cleanup EXIT

# start_gunicorn PORT LOGFILE [gunicorn options...]: serve app:app and wait until /live answers.
start_gunicorn() {
    local port=$1 log=$2
    shift 2
    GUNICORN_BIND="127.0.0.1:$port" .venv/bin/gunicorn -c gunicorn.conf.py app:app --log-level warning "$@" \
        >"$log" 2>&1 &
    GUNICORN_PID=$!
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/live" >/dev/null && return 0; sleep 0.2; done
    echo "gunicorn did not start (see $log)"; exit 1
}

# insert_synthetic_payments N: N payments over all methods, mostly SUCCESS, some FAILED, PENDING and
# REFUNDED, with rider and driver ids; 10,000 per transaction (one huge transaction would make the
# stats trigger walk ever longer row-version chains).
insert_synthetic_payments() {
    local rows=$1
    echo "inserting $rows synthetic payments, 10,000 per transaction..."
    "${PSQL[@]}" -d "$DB_NAME" <<SQL
DO \$\$
BEGIN
  FOR batch IN 0 .. ($rows - 1) / 10000 LOOP
    INSERT INTO payments (trip_id, rider_id, driver_id, amount, method, status, reference, created_at, updated_at)
    SELECT 100000 + g, 1 + g % 50000, 1 + g % 5000, round((5 + random() * 80)::numeric, 2),
           (ARRAY['CARD','UPI','WALLET','CASH'])[1 + g % 4],
           CASE WHEN g % 50 = 0 THEN 'FAILED' WHEN g % 97 = 0 THEN 'PENDING' ELSE 'SUCCESS' END,
           'BENCH-' || g, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
    FROM generate_series(batch * 10000 + 1, least((batch + 1) * 10000, $rows)) AS g;
    COMMIT;
  END LOOP;
END
\$\$;
UPDATE payments SET amount_refunded = amount, status = 'REFUNDED' WHERE payment_id % 89 = 0 AND status = 'SUCCESS';
VACUUM ANALYZE payments;
VACUUM ANALYZE payment_stats;
SQL
}
