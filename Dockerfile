# The app as an image: PostgreSQL and Redis run elsewhere (see docs/deploy.md).
#   docker build -t meiqia-app .
#   docker run -p 8000:8000 --env-file /etc/meiqia/env -v /srv/meiqia/data:/data meiqia-app
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REFLEX_CHECK_LATEST_VERSION=false \
    MEIQIA_DATA_DIR=/data \
    PATH=/app/.tools/bun/node_modules/.bin:/app/.venv/bin:$PATH

# Node/npm only to fetch bun from the npm registry; postgresql-client for pg_dump backups.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm postgresql-client curl unzip \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 meiqia

WORKDIR /app
COPY requirements.txt ./
RUN python -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt
RUN npm install --silent --no-audit --no-fund --prefix .tools/bun bun@1.4.4

COPY --chown=meiqia:meiqia . .
# Compile the frontend at build time so a container starts in seconds.
RUN mkdir -p /data && chown -R meiqia:meiqia /app /data
USER meiqia
RUN MEIQIA_DATA_DIR=/tmp/build-data .venv/bin/reflex export --frontend-only --no-zip --env prod \
 && rm -rf /tmp/build-data

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/ping || exit 1
CMD ["sh", "-c", ".venv/bin/python -m meiqia_app migrate && exec .venv/bin/reflex run --env prod --single-port --backend-port 8000 --frontend-port 8000"]
