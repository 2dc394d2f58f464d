"""Rendered /metrics bodies, cached until the data changes.

Whether the cached body is current is decided here alone (`Exposition.freshness`): from the
version of each source of data (`Versioned`: the store, the webhook state, the reconciler) and
the view of each large part (`Fragments.view`: for the usage part, the reporting month, so the
body follows the month switch without anything marking the store changed).

The usage part (large: every channel's series) is rendered once per change of its data, in the
format a scraper asks for (plain text or OpenMetrics, and its gzip), only when one asks for it.
At fleet scale a whole rendering is slow, so it is built from blocks of a few dozen channels:
a block's lines (and their deflated form) are kept until one of its channels changes, and a body
is the join of the blocks. For gzip, each block is deflated on its own and ends on a
sync flush, so the blocks concatenate into one ordinary deflate stream; the gzip checksum of the
whole is combined from the blocks' checksums (`crc32_combine`, which the standard library lacks:
hence zlib-ng). The exporter's own metrics (small, moving with every API call) are rendered per
scrape and appended.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from zlib_ng import zlib_ng

from exporter.metrics.journal import Journal
from exporter.metrics.text import Family, Samples, escape, sample_lines

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"
K = TypeVar("K")


def om_latest(registry: CollectorRegistry) -> bytes:
    # prometheus-client leaves this one untyped.
    return _om_latest(registry)  # type: ignore[no-untyped-call,no-any-return]


def header(spec: Family, openmetrics: bool) -> bytes:
    if openmetrics:
        return f"# HELP {spec.name} {escape(spec.doc)}\n# TYPE {spec.name} {spec.kind}\n".encode()
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


# zlib-ng's level 2 rather than the customary 6: under a webhook stream every scrape deflates
# most blocks again, and the scrape's CPU is what competes with the webhooks; somewhat more bytes
# on the wire is the cheaper side (bench/README.md has the measurements).
DEFLATE_LEVEL = 2


def deflate(data: bytes) -> Deflated:
    state = zlib_ng.compressobj(DEFLATE_LEVEL, zlib_ng.DEFLATED, -15)
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


def inflate(data: bytes) -> bytes:
    return zlib_ng.decompressobj(-15).decompress(data)


class Piece:
    """A run of body bytes, plain and, from the first gzip scrape on, deflated. While no
    scraper has asked for plain text (Prometheus always asks for gzip) only the deflated form
    is kept, a small fraction of the size; a plain scrape later inflates it back."""

    __slots__ = ("_data", "_deflated")

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self._deflated: Deflated | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._deflated is not None  # one of the two is always kept
            self._data = inflate(self._deflated.data)
        return self._data

    def deflated(self, *, keep_plain: bool = True) -> Deflated:
        if self._deflated is None:
            assert self._data is not None
            self._deflated = deflate(self._data)
        if not keep_plain:
            self._data = None
        return self._deflated


class Versioned(Protocol):
    """A source of the data part. Its `version` moves on with every change the body could
    show; while every source's version (and every part's view) stands, the cached body is
    current."""

    @property
    def version(self) -> int: ...


class Fragments(Protocol[K]):
    """A large part of the body, sample lines per key (a channel), for a `BlockRenderer`. Its
    journal names the keys written since a reader last looked."""

    @property
    def journal(self) -> Journal[K]: ...

    @property
    def families(self) -> Sequence[Family]: ...

    def view(self) -> object:
        """What every key's lines depend on besides its own data (e.g. the reporting month).
        A change renders the whole part anew, and is enough to make the cached body stale:
        the part need not mark its data changed as well."""
        ...

    def keys(self) -> list[K]:
        """The keys in exposition order."""
        ...

    def lines(self, key: K, view: object) -> Sequence[str]:
        """The key's sample lines, one string per family, as prometheus-client writes them."""
        ...

    def tail(self) -> list[tuple[Family, Samples]]:
        """Small families after the per-key ones, rendered whole each time."""
        ...


# Longest stretch of rendering between two turns of the event loop: a block takes about a
# millisecond, and a webhook batch gathers for five.
SLICE_SECONDS = 0.01


