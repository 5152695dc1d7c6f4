# stockq image: one image for every role.  The default command is the all-in-one daemon
# (`stockq run`, embedded ClickHouse under /var/lib/stockq); ops/docker-compose.yml runs
# `stockq api`, `stockq scheduler` and `stockq worker` from it against a ClickHouse server.
#
#   docker build -t stockq .
#   docker run --init -p 8080:8080 -v stockq-data:/var/lib/stockq \
#       -e STOCKQ_REDIS_URL=redis://redis-host:6379/0 \
#       -e STOCKQ_API_TOKEN=$(openssl rand -hex 32) stockq
#
# The sidecar listens on 0.0.0.0 in the container (STOCKQ_API_HOST below), so it needs a
# bearer token: without STOCKQ_API_TOKEN (or with a placeholder or a token shorter than
# 16 characters) `stockq run` and `stockq api` refuse to start, exit status 5, with one
# line saying so.  Clients send it as `Authorization: Bearer <token>` (/health and
# /metrics need none): to call /api/v1 from outside, generate the token once, keep it,
# and pass that value with -e STOCKQ_API_TOKEN=... (or --env-file).
#
# Run it with an init (`--init`, compose `init: true`): plugins may start processes of
# their own, and an init reaps the ones orphaned by a killed task.

# ---------------------------------------------------------------- build: a virtualenv
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY plugins_bridge/ plugins_bridge/
COPY ops/install-wheel.sh ops/install-wheel.sh
# A wheel of the sources, installed (not editable, without the dev extra) into a new
# virtualenv: the runtime image needs neither the sources nor the build tools.  The
# suite's tests/test_installed.py installs with the same script and runs the result.
RUN bash ops/install-wheel.sh /opt/stockq/.venv \
    && /opt/stockq/.venv/bin/stockq --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim

# A fixed uid/gid, so volumes and bind mounts can be prepared on the host.
RUN groupadd --system --gid 10001 stockq \
    && useradd --system --uid 10001 --gid stockq --home-dir /var/lib/stockq \
        --no-create-home --shell /usr/sbin/nologin stockq \
    && install -d -o stockq -g stockq -m 0750 /var/lib/stockq

COPY --from=build /opt/stockq/.venv /opt/stockq/.venv
# The fake TuShare server for demos and smoke tests:
#   docker run --rm -p 9000:9000 --entrypoint python stockq \
#       /opt/stockq/ops/fake_tushare.py --host 0.0.0.0 --port 9000
COPY ops/fake_tushare.py /opt/stockq/ops/fake_tushare.py

# STOCKQ_API_HOST: inside a container the sidecar must listen on every interface
# (127.0.0.1 would be unreachable through a published port).
ENV PATH=/opt/stockq/.venv/bin:$PATH \
    STOCKQ_DATA_DIR=/var/lib/stockq \
    STOCKQ_API_HOST=0.0.0.0 \
    STOCKQ_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER stockq
WORKDIR /var/lib/stockq

EXPOSE 8080

# Only a role that serves HTTP (`run`, `api`) passes it; the compose file disables it for
# the scheduler and the workers.  urllib, because the slim image has no curl; the empty
# ProxyHandler keeps an inherited HTTP_PROXY from intercepting the loopback request;
# a 503 raises HTTPError, so the exit status is non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; port = os.environ.get('STOCKQ_API_PORT') or '8080'; r = u.build_opener(u.ProxyHandler({})).open(f'http://127.0.0.1:{port}/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# Exec form: stockq is PID 1's child under --init (or PID 1) and receives SIGTERM itself;
# it drains the worker pool within its shutdown grace (give `docker stop` --time 60).
STOPSIGNAL SIGTERM
ENTRYPOINT ["stockq"]
CMD ["run"]
