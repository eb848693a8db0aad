#!/usr/bin/env bash
# Property-based fuzzing of the live service from its own OpenAPI document (schemathesis).
# Starts gunicorn -w 2 with an API key on a throwaway database, runs every operation with all
# checks (server errors, status codes, content types, response schemas, ...) including stateful
# links, and keeps the reports in ${FUZZ_REPORT_DIR:-.ci/artifacts}. Bounded by FUZZ_MAX_TIME seconds.
#
#   bash scripts/fuzz.sh          (after `make install`; DB_* as for the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-5432}" DB_USER="${DB_USER:-postgres}"
# INFO: one JSON access line per request, from which the 5xx count below is taken.
export DB_NAME="payments_fuzz_$$" LOG_LEVEL=INFO
# A fake trip service whose trips are COMPLETED, except that a trip id divisible by 3 is ACCEPTED at
# its first look, so charges can succeed and holds can be placed and then captured.
export RATE_LIMIT_ENABLED=false NOTIFY_DISPATCHER_ENABLED=false
export API_KEYS="fuzzer:fuzz-key-not-secret"
PORT="${PORT:-8096}"
REPORT_DIR="${FUZZ_REPORT_DIR:-.ci/artifacts}"
MAX_TIME="${FUZZ_MAX_TIME:-150}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-40}"
PY=.venv/bin/python

cleanup() {
    [ -n "${GUNICORN_PID:-}" ] && kill "$GUNICORN_PID" 2>/dev/null && wait "$GUNICORN_PID" 2>/dev/null
    [ -n "${TRIPS_PID:-}" ] && kill "$TRIPS_PID" 2>/dev/null
    $PY - <<PY || true
import psycopg2
from config import Config
c = Config.from_env().with_overrides({"DB_NAME": "postgres"})
conn = psycopg2.connect(c.get_database_uri()); conn.autocommit = True
conn.cursor().execute('DROP DATABASE IF EXISTS "$DB_NAME" WITH (FORCE)'); conn.close()
PY
}
trap cleanup EXIT

mkdir -p "$REPORT_DIR"
rm -f "$REPORT_DIR"/junit-*.xml "$REPORT_DIR"/ndjson-*.ndjson
$PY -m tests.fakes >"$REPORT_DIR/fake-trips.url" 2>/dev/null &
TRIPS_PID=$!
for _ in $(seq 1 50); do [ -s "$REPORT_DIR/fake-trips.url" ] && break; sleep 0.1; done
export TRIP_SERVICE_URL="$(cat "$REPORT_DIR/fake-trips.url")"
$PY database_setup.py >/dev/null
GUNICORN_BIND="127.0.0.1:$PORT" .venv/bin/gunicorn -c gunicorn.conf.py app:app -w 2 --threads 4 \
    --log-level warning >"$REPORT_DIR/fuzz-server.log" 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && break; sleep 0.2; done

# Fresh trips for charges and holds (scripts/fuzz_hooks.py), so their links are walked.
PYTHONPATH=. SCHEMATHESIS_HOOKS=scripts.fuzz_hooks .venv/bin/schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
    --header "Authorization: Bearer fuzz-key-not-secret" \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --seed "${FUZZ_SEED:-20261126}" \
    --request-timeout 10 \
    --report junit,ndjson \
    --report-dir "$REPORT_DIR" \
    --exclude-path /docs/assets/{filename} \
    2>&1 | tee "$REPORT_DIR/schemathesis.txt"
status=${PIPESTATUS[0]}
kill "$GUNICORN_PID" && wait "$GUNICORN_PID" 2>/dev/null || true
GUNICORN_PID=
# The server's own access log counts every response, whatever schemathesis reports.
$PY - "$REPORT_DIR/fuzz-server.log" <<'PY' | tee -a "$REPORT_DIR/schemathesis.txt"
import collections, json, sys
statuses = collections.Counter()
for line in open(sys.argv[1]):
    if line.startswith("{"):
        entry = json.loads(line)
        if entry.get("logger") == "payment_service.access":
            statuses[entry["status"] // 100 * 100] += 1
total, errors = sum(statuses.values()), sum(n for s, n in statuses.items() if s >= 500)
print(f"server: {total} requests answered; by class {dict(sorted(statuses.items()))}; 5xx: {errors}")
sys.exit(1 if errors else 0)
PY
server_status=$?
[ "$status" -eq 0 ] && [ "$server_status" -eq 0 ]
