"""Which keys were written since a reader last looked: lets a renderer redo only those.

A bounded list of keys, one per write, with a cursor readers keep. A reader left behind by more
than `limit` writes is told to look at everything instead.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

JOURNAL_LIMIT = 65_536  # writes remembered


class Journal(Generic[K]):
    def __init__(self) -> None:
        self.layout = 0  # bumped when the set of keys changes
        self._keys: list[K] = []
        self._start = 0  # the cursor of _keys[0]

    def written(self, key: K) -> None:
        self._keys.append(key)
        if len(self._keys) > JOURNAL_LIMIT:
            drop = len(self._keys) // 2
            del self._keys[:drop]
            self._start += drop

    def relayout(self) -> None:
        self.layout += 1

    def since(self, cursor: int) -> tuple[int, list[K] | None]:
        """The keys written since `cursor` (0, or what the last call returned) and the new
        cursor; None when the journal no longer reaches back that far: look at every key."""
        end = self._start + len(self._keys)
        if cursor < self._start:
            return end, None
        return end, self._keys[cursor - self._start:]
