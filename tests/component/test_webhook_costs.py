"""Estimated cost from a rate card, and the month tallies that reconciliation reads."""

from __future__ import annotations

import calendar
from decimal import Decimal

import pytest

from exporter.webhooks.ratecard import parse_rate_card
from exporter.webhooks.state import CALL_COST, COST, UNPRICED
from tests.component.webhooks_kit import Receiver, call_body, status_body

CARD = parse_rate_card({"currency": "USD", "markets": {
    "Germany": {"calling_codes": ["49"], "marketing": "0.1365", "utility": "0.055",
                "call_per_minute": "0.06"}}})
WABA, CH = "104996122399160", "ch_A1"


@pytest.fixture
def rx(tmp_path):
    r = Receiver(tmp_path, rate_card=CARD)
    yield r
    r.state.close()


def statuses(*items):
    """One body with several statuses (wamid, status, category, recipient, type, timestamp)."""
    body = status_body()
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"] = [
        {"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": recipient,
         "pricing": {"billable": ptype == "regular", "pricing_model": "PMP", "type": ptype,
                     "category": category}}
        for wamid, status, category, recipient, ptype, ts in items]
    return body


async def test_each_billable_message_is_priced_once_by_its_recipients_market(rx):
    """sent+delivered+read of one message cost one price; free and unpriced ones cost nothing."""
    t = 1_751_371_200
    await rx.post(statuses(("w1", "sent", "marketing", "4917600000001", "regular", t),
                           ("w1", "delivered", "marketing", "4917600000001", "regular", t),
                           ("w2", "delivered", "utility", "4917600000002", "regular", t),
                           ("w3", "delivered", "service", "4917600000003",
                            "free_customer_service", t),
                           ("w4", "delivered", "marketing", "33612345678", "regular", t)))
    await rx.post(statuses(("w1", "read", "marketing", "4917600000001", "regular", t)))
    cost = rx.state.counters[COST]
    assert cost[(WABA, CH, "marketing", "USD")] == pytest.approx(0.1365)
    assert cost[(WABA, CH, "utility", "USD")] == pytest.approx(0.055)
    assert (WABA, CH, "service", "USD") not in cost
    assert rx.state.counters[UNPRICED] == {(WABA, CH, "marketing"): 1}


async def test_calls_are_priced_per_pulse_for_business_initiated_only(rx):
    """A 56 s business-initiated call to Germany is 10 pulses; user-initiated calls are free."""
    await rx.post(call_body(status="COMPLETED", duration=56))
    await rx.post(call_body(call_id="wacid.2", direction="USER_INITIATED", caller="4917600000000",
                            callee="4915100000000", status="COMPLETED", duration=300))
    assert rx.state.counters[CALL_COST] == {
        (WABA, CH, "business_initiated", "USD"): pytest.approx(float(Decimal("0.06"))),
        (WABA, CH, "user_initiated", "USD"): 0.0}


async def test_months_follow_the_status_timestamp_and_survive_a_restart(tmp_path):
    """Messages are tallied in the UTC month of their status time, and the tally persists."""
    rx = Receiver(tmp_path, rate_card=CARD)
    may = calendar.timegm((2026, 5, 31, 23, 59, 59))
    june = may + 1
    await rx.post(statuses(("a", "delivered", "marketing", "4917600000001", "regular", may),
                           ("b", "delivered", "marketing", "4917600000002", "regular", june),
                           ("c", "delivered", "marketing", "4917600000003", "regular", june)))
    rx.state.close()
    again = Receiver(tmp_path, rate_card=CARD)
    may_start, june_start = calendar.timegm((2026, 5, 1, 0, 0, 0)), calendar.timegm(
        (2026, 6, 1, 0, 0, 0))
    assert again.state.months[may_start][(WABA, CH, "marketing")] == pytest.approx((1, 0.1365))
    assert again.state.months[june_start][(WABA, CH, "marketing")] == pytest.approx((2, 0.273))
    again.state.prune(calendar.timegm((2026, 7, 2, 0, 0, 0)))  # keeps June and July only
    assert list(again.state.months) == [june_start]
    again.state.close()
