#!/usr/bin/env sh
# The whole suite (what `make test` runs): usage  sh scripts/test.sh PYTHON [PYTEST ARGS...]
#
# Everything but the fault scenarios runs on two pytest-xdist workers (each with a database of
# its own); then the fault scenarios run alone, since they time outages and recoveries and must
# not share the machine's two cores with other tests. FAULTS=no skips them.
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
# pytest exits 5 when a selection (say -k health) leaves one of the two parts empty: that part did
# not fail. The run fails if either part failed, or if neither ran a test.
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
passed "$fast" && passed "$faults" && { [ "$fast" -eq 0 ] || [ "$faults" -eq 0 ]; }
