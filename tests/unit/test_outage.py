"""When the Partner API counts as down, and when it is asked again (exporter.polling.outage)."""

from __future__ import annotations

from exporter.polling.outage import (
    FAILURES_IN_A_ROW,
    FIRST_PROBE_SECONDS,
    MAX_PROBE_SECONDS,
    Outage,
    probe_delay,
)


def test_a_few_unanswered_calls_are_not_an_outage() -> None:
    outage = Outage()
    for n in range(FAILURES_IN_A_ROW - 1):
        assert outage.unanswered(100.0 + n, 99.0) is False
    assert not outage.down
    assert outage.may_start(105.0, in_flight=10)


def test_an_answer_between_failures_resets_the_count() -> None:
    outage = Outage()
    for n in range(3 * FAILURES_IN_A_ROW):
        if n % (FAILURES_IN_A_ROW - 1) == 0:
            assert outage.answered(100.0 + n) is None
        outage.unanswered(100.0 + n, 99.0)
    assert not outage.down


def test_calls_in_a_row_without_an_answer_make_one_probe_at_a_time() -> None:
    outage = Outage()
    began = [outage.unanswered(100.0, 99.0) for _ in range(FAILURES_IN_A_ROW)]
    assert began == [False] * (FAILURES_IN_A_ROW - 1) + [True]
    assert outage.down
    assert outage.since == 100.0
    assert outage.next_probe == 100.0 + FIRST_PROBE_SECONDS
    assert not outage.may_start(100.0 + FIRST_PROBE_SECONDS - 0.1, in_flight=0)
    assert not outage.may_start(100.0 + FIRST_PROBE_SECONDS, in_flight=1)
    assert outage.may_start(100.0 + FIRST_PROBE_SECONDS, in_flight=0)


def test_calls_already_in_flight_do_not_push_the_probe_back() -> None:
    outage = Outage()
    for _ in range(FAILURES_IN_A_ROW):
        outage.unanswered(100.0, 99.0)
    for _ in range(15):  # the rest of what was in flight when it went down
        assert outage.unanswered(101.0, 99.5) is False
    assert outage.next_probe == 100.0 + FIRST_PROBE_SECONDS


def test_failed_probes_wait_longer_each_time_up_to_the_cap() -> None:
    outage = Outage()
    for _ in range(FAILURES_IN_A_ROW):
        outage.unanswered(0.0, 0.0)
    gaps = []
    for _ in range(8):
        at = outage.next_probe
        outage.unanswered(at + 1.0, at)  # the probe left on time and failed a second later
        outage.unanswered(at + 1.5, at)  # one sent beside it (a slot's first round) too
        gaps.append(outage.next_probe - (at + 1.0))
    assert gaps == [probe_delay(n) for n in range(1, 9)]
    assert gaps[0] == 2 * FIRST_PROBE_SECONDS
    assert gaps[-1] == MAX_PROBE_SECONDS
    assert gaps == sorted(gaps)


def test_any_answer_ends_the_outage_and_says_how_long_it_lasted() -> None:
    outage = Outage()
    for _ in range(FAILURES_IN_A_ROW):
        outage.unanswered(100.0, 99.0)
    assert outage.answered(400.0) == 300.0
    assert not outage.down
    assert outage.may_start(400.0, in_flight=16)
    assert outage.answered(401.0) is None
