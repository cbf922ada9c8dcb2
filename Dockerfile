# syntax=docker/dockerfile:1
# The mail proxy as a container: `mail-proxy serve` as an unprivileged user.
#
#   docker build -t mail-proxy .
#   docker run -d -p 8000:8000 -v mail-proxy-data:/data \
#     -e GMP_API_TOKEN=... -e GMP_ENCRYPTION_KEY="$(mail-proxy keygen)" mail-proxy
#
# SQLite lives in the /data volume (one instance per database file). For several
# instances sharing PostgreSQL, see config/docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY proxy ./proxy
COPY actors ./actors
# The postgresql extra: the driver peewee needs for several instances on PostgreSQL.
RUN pip install ".[postgresql]" \
    && groupadd --system --gid 10001 mailproxy \
    && useradd --system --uid 10001 --gid mailproxy --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin mailproxy \
    && mkdir -p /data \
    && chown mailproxy:mailproxy /data \
    && chmod 0700 /data

ENV GMP_HOST=0.0.0.0 \
    GMP_PORT=8000 \
    GMP_DB_PATH=/data/mail_service.db \
    GMP_LOG_FORMAT=json \
    GMP_SHUTDOWN_TIMEOUT=10

VOLUME ["/data"]
WORKDIR /data
EXPOSE 8000
USER mailproxy:mailproxy

# Slim images have no curl: probe /health with Python's own urllib (exit 1 on any error).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GMP_PORT', '8000') + '/health', timeout=4)"]

# SIGTERM starts the graceful shutdown; give it more than GMP_SHUTDOWN_TIMEOUT
# (docker stop -t 30, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mail-proxy"]
CMD ["serve"]
