# The worker image the k8s/ manifests run. Built elsewhere: this machine has no Docker engine, so
# tests/unit/test_image.py rebuilds the same venv (from this file's COPY lines and the lock) and runs it.
#
# Base pinned by digest: python:3.11-slim as public Docker builds resolved it in 2026 (a BuildKit log shows
# "resolve docker.io/library/python:3.11-slim@sha256:9c900dea..."; about ten public Dockerfiles pin the same
# digest). It was not pulled here: before a release, check it with
# `docker buildx imagetools inspect python:3.11-slim` and move it on purpose.
ARG BASE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The venv holds exactly what image/requirements.lock names (no pip or setuptools from ensurepip): the base
# image's pip installs into it, checks every file against the lock's hashes and resolves nothing.
RUN python -m venv --without-pip /opt/venv
COPY image/requirements.lock /tmp/requirements.lock
RUN pip --python /opt/venv/bin/python install --require-hashes --no-deps --only-binary :all: \
        -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY payments_app ./payments_app
COPY tables ./tables
COPY web ./web
# The project, built by the locked setuptools: no build isolation and no index, so nothing unpinned is fetched.
RUN pip --python /opt/venv/bin/python install --no-deps --no-build-isolation --no-index .

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A data directory the worker's user can write (RocksDB); Kubernetes mounts the pod's volume over it.
RUN groupadd --system --gid 10001 payments \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin payments \
    && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PAYMENTS_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
# Client API; worker-to-worker routes and /metrics (k8s/statefulset.yaml sets both ports in the environment).
EXPOSE 6066 6067
CMD ["faust", "-A", "payments_app.worker", "-L", "uvloop", "-l", "info", "worker"]
