#!/usr/bin/env bash
# Scrape cost: p50/p99 of GET /metrics and GET /metrics/prometheus against gunicorn -w 2,
# with ROWS synthetic payments (default 10000), and what a full-table aggregate would cost instead.
#
#   bash bench/metrics.sh                 # 10,000 payments
#   ROWS=1000000 bash bench/metrics.sh    # a million
source "$(dirname "$0")/common.sh"

PORT="${PORT:-8095}"
ROWS="${ROWS:-10000}"

.venv/bin/python database_setup.py --no-seed >/dev/null
insert_synthetic_payments "$ROWS"

echo "for comparison, one full-table aggregate (what /metrics would run without payment_stats):"
"${PSQL[@]}" -d "$DB_NAME" -c '\timing on' \
    -c "SELECT status, method, count(*), sum(amount), sum(amount_refunded) FROM payments GROUP BY 1, 2" \
    | grep -E '^Time'

start_gunicorn "$PORT" /tmp/bench_metrics_gunicorn.log -w 2 --threads 1

run() {
    local out
    out=$(wrk -t2 -c8 -d"$DURATION" --latency "http://127.0.0.1:$PORT$1")
    printf '%-22s %9s req/s   p50 %8s   p99 %8s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")"
}
echo "payments: $("${PSQL[@]}" -d "$DB_NAME" -Atc 'SELECT count(*) FROM payments'); wrk -t2 -c8 -d$DURATION, gunicorn -w 2"
run /metrics
run /metrics/prometheus
