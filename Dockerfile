# Payment service image: gunicorn serving app:app as the unprivileged user paymentservice (UID 1000).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SERVICE_PORT=8082 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/payment-service-metrics

RUN groupadd --gid 1000 paymentservice \
    && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin paymentservice

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when the runtime lock changes. requirements.txt
# pins every package, transitive ones too, with the hashes of all its files (`make lock` writes it):
# pip checks each download against them and installs nothing unlisted.
COPY requirements.txt ./
RUN pip install --require-hashes -r requirements.txt

COPY --chown=root:root . .

USER paymentservice
EXPOSE 8082

# /ready answers 200 only when the database is reachable and migrated; urllib needs no extra package.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('SERVICE_PORT', '8082'), timeout=3)"]

# Applies migrations (never drops anything), optionally seeds, then execs gunicorn.
CMD ["sh", "scripts/start.sh"]
