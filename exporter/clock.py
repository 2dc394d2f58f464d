"""Time as an argument.

Everything that depends on time takes a `Clock`, so that tests can run days of schedule in
milliseconds with `FakeClock` and production uses `SystemClock`. Times are unix seconds (UTC) as
floats at the edges; budget arithmetic converts to integer milliseconds (see `budget.py`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


def to_ms(seconds: float) -> int:
    """Unix seconds to integer milliseconds, rounding half up, so ledger arithmetic is exact."""
    return int(seconds * 1000 + 0.5)


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to.

    `sleep()` parks the caller until `advance()`/`set()` moves time past its deadline; sleepers
    wake in deadline order, each seeing `now()` equal to its own deadline.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, when: float) -> None:
        """Jump to `when` without waking anyone (for pure, synchronous tests)."""
        if when < self._now:
            raise ValueError("FakeClock.set() cannot go backwards; use step_back() on purpose")
        self._now = when

    def step_back(self, seconds: float) -> None:
        """Model a wall-clock step backwards (NTP correction)."""
        self._now -= seconds

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, in order."""
        target = self._now + seconds
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            _, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            fut.set_result(None)
            # Let the woken task run up to its next await before waking the next one.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
