# syntax=docker/dockerfile:1
# condure (Python) as a container image.
#
#   docker build -t condure .
#   docker run --rm -p 8000:8000 -p 127.0.0.1:5560-5562:5560-5562 condure
#
# Two stages: the builder turns the project and its pinned requirements into
# wheels (compilers live only there, for any dependency without a binary
# wheel on the target platform); the final image installs those wheels and
# nothing else, offline. tests/e2e/test_docker_recipe.py checks this file and
# runs the same pip steps without Docker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt setup.py pyproject.toml README.md LICENSE MANIFEST.in ./
COPY condure ./condure
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels -r requirements.txt .

FROM ${PYTHON_IMAGE}
# tini as PID 1: forwards SIGTERM/SIGINT to condure (graceful stop, exit 0)
# and reaps zombies, so `docker run --init` is not needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# The wheels are bind-mounted from the builder, so they never become a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels condure
RUN useradd --system --uid 10001 --user-group --home-dir /srv/condure --create-home \
        --shell /usr/sbin/nologin condure
# The example handlers, for docker-compose.yml's `handler` service.
COPY examples /srv/condure/examples
# Writable by condure: an ipc:// --zclient-stream base relative to it puts its files here.
WORKDIR /srv/condure
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONDURE_HEALTHCHECK_PORT=8000
USER 10001:10001
# 8000: HTTP/WebSocket clients. 5560-5562: the ZHTTP sockets of
# --zclient-stream tcp://0.0.0.0:5560 (PUSH, ROUTER, SUB) for handlers elsewhere.
EXPOSE 8000 5560 5561 5562
# Needs nothing but Python: healthy while the HTTP port accepts connections.
# Set CONDURE_HEALTHCHECK_PORT when --listen uses another port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('CONDURE_HEALTHCHECK_PORT', '8000'))), 3).close()"]
# Logs go to stdout (condure's line format; --log-level 0-4).
# SIGTERM (docker stop) lets responses finish within --shutdown-timeout (2 s
# by default, under docker's 10 s) and exits 0.
ENTRYPOINT ["/usr/bin/tini", "--", "condure"]
CMD ["--listen", "0.0.0.0:8000", "--zclient-stream", "tcp://0.0.0.0:5560"]
