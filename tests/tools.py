"""The real tools tests drive (Prometheus, promtool, buildah, Helm's SDK...). CI installs them,
so there a missing one fails the test; on a developer's machine it skips."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest


def unavailable(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not available; tests/run.sh installs it")
    pytest.skip(f"{what} not available (tests/run.sh installs it)")


def binary(name: str) -> str:
    """The tool's path, looked up on PATH, beside this Python, and in the sbin directories."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""),
                              "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        unavailable(name)
    return path


def module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(name)
