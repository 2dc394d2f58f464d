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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from prometheus_client.utils import floatToGoString as _untyped_go_float

from exporter.collector import (
    CHANNEL_FAMILIES,
    CLIENT_BALANCE,
    PARTNER_BALANCE,
    Family,
    Samples,
    UsageCollector,
    balance_samples,
    channel_samples,
)

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"


def om_latest(registry: CollectorRegistry) -> bytes:
    # prometheus-client leaves this one untyped.
    return _om_latest(registry)  # type: ignore[no-untyped-call,no-any-return]


# prometheus-client leaves it untyped; the same function keeps our lines byte-equal to its own.
_go_float = cast("Callable[[float], str]", _untyped_go_float)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def sample_lines(name: str, samples: Samples) -> bytes:
    """Sample lines exactly as prometheus-client writes them (both formats share them)."""
    out = []
    for labels, value in samples:
        series = f"{name}{{{_labels(labels)}}}" if labels else name
        out.append(f"{series} {_go_float(value)}\n")
    return "".join(out).encode()


def header(spec: Family, openmetrics: bool) -> bytes:
    if openmetrics:
        return f"# HELP {spec.name} {_escape(spec.doc)}\n# TYPE {spec.name} {spec.kind}\n".encode()
    name = spec.sample_name
    kind = "gauge" if spec.kind == "info" else spec.kind
    doc = spec.doc.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode()


@dataclass(frozen=True, slots=True)
class _Fragment:
    # What it was rendered from, held so that the identity checks below stay valid.
    sources: tuple[Any, ...]
    lines: tuple[bytes, ...]  # one per CHANNEL_FAMILIES entry


class UsageRenderer:
    """The usage part at fleet scale: each channel's lines are rendered once and kept until
    that channel's data changes (the store replaces its objects on every write, so identity
    tells), then the body is joined from the fragments. Equal byte for byte to
    prometheus-client's rendering of `UsageCollector`, which the tests use as the oracle."""

    def __init__(self, collector: UsageCollector) -> None:
        self._collector = collector
        self._fragments: dict[str, _Fragment] = {}
        self.rendered_channels = 0

    def render(self, openmetrics: bool) -> bytes:
        c = self._collector
        store, month = c.store, c.month()
        channels = c.channels()
        fragments: dict[str, _Fragment] = {}
        for ch in channels:
            usage, balance = store.usage.get(ch.id), store.channel_balances.get(ch.id)
            sources = (ch, usage, balance, month)
            old = self._fragments.get(ch.id)
            if old is None or not _same(old.sources, sources):
                old = _Fragment(sources, tuple(
                    sample_lines(spec.sample_name, samples) for spec, samples in zip(
                        CHANNEL_FAMILIES, channel_samples(ch, usage, balance, month),
                        strict=True)))
                self.rendered_channels += 1
            fragments[ch.id] = old
        self._fragments = fragments
        parts: list[bytes] = []
        for i, spec in enumerate(CHANNEL_FAMILIES):
            parts.append(header(spec, openmetrics))
            parts.extend(f.lines[i] for f in fragments.values())
        clients, partner = balance_samples(store)
        for spec, samples in ((CLIENT_BALANCE, clients), (PARTNER_BALANCE, partner)):
            parts += [header(spec, openmetrics), sample_lines(spec.sample_name, samples)]
        return b"".join(parts)


def _same(a: Iterable[Any], b: Iterable[Any]) -> bool:
    return all(x is y or x == y for x, y in zip(a, b, strict=True))


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
        *,
        usage: UsageCollector | None = None,
    ) -> None:
        """`usage` (the large part, rendered per channel) comes first; then `data`, rendered
        whole by prometheus-client (small parts); then `own`, per scrape."""
        self._usage = UsageRenderer(usage) if usage is not None else None
        self._data = data
        self._own = own
        self._version = version
        self._cache: dict[bool, _Rendered] = {}  # openmetrics? -> rendered usage part
        self.renders = 0

    def _rendered(self, openmetrics: bool) -> _Rendered:
        version = self._version()
        cached = self._cache.get(openmetrics)
        if cached is None or cached.version != version:
            body = b"" if self._usage is None else self._usage.render(openmetrics)
            body += (om_latest(self._data).removesuffix(_EOF) if openmetrics
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
