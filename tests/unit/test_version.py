"""One version: exporter/__init__.py holds it, and every other place that names it agrees."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

from exporter import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_reads_the_version_from_the_package() -> None:
    """pyproject.toml writes no version of its own: setuptools takes exporter.__version__."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "exporter.__version__"}


def test_the_installed_distribution_has_the_package_version() -> None:
    """The installed metadata says exporter.__version__ (reinstall after a bump: ./tests/run.sh
    does)."""
    assert metadata.version("whatsapp-usage-exporter") == __version__


def test_the_chart_version_and_app_version_are_the_package_version() -> None:
    """Chart.yaml's version and appVersion are exporter.__version__."""
    chart = yaml.safe_load((ROOT / "helm" / "whatsapp-usage-exporter" / "Chart.yaml").read_text())
    assert chart["version"] == __version__
    assert chart["appVersion"] == __version__


def test_the_dockerfile_version_default_is_the_package_version() -> None:
    """The Dockerfile's VERSION build argument (the image's version label) defaults to
    exporter.__version__."""
    defaults = re.findall(r"^ARG VERSION=(\S*)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert defaults == [__version__]
