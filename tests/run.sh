#!/usr/bin/env bash
# The test command (README and CI): installs what the tests need, then lints, type-checks and
# runs every test. Re-running is cheap: installs are skipped when already there.
#   ./tests/run.sh            everything but the soak tests (what CI runs)
#   ./tests/run.sh -m soak    the soak tests
#   ./tests/run.sh --fast     lint, type-check, then only tests/unit and tests/component
set -euo pipefail
cd "$(dirname "$0")/.."

paths=()
if [ "${1:-}" = "--fast" ]; then
    shift
    paths=(tests/unit tests/component)
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# Debian tools the tests drive for real: Prometheus and promtool (end-to-end scrapes, alert rule
# tests, dashboard queries), buildah and debootstrap (build and run the container image),
# docker-compose (validates examples/compose.yaml; no Docker daemon needed), wrk (runs the
# saturation benchmark's request script once).
missing=""
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v buildah >/dev/null 2>&1 || missing="$missing buildah"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "${paths[@]}" "$@"
