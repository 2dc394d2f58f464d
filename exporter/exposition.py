"""Rendered /metrics bodies, cached until the data changes.

The usage part (large: every channel's series) is rendered once per change of the store and kept
as plain text, OpenMetrics and gzip. The exporter's own metrics (small, moving with every API
call) are rendered per scrape and appended. For gzip, the usage part is compressed once up to a
sync flush and the compressor's state is kept; each scrape continues a copy of that state with
its own small tail, so the body is one ordinary gzip stream (some clients read only the first
member of a multi-member file) and the large part is never compressed twice.
"""

from __future__ import annotations

import zlib
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


class _GzipPrefix:
    """A gzip stream of `head`, left open so any tail can be appended in one stream."""

    def __init__(self, head: bytes) -> None:
        self._state = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip header and trailer
        self.data = self._state.compress(head) + self._state.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, tail: bytes) -> bytes:
        state = self._state.copy()
        return self.data + state.compress(tail) + state.flush(zlib.Z_FINISH)


@dataclass(frozen=True, slots=True)
class _Rendered:
    version: int
    text: bytes
    text_gz: _GzipPrefix
    om: bytes
    om_gz: _GzipPrefix


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
            self._cache = _Rendered(version, text, _GzipPrefix(text), om, _GzipPrefix(om))
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
            return head_gz.finish(own), ctype
        return head + own, ctype
