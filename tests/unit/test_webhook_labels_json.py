"""The counters table's key text: the direct form must be `json.dumps`'s, byte for byte, or a
series would be stored twice under two keys."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from exporter.webhooks.state import labels_json


@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_same_text_as_json_dumps(values: list[str]) -> None:
    labels = tuple(values)
    assert labels_json(labels) == json.dumps(labels)


def test_awkward_values_take_json_dumps() -> None:
    for value in ('a"b', "a\\b", "é", "tab\there", "\x7f", "line\nbreak", ""):
        labels = ("wa_1", "ch_1", value)
        assert labels_json(labels) == json.dumps(labels)