async def in_slices(steps: Generator[None, None, None]) -> None:
    """Run `steps`, letting the event loop run every `SLICE_SECONDS`."""
    try:
        deadline = time.perf_counter() + SLICE_SECONDS
        for _ in steps:
            if time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + SLICE_SECONDS
    finally:
        steps.close()  # a cancelled run hands what it did not reach to the next one


@dataclass(frozen=True, slots=True, eq=False)
class _Block:
    keys: tuple[Any, ...]
    pieces: tuple[Piece, ...]  # per family: these keys' lines


class BlockRenderer(Generic[K]):
    """A part at fleet scale, in blocks of `BLOCK_CHANNELS` keys: a block's lines are rendered
    (and deflated) once and kept until the journal names one of its keys, so a change costs
    its own block, not a walk over the fleet. Only the block's text is kept, not each key's
    lines as well: re-rendering a block's keys is cheap. Equal byte for byte to
    prometheus-client's rendering of the same samples (the tests check)."""

    def __init__(self, source: Fragments[K]) -> None:
        self._source = source
        self._block_of: dict[K, int] = {}
        self._blocks: list[_Block] = []
        self._seen: tuple[int, object] | None = None  # (journal layout, view) of the blocks
        self._cursor = 0
        self._pending: set[K] = set()  # keys an unfinished update did not reach
        self._headers: dict[tuple[str, bool], Piece] = {}
        self.rendered_keys = 0
        self.joined_blocks = 0

    def update(self, *, deflate: bool = False, keep_plain: bool = True) -> None:
        """Bring the blocks up to date; deflate new blocks now if asked (a background refresh
        does, so that a gzip scrape finds little left to compress), keeping their plain text
        only if `keep_plain`."""
        for _ in self.steps(deflate=deflate, keep_plain=keep_plain):
            pass

    def steps(self, *, deflate: bool = False,
              keep_plain: bool = True) -> Generator[None, None, None]:
        """`update` one block at a time: it yields after each block it renders, so that a caller
        can let the event loop run in between (under a webhook stream most blocks change
        between scrapes, a second of work in one go). A step left unfinished loses nothing: the
        blocks it did not reach are rendered by the next update."""
        source = self._source
        self._cursor, written = source.journal.since(self._cursor)
        view = source.view()
        seen = (source.journal.layout, view)
        if written is None or self._seen is None or view != self._seen[1]:
            stale: set[K] | None = None  # nothing is known to be current
        else:
            stale = set(written) | self._pending
        self._pending = set()
        if stale is None or seen != self._seen:
            self._seen = None  # until the new layout is complete
            order = source.keys()
            groups = [tuple(order[i:i + BLOCK_CHANNELS])
                      for i in range(0, len(order), BLOCK_CHANNELS)]
            old, blocks = self._blocks, []
            for i, group in enumerate(groups):
                # A block whose keys neither moved nor changed stays as it is.
                if (stale is not None and i < len(old) and old[i].keys == group
                        and stale.isdisjoint(group)):
                    blocks.append(old[i])
                else:
                    blocks.append(self._render(group, view, deflate, keep_plain))
                    yield
            self._blocks = blocks
            self._block_of = {key: i // BLOCK_CHANNELS for i, key in enumerate(order)}
            self._seen = seen
            return
        indices = sorted({self._block_of[key] for key in stale if key in self._block_of})
        done = 0
        try:
            for index in indices:
                block = self._render(self._blocks[index].keys, view, deflate, keep_plain)
                self._blocks[index] = block
                done += 1
                yield
        finally:
            for index in indices[done:]:
                self._pending.update(self._blocks[index].keys)

    def stale_share(self, at_least: float) -> float:
        """The share of blocks the next update would render (1.0 when it would lay the part
        out anew), counted up to `at_least` of them: enough to compare with it."""
        source = self._source
        _, written = source.journal.since(self._cursor)
        if (written is None or self._seen is None or not self._blocks
                or (source.journal.layout, source.view()) != self._seen):
            return 1.0
        enough = at_least * len(self._blocks)
        block_of = self._block_of
        stale: set[int] = set()
        for keys in (written, self._pending):
            for key in keys:
                index = block_of.get(key)
                if index is not None:
                    stale.add(index)
                    if len(stale) > enough:
                        return len(stale) / len(self._blocks)
        return len(stale) / len(self._blocks)

    def _render(self, keys: tuple[K, ...], view: object, deflate: bool,
                keep_plain: bool) -> _Block:
        self.rendered_keys += len(keys)
        self.joined_blocks += 1
        lines = [self._source.lines(key, view) for key in keys]
        block = _Block(keys, tuple(Piece("".join([each[i] for each in lines]).encode())
                                   for i in range(len(self._source.families))))
        if deflate:
            for piece in block.pieces:
                piece.deflated(keep_plain=keep_plain)
        return block

    def pieces(self, openmetrics: bool) -> list[Piece]:
        """The part's body as it stands (`update` first)."""
        pieces: list[Piece] = []
        for i, spec in enumerate(self._source.families):
            pieces.append(self._header(spec, openmetrics))
            pieces.extend(block.pieces[i] for block in self._blocks)
        for spec, samples in self._source.tail():
            pieces += [self._header(spec, openmetrics),
                       Piece(sample_lines(spec.sample_name, samples).encode())]
        return pieces

    def _header(self, spec: Family, openmetrics: bool) -> Piece:
        key = (spec.name, openmetrics)
        piece = self._headers.get(key)
        if piece is None:
            piece = self._headers[key] = Piece(header(spec, openmetrics))
        return piece


# Above this share of a part's blocks changed, a background refresh leaves it to the scrape.
AHEAD_STALE_SHARE = 0.5

# Each source's version, then each part's view (see `Exposition.freshness`).
Freshness = tuple[tuple[int, ...], tuple[object, ...]]


@dataclass(slots=True)
class _Rendered:
    """One format of the data part at one freshness of the data; deflated and combined on the
    first gzip scrape. Plain bodies are sent as their pieces: joining first only adds a copy
    (and the first pieces reach the socket sooner)."""

    freshness: Freshness
    pieces: list[Piece]
    _deflated: Deflated | None = None

    def deflated(self, *, keep_plain: bool) -> Deflated:
        if self._deflated is None:
            self._deflated = joined([p.deflated(keep_plain=keep_plain) for p in self.pieces])
        return self._deflated


class Exposition:
    def __init__(
        self,
        data: CollectorRegistry,
        own: CollectorRegistry,
        sources: Sequence[Versioned],
        *,
        parts: Sequence[Fragments[Any]] = (),
    ) -> None:
        """`parts` (the large ones, rendered per channel) come first; then `data`, rendered
        whole by prometheus-client (small parts); then `own`, per scrape. `sources` are what
        `parts` and `data` are rendered from."""
        self._parts = [BlockRenderer(part) for part in parts]
        self._views: tuple[Callable[[], object], ...] = tuple(part.view for part in parts)
        self._data = data
        self._own = own
        self._sources = tuple(sources)
        self._cache: dict[bool, _Rendered] = {}  # openmetrics? -> rendered data part
        self._asked: set[bool] = set()  # compress? as scrapers have asked
        self._scraped: list[float] = []  # monotonic times of the last two scrapes
        self._lock = asyncio.Lock()  # one sliced update at a time
        self.renders = 0

    def refresh(self) -> None:
        """Catch the large parts up with their data between scrapes (the app calls `arefresh`
        every `refresh_interval()`), so a scrape finds little left to render. Nothing before
        the first scrape: nobody may ever ask. A part with most of its blocks changed is left
        to the scrape (`_ahead`)."""
        if self._asked:
            for part in self._ahead():
                part.update(**self._keeping())

    async def arefresh(self) -> None:
        """`refresh` in slices that let the event loop run in between."""
        if self._asked:
            async with self._lock:
                for part in self._ahead():
                    await in_slices(part.steps(**self._keeping()))

    def _ahead(self) -> list[BlockRenderer[Any]]:
        """The parts worth rendering ahead of the next scrape: those with at most
        `AHEAD_STALE_SHARE` of their blocks changed. Where more changed within a part of the
        scrape interval (a webhook stream over the fleet), nearly every block changes again
        before the scrape, which renders it once more: rendering ahead only doubled or
        tripled the rendering, a fifth of the process under a stream (bench/README.md)."""
        return [part for part in self._parts
                if part.stale_share(AHEAD_STALE_SHARE) <= AHEAD_STALE_SHARE]

    async def awarm(self) -> None:
        """Render the large parts once, before any scrape has asked: a process starts to be
        scraped, and the first scrape after a restart then finds the fleet rendered. Rendered
        as for a scraper asking only gzip (Prometheus does): deflated, without the plain text,
        unless a scrape has asked otherwise meanwhile; a plain scrape inflates what it needs."""
        async with self._lock:
            await self._catch_up(self._keeping() if self._asked
                                 else {"deflate": True, "keep_plain": False})

    async def _catch_up(self, keeping: dict[str, bool]) -> None:
        """Every large part brought up to date, in slices that let the event loop run."""
        for part in self._parts:
            await in_slices(part.steps(**keeping))

    def _keeping(self) -> dict[str, bool]:
        # While scrapers ask only for gzip, each block is deflated as soon as it is rendered
        # and its text dropped, so the whole text never exists at once (34 MB at fleet scale,
        # which the allocator would keep after it was freed).
        return {"deflate": True in self._asked, "keep_plain": False in self._asked}

    def freshness(self) -> Freshness:
        """What the data part is rendered from: every source's version and every part's view.
        The one test of whether a cached body is current: it is while this stands."""
        return (tuple(source.version for source in self._sources),
                tuple(view() for view in self._views))

    def _current(self, openmetrics: bool) -> tuple[Freshness, _Rendered | None]:
        """The data's freshness, and the cached body if it is of that freshness."""
        freshness = self.freshness()
        cached = self._cache.get(openmetrics)
        current = cached is not None and cached.freshness == freshness
        return freshness, cached if current else None

    def _rendered(self, openmetrics: bool) -> _Rendered:
        freshness, cached = self._current(openmetrics)
        if cached is None:
            for part in self._parts:
                part.update(**self._keeping())
            cached = self._assemble(openmetrics, freshness)
        return cached

    async def _arendered(self, openmetrics: bool) -> _Rendered:
        # The freshness is read before the parts catch up: what changes meanwhile may already
        # be in the body, and is rendered again by the next scrape; nothing is missed.
        freshness, cached = self._current(openmetrics)
        if cached is None:
            await self._catch_up(self._keeping())
            cached = self._assemble(openmetrics, freshness)
        return cached

    def _assemble(self, openmetrics: bool, freshness: Freshness) -> _Rendered:
        pieces = [piece for part in self._parts for piece in part.pieces(openmetrics)]
        pieces.append(Piece(om_latest(self._data).removesuffix(_EOF) if openmetrics
                            else text_latest(self._data)))
        self.renders += 1
        cached = self._cache[openmetrics] = _Rendered(freshness, pieces)
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
        self._asked.add(compress)
        return self._finish(self._rendered(openmetrics), openmetrics, compress)

    async def achunks(self, *, openmetrics: bool, compress: bool) -> tuple[list[bytes], str]:
        """`chunks`, rendering in slices that let the event loop run in between (the app's
        scrapes: a scrape that finds most blocks changed would stall every webhook for as
        long as it renders)."""
        self._asked.add(compress)
        async with self._lock:
            cached = await self._arendered(openmetrics)
            return self._finish(cached, openmetrics, compress)

    def _finish(self, cached: _Rendered, openmetrics: bool,
                compress: bool) -> tuple[list[bytes], str]:
        own = om_latest(self._own) if openmetrics else text_latest(self._own)
        ctype = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        self._scraped = [*self._scraped[-1:], time.monotonic()]
        if compress:
            whole = cached.deflated(keep_plain=False in self._asked)
            return [gzip_member(joined([whole, deflate(own)]))], ctype
        return [*(p.data for p in cached.pieces), own], ctype

    def body(self, *, openmetrics: bool, compress: bool) -> tuple[bytes, str]:
        chunks, ctype = self.chunks(openmetrics=openmetrics, compress=compress)
        return b"".join(chunks), ctype
