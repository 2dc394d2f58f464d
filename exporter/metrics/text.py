"""Text rendering primitives: label escaping, Go float formatting and sample lines exactly as
prometheus-client writes them, and the family specs both sources of data render."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client.utils import floatToGoString as _untyped_go_float

Labels = dict[str, str]


Samples = list[tuple[Labels, float]]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # counter, gauge, info
    doc: str

    @property
    def sample_name(self) -> str:
        return self.name + {"counter": "_total", "info": "_info"}.get(self.kind, "")


def escape(value: str) -> str:
    """A label value as prometheus-client escapes it (both formats)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# prometheus-client leaves it untyped; the same function keeps our lines byte-equal to its own.
_go_float = cast("Callable[[float], str]", _untyped_go_float)


_INF = float("inf")


def go_float(value: float) -> str:
    """`floatToGoString`, with its common case inline: a finite float below a million is its
    repr (above, Go switches to exponents; inf and NaN have names)."""
    if type(value) is float and -_INF < value < 1e6:
        return repr(value)
    return _go_float(value)


def sample_lines(name: str, samples: Samples) -> str:
    """Sample lines exactly as prometheus-client writes them (both formats share them), for
    any labels; `channel_lines` is the fast path for the per-channel families."""
    out = []
    for labels, value in samples:
        if labels:
            pairs = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{name}{{{pairs}}} {go_float(value)}\n")
        else:
            out.append(f"{name} {go_float(value)}\n")
    return "".join(out)


class FixedLabels:
    """Sample lines of a family whose samples all carry the same label names, given as value
    tuples in `names` order: the sorted order is worked out once, and each distinct value is
    escaped once per call (a channel's own ids repeat on every line)."""

    def __init__(self, sample_name: str, names: Sequence[str]) -> None:
        self._name = sample_name
        self._order = sorted(range(len(names)), key=names.__getitem__)
        self._heads = [f'{names[i]}="' for i in self._order]

    def lines(self, rows: Iterable[tuple[Sequence[str], float]]) -> str:
        escaped: dict[str, str] = {}
        out = []
        for values, value in rows:
            parts = []
            for head, i in zip(self._heads, self._order, strict=True):
                raw = values[i]
                text = escaped.get(raw)
                if text is None:
                    text = escaped[raw] = escape(raw)
                parts.append(head + text)
            out.append(self._name + "{" + '",'.join(parts) + '"} ' + go_float(value) + "\n")
        return "".join(out)
