"""The fetched past as OpenMetrics text with sample timestamps, for `promtool tsdb
create-blocks-from openmetrics` (VictoriaMetrics and Mimir import the same text).

The series are the live ones: the same names and labels, month-to-date counters that restart
each month. Each carries one sample per UTC day, at the day's last second, holding the month's
total up to the end of that day; a row seen the month before starts the month at 0, as live.
A cost series stops on the day a point of its row came without a cost, as the live one
vanishes then (unknown, not zero), and comes back with the next month.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from exporter.backfill.history import History, MonthHistory
from exporter.calendar import DAY
from exporter.domain import Channel
from exporter.labels import CATEGORIES, DIRECTIONS, OTHER, PRICING_TYPES
from exporter.metrics.text import escape, go_float

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OWN_LABELS = frozenset({"client_id", "waba_id", "channel_id", "category", "pricing_type",
                         "currency", "direction"})

# (family, help); each family's samples are `<family>_total`.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("whatsapp_messages", "Messages in the billing month (UTC) per Get Channel Usage, at the "
     "end of each day; restarts from zero each month."),
    ("whatsapp_cost", "Messaging cost in the billing month, in currency units, at the end of "
     "each day."),
    ("whatsapp_calls", "Voice calls in the billing month, at the end of each day."),
    ("whatsapp_call_duration_seconds", "Voice call duration in the billing month, at the end "
     "of each day."),
    ("whatsapp_call_cost", "Voice call cost in the billing month, in currency units, at the "
     "end of each day."),
)

# One channel's series of one family: sorted label pairs -> [(timestamp, value)].
Series = dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """`name=value` options into labels every sample carries (e.g. job and instance, so the
    past joins the scraped series); a bad or reserved name raises ValueError naming it."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"--label {pair!r}: expected name=value with a Prometheus label "
                             "name")
        if name in _OWN_LABELS:
            raise ValueError(f"--label {name}: the exporter sets that label itself")
        out[name] = value
    return out


def _days(h: MonthHistory) -> range:
    return range(h.month_start, h.end, DAY)


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def channel_series(ch: Channel, months: Sequence[MonthHistory],
                   extra: Mapping[str, str]) -> tuple[Series, ...]:
    """The five families' series of one channel over its fetched months (sorted by month)."""
    base = {"client_id": ch.client_id, "waba_id": ch.waba_label, "channel_id": ch.id} | dict(
        extra)
    messages: Series = {}
    cost: Series = {}
    calls: Series = {}
    duration: Series = {}
    call_cost: Series = {}

    def put(series: Series, labels: Mapping[str, str], t: int, value: float) -> None:
        series.setdefault(tuple(sorted(labels.items())), []).append((t, value))

    before_msg: set[tuple[str, str]] = set()
    before_call: set[str] = set()
    previous_end: int | None = None
    for h in months:
        msg_keys = {(_bounded(c, CATEGORIES), _bounded(p, PRICING_TYPES))
                    for day in h.messages.values() for c, p in day}
        call_keys = {_bounded(d, DIRECTIONS) for day in h.calls.values() for d in day}
        if previous_end == h.month_start:  # a row seen last month restarts at 0, as live
            msg_keys |= before_msg
            call_keys |= before_call
        totals: dict[tuple[str, str], tuple[int, Decimal | None]] = dict.fromkeys(
            msg_keys, (0, Decimal(0)))
        call_totals: dict[str, tuple[int, int, Decimal | None]] = dict.fromkeys(
            call_keys, (0, 0, Decimal(0)))
        for day in _days(h):
            t = day + DAY - 1
            for (c, p), (n, amount) in h.messages.get(day, {}).items():
                key = (_bounded(c, CATEGORIES), _bounded(p, PRICING_TYPES))
                volume, so_far = totals[key]
                totals[key] = (volume + n, None if so_far is None or amount is None
                               else so_far + amount)
            for d, (n, s, amount) in h.calls.get(day, {}).items():
                direction = _bounded(d, DIRECTIONS)
                count, seconds, so_far = call_totals[direction]
                call_totals[direction] = (count + n, seconds + s, None if so_far is None
                                          or amount is None else so_far + amount)
            for (c, p), (volume, amount) in totals.items():
                labels = base | {"category": c, "pricing_type": p}
                put(messages, labels, t, float(volume))
                if amount is not None and h.currency:
                    put(cost, labels | {"currency": h.currency}, t, float(amount))
            for direction, (count, seconds, amount) in call_totals.items():
                labels = base | {"direction": direction}
                put(calls, labels, t, float(count))
                put(duration, labels, t, float(seconds))
                if amount is not None and h.currency:
                    put(call_cost, labels | {"currency": h.currency}, t, float(amount))
        before_msg, before_call, previous_end = msg_keys, call_keys, h.end
    return messages, cost, calls, duration, call_cost


def _lines(family: str, series: Series) -> Iterator[str]:
    for labels, points in series.items():
        head = family + "_total{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels) + "} "
        for t, value in points:
            yield f"{head}{go_float(value)} {t}\n"


ChannelMonths = Iterator[tuple[Channel, list[MonthHistory]]]


def chunks(history: Callable[[], ChannelMonths], extra: Mapping[str, str]) -> Iterator[str]:
    """The whole text in pieces, one family after the other (OpenMetrics keeps a family's
    samples together), one pass over `history()` per family so memory stays one channel's."""
    for index, (family, doc) in enumerate(FAMILIES):
        yield f"# HELP {family} {doc}\n# TYPE {family} counter\n"
        for ch, months in history():
            yield "".join(_lines(family, channel_series(ch, months, extra)[index]))
    yield "# EOF\n"


def write(out: TextIO, history: Callable[[], ChannelMonths], extra: Mapping[str, str]) -> None:
    for chunk in chunks(history, extra):
        out.write(chunk)


def by_channel(months: Iterable[MonthHistory],
               channels: Mapping[str, Channel]) -> ChannelMonths:
    """Group months (ordered by channel, then month) per known channel; months of a channel
    no longer discovered are left out, as its live series are."""
    current: str | None = None
    group: list[MonthHistory] = []
    for h in months:
        if h.channel_id != current:
            if current is not None and current in channels and group:
                yield channels[current], group
            current, group = h.channel_id, []
        group.append(h)
    if current is not None and current in channels and group:
        yield channels[current], group


def from_state(path: Path, channels: Mapping[str, Channel],
               extra: Mapping[str, str]) -> Iterator[str]:
    """The text of the history kept in the state file at `path`, read on a connection of its
    own (so it may run in a thread while the exporter writes)."""
    history = History(path)
    try:
        yield from chunks(lambda: by_channel(history.months(), channels), extra)
    finally:
        history.close()
