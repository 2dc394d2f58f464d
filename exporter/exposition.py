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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from prometheus_client.utils import floatToGoString as _untyped_go_float
from zlib_ng import zlib_ng

from exporter.collector import Family, Samples
from exporter.journal import Journal

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"
K = TypeVar("K")


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


class Fragments(Protocol[K]):
    """A large part of the body, one fragment of sample lines per key (a channel), for a
    `BlockRenderer`. Its journal names the keys written since a reader last looked."""

    @property
    def journal(self) -> Journal[K]: ...

    @property
    def families(self) -> Sequence[Family]: ...

    def view(self) -> object:
        """What every fragment depends on besides its key's own data (e.g. the month)."""
        ...

    def keys(self) -> list[K]:
        """The keys in exposition order."""
        ...

    def samples(self, key: K) -> Sequence[Samples]:
        """One list per family."""
        ...

    def tail(self) -> list[tuple[Family, Samples]]:
        """Small families after the per-key ones, rendered whole each time."""
        ...


@dataclass(frozen=True, slots=True)
class _Block:
    fragments: tuple[tuple[bytes, ...], ...]
    pieces: tuple[Piece, ...]  # per family: these keys' lines, joined


class BlockRenderer(Generic[K]):
    """A part at fleet scale: each key's lines are rendered once and kept until the journal
    names that key; blocks of keys are joined (and deflated) once and kept until one of their
    keys changes, so a change costs its own key and block, not a walk over the fleet. Equal
    byte for byte to prometheus-client's rendering of the same samples (the tests check)."""

    def __init__(self, source: Fragments[K]) -> None:
        self._source = source
        self._fragments: dict[K, tuple[bytes, ...]] = {}
        self._order: list[K] = []
        self._block_of: dict[K, int] = {}
        self._blocks: list[_Block] = []
        self._seen: tuple[int, object] | None = None  # (journal layout, view) of the blocks
        self._cursor = 0
        self._headers: dict[tuple[str, bool], Piece] = {}
        self.rendered_keys = 0
        self.joined_blocks = 0

    def update(self, *, deflate: bool = False) -> None:
        """Bring the blocks up to date; deflate new blocks now if asked (a background refresh
        does, so that a gzip scrape finds little left to compress)."""
        source = self._source
        self._cursor, written = source.journal.since(self._cursor)
        seen = (source.journal.layout, source.view())
        if written is None or self._seen is None or seen[1] != self._seen[1]:
            self._fragments = {}  # nothing is known to be current
            written = None
        else:
            for key in written:
                self._fragments.pop(key, None)
        if written is None or seen != self._seen:
            self._seen = seen
            self._order = source.keys()
            self._block_of = {key: i // BLOCK_CHANNELS for i, key in enumerate(self._order)}
            count = (len(self._order) + BLOCK_CHANNELS - 1) // BLOCK_CHANNELS
            check: Iterable[int] = range(count)  # blocks whose keys did not move stay as they are
        else:
            count = len(self._blocks)
            check = {self._block_of[key] for key in written if key in self._block_of}
        blocks: list[_Block | None] = [*self._blocks[:count],
                                       *[None] * (count - len(self._blocks))]
        fresh = []
        for index in check:
            group = tuple(self._fragment(key) for key in
                          self._order[index * BLOCK_CHANNELS:(index + 1) * BLOCK_CHANNELS])
            block = blocks[index]
            if block is None or len(block.fragments) != len(group) or not all(
                    a is b for a, b in zip(block.fragments, group, strict=True)):
                blocks[index] = block = self._join(group)
                fresh.append(block)
        self._blocks = [block for block in blocks if block is not None]
        if deflate:
            for block in fresh:
                for piece in block.pieces:
                    piece.deflated()

    def _fragment(self, key: K) -> tuple[bytes, ...]:
        lines = self._fragments.get(key)
        if lines is None:
            self.rendered_keys += 1
            lines = self._fragments[key] = tuple(
                sample_lines(spec.sample_name, samples) for spec, samples in zip(
                    self._source.families, self._source.samples(key), strict=True))
        return lines

    def _join(self, group: tuple[tuple[bytes, ...], ...]) -> _Block:
        self.joined_blocks += 1
        return _Block(group, tuple(Piece(b"".join(lines[i] for lines in group))
                                   for i in range(len(self._source.families))))

    def render(self, openmetrics: bool) -> list[Piece]:
        self.update()
        pieces: list[Piece] = []
        for i, spec in enumerate(self._source.families):
            pieces.append(self._header(spec, openmetrics))
            pieces.extend(block.pieces[i] for block in self._blocks)
        for spec, samples in self._source.tail():
            pieces += [self._header(spec, openmetrics),
                       Piece(sample_lines(spec.sample_name, samples))]
        return pieces

    def _header(self, spec: Family, openmetrics: bool) -> Piece:
        key = (spec.name, openmetrics)
        piece = self._headers.get(key)
        if piece is None:
            piece = self._headers[key] = Piece(header(spec, openmetrics))
        return piece


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
        parts: Sequence[Fragments[Any]] = (),
    ) -> None:
        """`parts` (the large ones, rendered per channel) come first; then `data`, rendered
        whole by prometheus-client (small parts); then `own`, per scrape."""
        self._parts = [BlockRenderer(part) for part in parts]
        self._data = data
        self._own = own
        self._version = version
        self._cache: dict[bool, _Rendered] = {}  # openmetrics? -> rendered data part
        self._asked: set[bool] = set()  # compress? as scrapers have asked
        self._scraped: list[float] = []  # monotonic times of the last two scrapes
        self.renders = 0

    def refresh(self) -> None:
        """Catch the large parts up with their data between scrapes (the app calls this every
        `refresh_interval()`), so a scrape finds little left to render. Nothing before the
        first scrape: nobody may ever ask."""
        if self._asked:
            for part in self._parts:
                part.update(deflate=True in self._asked)

    def _rendered(self, openmetrics: bool) -> _Rendered:
        version = self._version()
        cached = self._cache.get(openmetrics)
        if cached is None or cached.version != version:
            pieces = [piece for part in self._parts for piece in part.render(openmetrics)]
            pieces.append(Piece(om_latest(self._data).removesuffix(_EOF) if openmetrics
                                else text_latest(self._data)))
            cached = self._cache[openmetrics] = _Rendered(version, pieces)
            self.renders += 1
        return cached

    def refresh_interval(self) -> float:
        """How often a background refresh pays: a third of the time between scrapes (at least
        a second). Under a webhook stream most channels change within any few seconds, and
        rendering a channel once per scrape beats once per second."""
        if len(self._scraped) < 2:
            return 1.0
        return max(1.0, (self._scraped[1] - self._scraped[0]) / 3)

    def chunks(self, *, openmetrics: bool, compress: bool) -> tuple[list[bytes], str]:
        """The body as chunks to send in order (no copy of the large part per scrape)."""
        cached = self._rendered(openmetrics)
        own = om_latest(self._own) if openmetrics else text_latest(self._own)
        ctype = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        self._asked.add(compress)
        self._scraped = [*self._scraped[-1:], time.monotonic()]
        if compress:
            return [gzip_member(joined([cached.deflated(), deflate(own)]))], ctype
        return [*(p.data for p in cached.pieces), own], ctype

    def body(self, *, openmetrics: bool, compress: bool) -> tuple[bytes, str]:
        chunks, ctype = self.chunks(openmetrics=openmetrics, compress=compress)
        return b"".join(chunks), ctype
