"""One backoff formula and one Retry-After reader, for the poller and the forwarder."""

from __future__ import annotations

import pytest

from exporter.retry import backoff, retry_after_seconds


def test_backoff_doubles_from_the_base_up_to_the_cap():
    """The first retry waits the base, each further one twice as long, never over the cap."""
    assert [backoff(n, 15.0, 100.0) for n in range(1, 6)] == [15.0, 30.0, 60.0, 100.0, 100.0]


def test_backoff_survives_any_number_of_failures():
    """Thousands of failures in a row still give the cap, not an overflow."""
    assert backoff(5000, 1.0, 300.0) == 300.0


@pytest.mark.parametrize(("value", "seconds"), [
    ("42", 42.0), ("1.5", 1.5), (" 7 ", 7.0), ("-3", 0.0), (None, None), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),
])
def test_retry_after_reads_seconds_never_negative(value, seconds):
    """Retry-After in seconds is read as given (at least 0); a date or nonsense reads as None."""
    assert retry_after_seconds(value) == seconds
