"""Every documented webhook body in tests/fixtures/webhooks/ parses into the events it means."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from exporter.webhooks.parser import (
    CallEvent,
    CallStatusEvent,
    Event,
    InboundMessage,
    StatusEvent,
    parse,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
GROUP = "Y2FwaV9ncm91cDoxMDAwMDAwMDAwMDoxMDAwMDAwMDAwMDAwMDAwMDAZD"


def summary(event: Event) -> tuple[Any, ...]:
    """What counting and pricing read of an event."""
    if isinstance(event, StatusEvent):
        p = event.pricing
        return (
            "status",
            event.message_id,
            event.status,
            event.recipient_type,
            event.participant_id,
            event.recipient_phone,
            event.bsuid_country,
            None if p is None else (p.category, p.pricing_type, p.billable),
        )
    if isinstance(event, CallStatusEvent):
        return (
            "call_status",
            event.call_id,
            event.status,
            event.recipient_phone,
            event.bsuid_country,
        )
    if isinstance(event, CallEvent):
        return (
            "call",
            event.call_id,
            event.event,
            event.direction,
            event.status,
            event.duration_seconds,
            event.user_phone,
            event.bsuid_country,
        )
    assert isinstance(event, InboundMessage)
    return (
        "inbound",
        event.message_id,
        event.message_type,
        event.sender,
        event.group_id,
        event.bsuid_country,
    )


# Per fixture, its events: (kind, id, status or event, ...) as `summary` writes them. A phone is
# the recipient's (a group's participant's, a call's user's); a country is the BSUID's.
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "account_update_volume_tier": [],
    "call_connect_user_initiated": [
        ("call", "wacid.TEST0050CALL", "connect", "user_initiated", "", 0, "4917600000050", "DE"),
    ],
    "call_status_accepted": [
        ("call_status", "wacid.TEST0053CALL", "accepted", "4917600000053", "DE"),
    ],
    "call_status_rejected": [
        ("call_status", "wacid.TEST0053CALL", "rejected", "4917600000053", "DE"),
    ],
    "call_status_ringing": [
        ("call_status", "wacid.TEST0053CALL", "ringing", "4917600000053", "DE"),
    ],
    "call_terminate_business_bsuid_only": [
        (
            "call",
            "wacid.TEST0055CALL",
            "terminate",
            "business_initiated",
            "completed",
            30,
            "",
            "US",
        ),
    ],
    "call_terminate_business_completed": [
        (
            "call",
            "wacid.TEST0051CALL",
            "terminate",
            "business_initiated",
            "completed",
            56,
            "4917600000051",
            "DE",
        ),
    ],
    "call_terminate_user_failed_unanswered": [
        (
            "call",
            "wacid.TEST0052CALL",
            "terminate",
            "user_initiated",
            "failed",
            0,
            "4917600000052",
            "",
        ),
    ],
    "call_terminate_user_failed_with_duration": [
        (
            "call",
            "wacid.TEST0054CALL",
            "terminate",
            "user_initiated",
            "failed",
            20,
            "4917600000054",
            "",
        ),
    ],
    "inbound_group_text": [
        ("inbound", "wamid.TEST0025GRPIN", "text", "4917600000025", GROUP, ""),
    ],
    "inbound_text_bsuid_username_only": [
        ("inbound", "wamid.TEST0041IN", "text", "", "", "US"),
    ],
    "inbound_text_message": [
        ("inbound", "wamid.TEST0040IN", "text", "4917600000040", "", "DE"),
    ],
    "mixed_batch_group_and_individual": [
        (
            "status",
            "wamid.TEST0070GRP",
            "delivered",
            "group",
            "4917600000070",
            "4917600000070",
            "",
            ("group_marketing", "regular", True),
        ),
        (
            "status",
            "wamid.TEST0070GRP",
            "delivered",
            "group",
            "4917600000071",
            "4917600000071",
            "",
            ("group_marketing", "regular", True),
        ),
        (
            "status",
            "wamid.TEST0071IND",
            "delivered",
            "individual",
            "",
            "4917600000072",
            "",
            ("authentication", "regular", True),
        ),
        ("status", "wamid.TEST0072IND", "failed", "individual", "", "4917600000073", "", None),
        (
            "status",
            "wamid.TEST0073IND",
            "sent",
            "individual",
            "",
            "4917600000074",
            "",
            ("utility", "regular", True),
        ),
    ],
    "status_bsuid_delivered_no_recipient_id": [
        (
            "status",
            "wamid.TEST0030BSUID",
            "delivered",
            "individual",
            "",
            "",
            "DE",
            ("marketing", "regular", True),
        ),
    ],
    "status_bsuid_sent_to_phone": [
        (
            "status",
            "wamid.TEST0031PHONE",
            "sent",
            "individual",
            "",
            "4917600000031",
            "DE",
            ("utility", "regular", True),
        ),
    ],
    "status_delivered_authentication_international": [
        (
            "status",
            "wamid.TEST0009AUTHINTL",
            "delivered",
            "individual",
            "",
            "919800000009",
            "",
            ("authentication_international", "regular", True),
        ),
    ],
    "status_delivered_authentication_international_hyphen": [
        (
            "status",
            "wamid.TEST0010AUTHINTLH",
            "delivered",
            "individual",
            "",
            "919800000010",
            "",
            ("authentication_international", "regular", True),
        ),
    ],
    "status_delivered_free_customer_service_service": [
        (
            "status",
            "wamid.TEST0006SVC",
            "delivered",
            "individual",
            "",
            "4917600000006",
            "",
            ("service", "free_customer_service", False),
        ),
    ],
    "status_delivered_free_customer_service_utility": [
        (
            "status",
            "wamid.TEST0007UTLFREE",
            "delivered",
            "individual",
            "",
            "4917600000007",
            "",
            ("utility", "free_customer_service", False),
        ),
    ],
    "status_delivered_marketing_lite": [
        (
            "status",
            "wamid.TEST0011MMLITE",
            "delivered",
            "individual",
            "",
            "4917600000011",
            "",
            ("marketing_lite", "regular", True),
        ),
    ],
    "status_delivered_marketing_lite_cost": [
        (
            "status",
            "wamid.TEST0012MMCOST",
            "delivered",
            "individual",
            "",
            "4917600000012",
            "",
            ("marketing_lite", "regular", True),
        ),
    ],
    "status_failed_131049": [
        ("status", "wamid.TEST0004FAIL", "failed", "individual", "", "4917600000004", "", None),
    ],
    "status_group_delivered_group_marketing": [
        (
            "status",
            "wamid.TEST0020GRPMKT",
            "delivered",
            "group",
            "4917600000021",
            "4917600000021",
            "",
            ("group_marketing", "regular", True),
        ),
    ],
    "status_group_delivered_group_service": [
        (
            "status",
            "wamid.TEST0022GRPSVC",
            "delivered",
            "group",
            "4917600000024",
            "4917600000024",
            "",
            ("group_service", "unknown", False),
        ),
    ],
    "status_group_failed": [
        ("status", "wamid.TEST0024GRPFAIL", "failed", "group", "", "", "", None),
    ],
    "status_group_read_group_utility_aggregated": [
        (
            "status",
            "wamid.TEST0021GRPUTL",
            "read",
            "group",
            "4917600000022",
            "4917600000022",
            "",
            ("group_utility", "regular", True),
        ),
        (
            "status",
            "wamid.TEST0021GRPUTL",
            "read",
            "group",
            "4917600000023",
            "4917600000023",
            "",
            ("group_utility", "regular", True),
        ),
    ],
    "status_group_read_without_pricing_alt_participant_key": [
        (
            "status",
            "wamid.TEST0020GRPMKT",
            "read",
            "group",
            "4917600000021",
            "4917600000021",
            "",
            None,
        ),
    ],
    "status_group_sent_no_participant": [
        ("status", "wamid.TEST0023GRPSENT", "sent", "group", "", "", "", None),
    ],
    "status_service_after_oct2026": [
        (
            "status",
            "wamid.TEST0060SVC2026",
            "delivered",
            "individual",
            "",
            "4917600000060",
            "",
            ("service", "regular", True),
        ),
    ],
    "status_v23_delivered_utility_conversation": [
        (
            "status",
            "wamid.TEST0003V23",
            "delivered",
            "individual",
            "",
            "4917600000003",
            "",
            ("utility", "regular", True),
        ),
    ],
    "status_v23_sent_utility_conversation": [
        (
            "status",
            "wamid.TEST0003V23",
            "sent",
            "individual",
            "",
            "4917600000003",
            "",
            ("utility", "regular", True),
        ),
    ],
    "status_v24_delivered_free_entry_point": [
        (
            "status",
            "wamid.TEST0008FEP",
            "delivered",
            "individual",
            "",
            "4917600000008",
            "",
            ("referral_conversion", "free_entry_point", False),
        ),
    ],
    "status_v24_delivered_marketing": [
        (
            "status",
            "wamid.TEST0001MKT",
            "delivered",
            "individual",
            "",
            "4917600000001",
            "",
            ("marketing", "regular", True),
        ),
    ],
    "status_v24_delivered_without_pricing": [
        ("status", "wamid.TEST0005NOPRC", "delivered", "individual", "", "4917600000005", "", None),
    ],
    "status_v24_read_no_pricing": [
        ("status", "wamid.TEST0001MKT", "read", "individual", "", "4917600000001", "", None),
    ],
    "status_v24_read_with_pricing_skipped_delivered": [
        (
            "status",
            "wamid.TEST0002UTL",
            "read",
            "individual",
            "",
            "4917600000002",
            "",
            ("utility", "regular", True),
        ),
    ],
    "status_v24_sent_marketing": [
        (
            "status",
            "wamid.TEST0001MKT",
            "sent",
            "individual",
            "",
            "4917600000001",
            "",
            ("marketing", "regular", True),
        ),
    ],
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_has_its_source_note_and_an_expectation():
    """Each JSON fixture has a non-empty .source note naming its page, and an entry here."""
    names = {p.stem for p in FIXTURES.glob("*.json")}
    notes = {p.stem for p in FIXTURES.glob("*.source")}
    assert names == notes
    assert names == set(EXPECTED)
    for name in names:
        assert (FIXTURES / f"{name}.source").read_text().strip()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_parses_into_its_events(name):
    """A documented body is never refused, and yields exactly the events it describes."""
    assert [summary(e) for e in parse(load(name))] == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parsed_events_survive_the_trip_to_the_main_process(name):
    """Events travel pickled from the webhook workers: each comes back equal."""
    events = parse(load(name))
    assert pickle.loads(pickle.dumps(events)) == events


def test_a_group_status_is_priced_by_its_participant_not_the_group():
    """A group status keeps the group id as recipient_id; its phone is the participant's."""
    (event,) = parse(load("status_group_delivered_group_marketing"))
    assert isinstance(event, StatusEvent)
    assert len(event.recipient_id) == 56
    assert event.recipient_phone == event.participant_id == "4917600000021"


