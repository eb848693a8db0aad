#!/usr/bin/env bash
# The README's two commands as a new user runs them: a fresh clone of this checkout's HEAD, no
# database configured (so the embedded PostgreSQL), `make run` until /health answers, then
# `make test`. CI runs it as root and as an ordinary user.
#
#   bash scripts/readme_path.sh [--user NAME] [--run-only]
#
# --user NAME  run both commands as NAME (root only; the user is created, without a home, if it
#              does not exist): the clone and a HOME for pip live in a folder NAME owns.
# --run-only   only `make run` up to /health (no `make test`).
# Prints the seconds from `make run` to /health; exits non-zero if either command fails, or if
# /health does not answer within HEALTH_WAIT seconds (default 300).
set -euo pipefail
user=""
run_only=no
while [ $# -gt 0 ]; do
    case "$1" in
        --user) user=$2; shift 2 ;;
        --run-only) run_only=yes; shift ;;
        *) echo "usage: bash scripts/readme_path.sh [--user NAME] [--run-only]" >&2; exit 2 ;;
    esac
done
source_dir=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/payments-readme-path-XXXXXX)
chmod 755 "$work"
# The clone's reports (the fault scenarios' table) are kept in this checkout, one folder per run.
keep_reports() {
    if [ -d "$work/clone/.ci/artifacts" ]; then
        mkdir -p "$source_dir/.ci/artifacts/readme-path-${user:-root}"
        cp -r "$work/clone/.ci/artifacts/." "$source_dir/.ci/artifacts/readme-path-${user:-root}/" || true
    fi
    rm -rf "$work"
}
trap keep_reports EXIT
git clone --quiet --no-hardlinks "$source_dir" "$work/clone"
mkdir -p "$work/home"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# What a new user's shell has: no DB_HOST or DATABASE_URL (the README's default path), no settings
# left over from CI. PROMTOOL (unpacked by .ci/run) only lets one test lint the metrics.
as_user=()
if [ -n "$user" ]; then
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    chown -R "$user" "$work"
    as_user=(runuser -u "$user" --)
fi
run_env=(env -i "HOME=$work/home" "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" "LANG=C.UTF-8"
         "SERVICE_PORT=$port" ${PROMTOOL:+"PROMTOOL=$PROMTOOL"} ${TEST_WORKERS:+"TEST_WORKERS=$TEST_WORKERS"})
# As root, keep root's PATH: it is where a root user's own Python 3.11 is found.
[ -z "$user" ] && run_env+=("PATH=$PATH")

echo "readme path: fresh clone in $work/clone as ${user:-$(id -un)}, no database configured"
started=$(date +%s.%N)
setsid "${as_user[@]}" "${run_env[@]}" make -C "$work/clone" run >"$work/run.log" 2>&1 &
server=$!
healthy=no
for _ in $(seq 1 "$(( ${HEALTH_WAIT:-300} * 2 ))"); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
        2>/dev/null; then
        healthy=yes
        break
    fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
done
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
kill -TERM -- "-$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
"${as_user[@]}" "${run_env[@]}" make -C "$work/clone" --no-print-directory db-stop >/dev/null 2>&1 || true
if [ "$healthy" != yes ]; then
    echo "readme path: make run did not serve /health (log follows)" >&2
    tail -n 40 "$work/run.log" >&2
    exit 1
fi
echo "readme path: make run served /health ${elapsed} s after it started"
[ "$run_only" = yes ] && exit 0

"${as_user[@]}" "${run_env[@]}" make -C "$work/clone" test
