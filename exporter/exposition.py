"""Rendered /metrics bodies, cached until the data changes.

The usage part (large: every channel's series) is rendered once per change of the store, in the
format a scraper asks for (plain text or OpenMetrics, and its gzip), only when one asks for it.
At fleet scale a whole rendering costs seconds, so it is built from blocks of a few dozen
channels: a block's lines (and their deflated form) are kept until one of its channels changes,
and a body is the join of the blocks. For gzip, each block is deflated on its own and ends on a
sync flush, so the blocks concatenate into one ordinary deflate stream; the gzip checksum of the
whole is combined from the blocks' checksums (`crc32_combine`, which the standard library lacks:
hence zlib-ng). The exporter's own metrics (small, moving with every API call) are rendered per
scrape and appended.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from prometheus_client.utils import floatToGoString as _untyped_go_float
from zlib_ng import zlib_ng

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
from exporter.domain import Channel

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


# Channels per block: small enough that a change re-joins and re-deflates little (a block is
# about 14 KB per family), large enough that a 10,000-channel body is a few thousand pieces.
BLOCK_CHANNELS = 32
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime
_FINAL_BLOCK = b"\x03\x00"  # an empty, final, fixed-Huffman deflate block


@dataclass(frozen=True, slots=True)
class Deflated:
    """Raw deflate of some bytes, ending byte-aligned on a sync flush and not final, so pieces
    concatenate into one stream; with the checksum and length the gzip trailer needs."""

    data: bytes
    crc: int
    size: int


def deflate(data: bytes) -> Deflated:
    state = zlib_ng.compressobj(6, zlib_ng.DEFLATED, -15)
    return Deflated(state.compress(data) + state.flush(zlib_ng.Z_SYNC_FLUSH),
                    zlib_ng.crc32(data), len(data))


def joined(parts: Sequence[Deflated]) -> Deflated:
    crc, size = 0, 0
    for part in parts:
        crc = zlib_ng.crc32_combine(crc, part.crc, part.size)
        size += part.size
    return Deflated(b"".join(part.data for part in parts), crc, size)


def gzip_member(whole: Deflated) -> bytes:
    """One gzip member: some clients read only the first of several."""
    trailer = struct.pack("<II", whole.crc, whole.size & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, whole.data, _FINAL_BLOCK, trailer))


class Piece:
    """A run of body bytes; deflated on the first gzip scrape, then kept with it."""

    __slots__ = ("_deflated", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._deflated: Deflated | None = None

    def deflated(self) -> Deflated:
        if self._deflated is None:
            self._deflated = deflate(self.data)
        return self._deflated


@dataclass(frozen=True, slots=True)
class _Fragment:
    # What it was rendered from, held so that the identity checks below stay valid.
    sources: tuple[Any, ...]
    lines: tuple[bytes, ...]  # one per CHANNEL_FAMILIES entry


@dataclass(frozen=True, slots=True)
class _Block:
    fragments: tuple[_Fragment, ...]
    pieces: tuple[Piece, ...]  # per CHANNEL_FAMILIES entry: these channels' lines, joined


class UsageRenderer:
    """The usage part at fleet scale: each channel's lines are rendered once and kept until
    that channel's data changes; blocks of channels are joined (and deflated) once and kept
    until one of their channels changes. The store's journal names the channels written since
    the last look, so a change costs its own channel and block, not a walk over the fleet.
    Equal byte for byte to prometheus-client's rendering of `UsageCollector`, which the tests
    use as the oracle."""

    def __init__(self, collector: UsageCollector) -> None:
        self._collector = collector
        self._fragments: dict[str, _Fragment] = {}
        self._order: list[str] = []  # exposed channel ids, in exposition order
        self._block_of: dict[str, int] = {}
        self._blocks: list[_Block] = []
        self._seen: tuple[int, int] | None = None  # (store layout, month) of the blocks
        self._cursor = 0
        self._headers: dict[tuple[str, bool], Piece] = {}
        self.rendered_channels = 0
        self.joined_blocks = 0

    def update(self, *, deflate: bool = False) -> None:
        """Bring the blocks up to date with the store; deflate new blocks now if asked (a
        background refresh does, so that a gzip scrape finds little left to compress)."""
        c = self._collector
        store, month = c.store, c.month()
        cursor, written = store.journal.since(self._cursor)
        self._cursor = cursor
        if written is None or self._seen != (store.journal.layout, month):
            self._seen = (store.journal.layout, month)
            fresh = self._full(month)
        else:
            fresh = self._changed(set(written), month)
        if deflate:
            for block in fresh:
                for piece in block.pieces:
                    piece.deflated()

    def _fragment(self, ch: Channel, month: int) -> _Fragment:
        store = self._collector.store
        usage, balance = store.usage.get(ch.id), store.channel_balances.get(ch.id)
        sources = (ch, usage, balance, month)
        old = self._fragments.get(ch.id)
        if old is not None and _same(old.sources, sources):
            return old
        self.rendered_channels += 1
        return _Fragment(sources, tuple(
            sample_lines(spec.sample_name, samples) for spec, samples in zip(
                CHANNEL_FAMILIES, channel_samples(ch, usage, balance, month), strict=True)))

    def _full(self, month: int) -> list[_Block]:
        channels = self._collector.channels()
        self._fragments = {ch.id: self._fragment(ch, month) for ch in channels}
        self._order = [ch.id for ch in channels]
        self._block_of = {ch_id: i // BLOCK_CHANNELS for i, ch_id in enumerate(self._order)}
        old, self._blocks = self._blocks, []
        fresh = []
        for index in range((len(self._order) + BLOCK_CHANNELS - 1) // BLOCK_CHANNELS):
            group = self._group(index)
            block = old[index] if index < len(old) else None
            if block is None or len(block.fragments) != len(group) or not all(
                    a is b for a, b in zip(block.fragments, group, strict=True)):
                block = self._join(group)
                fresh.append(block)
            self._blocks.append(block)
        return fresh

    def _changed(self, written: set[str], month: int) -> list[_Block]:
        store = self._collector.store
        dirty = set()
        for ch_id in written:
            index = self._block_of.get(ch_id)
            ch = store.channels.get(ch_id)
            if index is None or ch is None:
                continue  # not exposed here
            fragment = self._fragment(ch, month)
            if fragment is not self._fragments[ch_id]:
                self._fragments[ch_id] = fragment
                dirty.add(index)
        fresh = []
        for index in dirty:
            self._blocks[index] = block = self._join(self._group(index))
            fresh.append(block)
        return fresh

    def _group(self, index: int) -> tuple[_Fragment, ...]:
        ids = self._order[index * BLOCK_CHANNELS:(index + 1) * BLOCK_CHANNELS]
        return tuple(self._fragments[ch_id] for ch_id in ids)

    def _join(self, group: tuple[_Fragment, ...]) -> _Block:
        self.joined_blocks += 1
        return _Block(group, tuple(Piece(b"".join(f.lines[i] for f in group))
                                   for i in range(len(CHANNEL_FAMILIES))))

    def render(self, openmetrics: bool) -> list[Piece]:
        self.update()
        pieces: list[Piece] = []
        for i, spec in enumerate(CHANNEL_FAMILIES):
            pieces.append(self._header(spec, openmetrics))
            pieces.extend(block.pieces[i] for block in self._blocks)
        clients, partner = balance_samples(self._collector.store)
        for spec, samples in ((CLIENT_BALANCE, clients), (PARTNER_BALANCE, partner)):
            pieces += [self._header(spec, openmetrics),
                       Piece(sample_lines(spec.sample_name, samples))]
        return pieces

    def _header(self, spec: Family, openmetrics: bool) -> Piece:
        key = (spec.name, openmetrics)
        piece = self._headers.get(key)
        if piece is None:
            piece = self._headers[key] = Piece(header(spec, openmetrics))
        return piece


def _same(a: Iterable[Any], b: Iterable[Any]) -> bool:
    return all(x is y or x == y for x, y in zip(a, b, strict=True))


@dataclass(slots=True)
class _Rendered:
    """One format of the data part at one version of the data; deflated and combined on the
    first gzip scrape. Plain bodies are sent as their pieces: joining first only adds a copy
    (and the first pieces reach the socket sooner)."""

    version: int
    pieces: list[Piece]
    _deflated: Deflated | None = None

    def deflated(self) -> Deflated:
        if self._deflated is None:
            self._deflated = joined([p.deflated() for p in self.pieces])
        return self._deflated


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
        self._cache: dict[bool, _Rendered] = {}  # openmetrics? -> rendered data part
        self._asked: set[bool] = set()  # compress? as scrapers have asked
        self.renders = 0

    def refresh(self) -> None:
        """Catch the usage part up with the store between scrapes (the app calls this every
        second or so), so a scrape has at most a second's changes left to render. Nothing
        before the first scrape: nobody may ever ask."""
        if self._usage is not None and self._asked:
            self._usage.update(deflate=True in self._asked)

    def _rendered(self, openmetrics: bool) -> _Rendered:
        version = self._version()
        cached = self._cache.get(openmetrics)
        if cached is None or cached.version != version:
            pieces = [] if self._usage is None else self._usage.render(openmetrics)
            pieces.append(Piece(om_latest(self._data).removesuffix(_EOF) if openmetrics
                                else text_latest(self._data)))
            cached = self._cache[openmetrics] = _Rendered(version, pieces)
            self.renders += 1
        return cached

    def chunks(self, *, openmetrics: bool, compress: bool) -> tuple[list[bytes], str]:
        """The body as chunks to send in order (no copy of the large part per scrape)."""
        cached = self._rendered(openmetrics)
        own = om_latest(self._own) if openmetrics else text_latest(self._own)
        ctype = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        self._asked.add(compress)
        if compress:
            return [gzip_member(joined([cached.deflated(), deflate(own)]))], ctype
        return [*(p.data for p in cached.pieces), own], ctype

    def body(self, *, openmetrics: bool, compress: bool) -> tuple[bytes, str]:
        chunks, ctype = self.chunks(openmetrics=openmetrics, compress=compress)
        return b"".join(chunks), ctype
