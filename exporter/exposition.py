"""Rendered /metrics bodies, cached until the data changes.

The usage part (large: every channel's series) is rendered once per change of the store and kept
as plain text, OpenMetrics and gzip. The exporter's own metrics (small, moving with every API
call) are rendered per scrape and appended; a gzip body is the cached gzip member of the usage
part followed by a fresh member for the rest, which RFC 1952 readers (Prometheus included) join.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"


def om_latest(registry: CollectorRegistry) -> bytes:
    # prometheus-client leaves this one untyped.
    return _om_latest(registry)  # type: ignore[no-untyped-call,no-any-return]


@dataclass(frozen=True, slots=True)
class _Rendered:
    version: int
    text: bytes
    text_gz: bytes
    om: bytes
    om_gz: bytes


class Exposition:
    def __init__(
        self,
        data: CollectorRegistry,
        own: CollectorRegistry,
        version: Callable[[], int],
    ) -> None:
        self._data = data
        self._own = own
        self._version = version
        self._cache: _Rendered | None = None
        self.renders = 0

    def _rendered(self) -> _Rendered:
        version = self._version()
        if self._cache is None or self._cache.version != version:
            text = text_latest(self._data)
            om = om_latest(self._data).removesuffix(_EOF)
            self._cache = _Rendered(
                version, text, gzip.compress(text, 6, mtime=0), om, gzip.compress(om, 6, mtime=0)
            )
            self.renders += 1
        return self._cache

    def body(self, *, openmetrics: bool, compress: bool) -> tuple[bytes, str]:
        cached = self._rendered()
        if openmetrics:
            own, head, head_gz = om_latest(self._own), cached.om, cached.om_gz
            ctype = OPENMETRICS_TYPE
        else:
            own, head, head_gz = text_latest(self._own), cached.text, cached.text_gz
            ctype = TEXT_TYPE
        if compress:
            return head_gz + gzip.compress(own, 1, mtime=0), ctype
        return head + own, ctype