def test_a_bsuid_status_names_its_user_and_parent_whichever_key_spells_the_parent():
    """recipient_parent_user_id and the older parent_recipient_user_id both land in one field."""
    body = load("status_bsuid_delivered_no_recipient_id")
    (event,) = parse(body)
    assert isinstance(event, StatusEvent)
    assert (event.recipient_user_id, event.recipient_parent_user_id) == (
        "DE.1000000000000000030",
        "DE.ENT.2000000000000000030",
    )
    status = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    status["parent_recipient_user_id"] = status.pop("recipient_parent_user_id")
    del status["recipient_user_id"]
    (older,) = parse(body)
    assert isinstance(older, StatusEvent)
    assert (older.recipient_parent_user_id, older.bsuid_country) == (
        "DE.ENT.2000000000000000030",
        "DE",
    )


def test_a_bsuid_status_takes_the_phone_from_contacts_when_they_have_it():
    """Without recipient_id, the phone of the contact with the same user_id is the recipient's."""
    body = load("status_bsuid_delivered_no_recipient_id")
    body["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] = "4917600000030"
    (event,) = parse(body)
    assert isinstance(event, StatusEvent)
    assert (event.recipient_id, event.recipient_phone) == ("", "4917600000030")


@pytest.mark.parametrize(
    ("user_id", "country"),
    [
        ("BR.1502576394655843", "BR"),
        ("us.ENT.11815799212886844830", "US"),
        ("IN.abcDEF123", "IN"),
        ("DEU.123", ""),
        ("1.234", ""),
        ("nodot", ""),
        ("", ""),
    ],
)
def test_the_bsuid_country_is_the_two_letters_before_the_first_dot(user_id, country):
    """Only two ASCII letters before the first dot make a country; anything else gives none."""
    body = load("status_bsuid_delivered_no_recipient_id")
    status = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    status["recipient_user_id"] = user_id
    del status["recipient_parent_user_id"]
    (event,) = parse(body)
    assert isinstance(event, StatusEvent)
    assert event.bsuid_country == country
