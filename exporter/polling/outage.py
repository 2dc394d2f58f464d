"""Whether the Partner API answers at all, and when to ask it again while it does not.

Each task backs off on its own after a failure, but when nothing answers (connections refused,
timeouts, resets) every task fails alike: after a restart with 10,000 channels overdue that was
thousands of doomed requests a minute, most of the process, all of them telling the same thing.
After `FAILURES_IN_A_ROW` calls in a row without an HTTP answer, the API counts as down: one
call at a time goes, the most overdue task, at growing intervals (`probe_delay`), and the first
HTTP answer of any status ends the outage; the tasks then go as the ledger allows. Failures with
an answer (5xx, 429, a malformed body) are the tasks' own backoff's business, not this.
Pure: the poller tells it what happened and asks it what may start.
"""

from __future__ import annotations

from exporter import retry

FAILURES_IN_A_ROW = 3
FIRST_PROBE_SECONDS = 5.0
MAX_PROBE_SECONDS = 120.0


def probe_delay(probes_failed: int) -> float:
    """Seconds from a failure to the next probe, after `probes_failed` probes failed already:
    soon at first (a blip ends quickly), then doubling to a couple of minutes."""
    return retry.backoff(probes_failed + 1, FIRST_PROBE_SECONDS, MAX_PROBE_SECONDS)


class Outage:
    def __init__(self) -> None:
        self._in_a_row = 0
        self._probes_failed = 0
        self.since: float | None = None  # when the API last counted as down; None: it is up
        self.next_probe = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def may_start(self, now: float, in_flight: int) -> bool:
        """Whether a request may leave now: always while the API answers; while it does not,
        one at a time, once the next probe is due."""
        return self.since is None or (in_flight == 0 and now >= self.next_probe)

    def unanswered(self, now: float, started: float) -> bool:
        """A call started at `started` got no HTTP answer; True if the API now counts as down
        (this failure began the outage)."""
        if self.since is None:
            self._in_a_row += 1
            if self._in_a_row < FAILURES_IN_A_ROW:
                return False
            self.since = now
            self._probes_failed = 0
            self.next_probe = now + probe_delay(0)
            return True
        # Calls already in flight when it went down fail too; they are not probes. Calls that
        # left together at a probe's time push it back once between them.
        if started >= self.since and now >= self.next_probe:
            self._probes_failed += 1
            self.next_probe = now + probe_delay(self._probes_failed)
        return False

    def answered(self, now: float) -> float | None:
        """An HTTP answer came, of any status: the API is up. Returns how long it was down,
        if it was."""
        self._in_a_row = 0
        if self.since is None:
            return None
        down_for = now - self.since
        self.since = None
        return down_for
