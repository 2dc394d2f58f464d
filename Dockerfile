# whatsapp-usage-exporter: Prometheus exporter for WhatsApp Business usage and cost via 360dialog.
#
#   docker build -t whatsapp-usage-exporter .
#   docker run --rm -p 10360:10360 -p 10361:10361 --read-only \
#       -v wue-state:/var/lib/whatsapp-usage-exporter whatsapp-usage-exporter
#
# With no D360_* credentials it runs the demo against its built-in simulator.
#
# BASE_IMAGE may be any Debian-like image with Python 3.11+ at `python3` and the venv module:
# the official python:*-slim images, or plain Debian bookworm with python3-venv. Both stages use
# it, because the venv's interpreter is a symlink to the base image's python3.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# Offline builds: pass a directory of wheels (the dependencies and setuptools) mounted into the
# build, e.g. `buildah bud -v "$PWD/wheels:/wheelhouse:ro" --build-arg WHEELHOUSE=/wheelhouse`.
# Chosen over mounting the host's CA bundle because it needs no network, no pip.conf and no
# proxy settings inside the build (none of the host's pip configuration reaches a RUN step),
# and it installs exactly the wheels the host resolved. Left empty (the default), pip installs
# from PyPI as usual.
ARG WHEELHOUSE=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# The venv links to the base image's python3; the runtime stage (same BASE_IMAGE) has it too.
RUN python3 -m venv /opt/whatsapp-usage-exporter

COPY pyproject.toml README.md /src/
COPY exporter /src/exporter

# The pyc files are written now, as unchecked hashes: the image never changes, so Python loads
# them without looking at source mtimes (COPY --from need not keep those), and nothing has to
# write a pyc at run time (the root filesystem may be read-only). pip and setuptools go: the
# runtime image installs nothing. The build fails if the rate card (package data) is missing.
RUN set -eu; \
    venv=/opt/whatsapp-usage-exporter; \
    "$venv/bin/python" -m pip install --no-compile ${WHEELHOUSE:+--no-index --find-links=$WHEELHOUSE} /src; \
    "$venv/bin/python" -m pip uninstall --yes --quiet pip setuptools; \
    "$venv/bin/python" -m compileall -q -j 0 -f --invalidation-mode unchecked-hash "$venv"; \
    ls "$venv"/lib/python3*/site-packages/exporter/webhooks/ratecards/example-usd.toml; \
    "$venv/bin/whatsapp-usage-exporter" --version


FROM ${BASE_IMAGE}

ARG BASE_IMAGE
# exporter.__version__ (tests/unit/test_version.py holds the two equal)
ARG VERSION=0.1.0
ARG REVISION=""

LABEL org.opencontainers.image.title="whatsapp-usage-exporter" \
      org.opencontainers.image.description="Prometheus exporter for WhatsApp Business usage and cost through 360dialog's Partner API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# No account is needed for a numeric USER; the directory is the only place the exporter writes
# (the SQLite file and its -wal/-shm beside it).
RUN install -d -o 10360 -g 10360 -m 0750 /var/lib/whatsapp-usage-exporter

COPY --from=builder /opt/whatsapp-usage-exporter /opt/whatsapp-usage-exporter

ENV PATH=/opt/whatsapp-usage-exporter/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    D360_STATE_PATH=/var/lib/whatsapp-usage-exporter/state.sqlite3 \
    D360_LOG_FORMAT=json

VOLUME ["/var/lib/whatsapp-usage-exporter"]
WORKDIR /var/lib/whatsapp-usage-exporter
USER 10360:10360
# 10360: /metrics, /healthz, /readyz. 10361: the webhook receiver.
EXPOSE 10360 10361
ENTRYPOINT ["whatsapp-usage-exporter"]
