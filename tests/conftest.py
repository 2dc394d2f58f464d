"""Shared test set-up: quiet, structured logs (warnings and up) so failures stay readable."""

from __future__ import annotations

import pytest

from exporter.logging import configure


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    configure("console", "warning")
