#!/bin/sh
# Container start command (the Dockerfile's CMD): prepare the database without ever dropping data,
# then hand the process over to gunicorn.
#   DB_WAIT_SECONDS  how long to wait for the database to accept connections (default 60)
#   SEED_ON_START    "true" loads rhfd_payments.csv (rows already present are left alone)
set -eu
cd "$(dirname "$0")/.."

if [ "${SEED_ON_START:-false}" = "true" ]; then
    python database_setup.py --wait "${DB_WAIT_SECONDS:-60}"
else
    python database_setup.py --wait "${DB_WAIT_SECONDS:-60}" --no-seed
fi
exec gunicorn -c gunicorn.conf.py app:app
