"""Reading a TOML file that a setting names (a rate card, spend budgets), with errors of the
caller's type that say which file and why, in one line."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def load(path: Path, parse: Callable[[dict[str, Any]], _T], error: type[ValueError], *,
         parse_float: Callable[[str], Any] = float) -> _T:
    """`parse` of the file's table. Unreadable files, bad TOML and what `parse` refuses (an
    `error`) all raise `error`, its message led by the file's path."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"), parse_float=parse_float)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse(raw)
    except error as exc:
        raise error(f"{path}: {exc}") from None
