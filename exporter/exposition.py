"""Rendered /metrics bodies, cached until the data changes.

The usage part (large: every channel's series) is rendered once per change of the store, in the
format a scraper asks for (plain text or OpenMetrics, and its gzip), only when one asks for it:
at fleet scale each rendering costs seconds, and Prometheus asks for one format only. The
exporter's own metrics (small, moving with every API call) are rendered per scrape and appended.
For gzip, the usage part is compressed once up to a sync flush and the compressor's state is
kept; each scrape continues a copy of that state with its own small tail, so the body is one
ordinary gzip stream (some clients read only the first member of a multi-member file) and the
large part is never compressed twice.
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


@dataclass(slots=True)
class _Rendered:
    """One format of the usage part at one version of the data; gzip made on first demand."""

    version: int
    body: bytes
    gz: _GzipPrefix | None = None


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
        self._cache: dict[bool, _Rendered] = {}  # openmetrics? -> rendered usage part
        self.renders = 0

    def _rendered(self, openmetrics: bool) -> _Rendered:
        version = self._version()
        cached = self._cache.get(openmetrics)
        if cached is None or cached.version != version:
            body = (om_latest(self._data).removesuffix(_EOF) if openmetrics
                    else text_latest(self._data))
            cached = self._cache[openmetrics] = _Rendered(version, body)
            self.renders += 1
        return cached

    def body(self, *, openmetrics: bool, compress: bool) -> tuple[bytes, str]:
        cached = self._rendered(openmetrics)
        own = om_latest(self._own) if openmetrics else text_latest(self._own)
        ctype = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        if compress:
            if cached.gz is None:
                cached.gz = _GzipPrefix(cached.body)
            return cached.gz.finish(own), ctype
        return cached.body + own, ctype
