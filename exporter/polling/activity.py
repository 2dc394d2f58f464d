"""Which channels are idle: no new messages or calls over their last few polls.

Idle channels are weighted down in their WABA's plan so busy ones get fresher data. Pure and
in memory: the poller feeds it each poll's month totals, re-plans when a channel flips, and
persists the idle set so plans survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.domain import MonthUsage


def activity_volume(usage: MonthUsage) -> int:
    """What moves when a channel is active: its messages and its calls this month."""
    return usage.total_volume + sum(c.count for c in usage.calls.values())


class Activity:
    """Channels go idle after `idle_after` polls in a row that found their volume unchanged,
    and busy again at the first poll that finds it changed."""

    def __init__(self, idle_after: int) -> None:
        self.idle_after = idle_after
        self.idle: set[str] = set()  # the live set: plans and slot grids read it
        self._last_volume: dict[str, int] = {}
        self._unchanged: dict[str, int] = {}

    def restore(self, idle: Iterable[str], volumes: Mapping[str, int]) -> None:
        """Resume after a restart: idle channels stay idle until their volume moves."""
        self.idle = set(idle)
        for channel_id, volume in volumes.items():
            self._last_volume[channel_id] = volume
            if channel_id in self.idle:
                self._unchanged[channel_id] = self.idle_after

    def observe(self, channel_id: str, volume: int) -> bool:
        """Take a poll's volume; True if the channel went idle or busy with it."""
        if self._last_volume.get(channel_id) == volume:
            self._unchanged[channel_id] = self._unchanged.get(channel_id, 0) + 1
        else:
            self._unchanged[channel_id] = 0
        self._last_volume[channel_id] = volume
        idle = self._unchanged[channel_id] >= self.idle_after
        if idle == (channel_id in self.idle):
            return False
        if idle:
            self.idle.add(channel_id)
        else:
            self.idle.discard(channel_id)
        return True

    def drop(self, channel_id: str) -> None:
        """The channel is no longer planned here: not idle (its history stays)."""
        self.idle.discard(channel_id)

    def forget(self, channel_id: str) -> None:
        """The channel is gone from the fleet: its history goes (its idle mark stays until
        the plan drops it)."""
        self._last_volume.pop(channel_id, None)
        self._unchanged.pop(channel_id, None)
