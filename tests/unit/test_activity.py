"""Channels go idle when their polls find nothing new, and busy when they find something."""

from __future__ import annotations

from decimal import Decimal

from exporter.domain import CallTotal, MessageTotal, MonthUsage
from exporter.polling.activity import Activity, activity_volume


def test_volume_counts_messages_and_calls():
    """A channel's activity is its month's message volume plus its call count."""
    usage = MonthUsage(0, "USD", {("marketing", "regular"): MessageTotal(5, Decimal(1)),
                                  ("utility", "regular"): MessageTotal(2, Decimal(1))},
                       {"business_initiated": CallTotal(3, 60, Decimal(0))})
    assert activity_volume(usage) == 10


def test_a_channel_goes_idle_after_enough_unchanged_polls():
    """The first poll sets the baseline; idle after `idle_after` unchanged polls, not before."""
    activity = Activity(idle_after=3)
    assert not activity.observe("ch", 7)
    assert not activity.observe("ch", 7)
    assert not activity.observe("ch", 7)
    assert "ch" not in activity.idle
    assert activity.observe("ch", 7)  # the third unchanged poll flips it
    assert activity.idle == {"ch"}
    assert not activity.observe("ch", 7)  # still idle: no flip


def test_one_changed_poll_makes_an_idle_channel_busy():
    """Any change in volume makes an idle channel busy at once, and the count starts over."""
    activity = Activity(idle_after=2)
    for _ in range(3):
        activity.observe("ch", 1)
    assert activity.idle == {"ch"}
    assert activity.observe("ch", 2)
    assert activity.idle == set()
    assert not activity.observe("ch", 2)
    assert activity.observe("ch", 2)


def test_a_restart_keeps_idle_channels_idle_until_they_move():
    """Restored idle channels stay idle on unchanged polls and flip on the first change."""
    activity = Activity(idle_after=3)
    activity.restore(["a", "b"], {"a": 5, "b": 9})
    assert not activity.observe("a", 5)
    assert activity.idle == {"a", "b"}
    assert activity.observe("b", 10)
    assert activity.idle == {"a"}


def test_forgetting_a_channel_restarts_its_count():
    """A channel gone from the fleet loses its history; if it comes back it starts over."""
    activity = Activity(idle_after=1)
    activity.observe("ch", 4)
    activity.forget("ch")
    assert not activity.observe("ch", 4)  # a baseline again, not an unchanged poll
    assert activity.observe("ch", 4)


def test_dropping_a_channel_clears_only_its_idle_mark():
    """A channel leaving the plan is no longer idle, but its history stays."""
    activity = Activity(idle_after=1)
    activity.observe("ch", 4)
    activity.observe("ch", 4)
    activity.drop("ch")
    assert activity.idle == set()
    assert activity.observe("ch", 4)  # unchanged again: idle at once
