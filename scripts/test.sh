#!/usr/bin/env sh
# The whole suite (what `make test` runs): usage  sh scripts/test.sh PYTHON [PYTEST ARGS...]
#
# Everything but the fault scenarios runs on two pytest-xdist workers (each with a database of
# its own); then the fault scenarios run alone, since they time outages and recoveries and must
# not share the machine's two cores with other tests. FAULTS=no skips them. Then, when Debian's
# pgbouncer is installed, the HTTP tests (tests/api) run again through PgBouncer in transaction mode
# (scripts/with_pgbouncer.py); POOLER=no skips that part, and without pgbouncer it is skipped.
set -u
python=$1
shift
"$python" -m pytest -m "not faults" -n "${TEST_WORKERS:-2}" "$@"
fast=$?
faults=5
if [ "${FAULTS:-yes}" != "no" ]; then
    "$python" -m pytest -m faults "$@"
    faults=$?
fi
pooled=0
if [ "${POOLER:-yes}" != "no" ] && { command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; }; then
    "$python" scripts/with_pgbouncer.py -- "$python" -m pytest tests/api -m "not faults" -n "${TEST_WORKERS:-2}" "$@"
    pooled=$?
    [ "$pooled" -eq 5 ] && pooled=0
fi
# pytest exits 5 when a selection (say -k health) leaves one of the two parts empty: that part did
# not fail. The run fails if either part failed, or if neither ran a test.
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
[ "$pooled" -eq 0 ] && passed "$fast" && passed "$faults" && { [ "$fast" -eq 0 ] || [ "$faults" -eq 0 ]; }
