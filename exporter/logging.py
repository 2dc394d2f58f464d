"""structlog, configured once: JSON lines in production, readable console output locally.

Secrets never reach a log line: the API client logs endpoints, never headers or URLs with keys,
and a last processor masks any value known to be secret, in case a future call site slips.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO, cast

import structlog


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a
    stream captured at configure time may be closed by then (test runners swap it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    secret_values = [s for s in secrets if s and len(s) >= 4]

    def mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str) and any(s in value for s in secret_values):
                masked = value
                for secret in secret_values:
                    masked = masked.replace(secret, "********")
                event[key] = masked
        return event

    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
