"""Meta-format webhook bodies, as 360dialog relays them, read into plain events.

Pure functions: a body either yields a list of events or raises `MalformedWebhook` with a short
reason (the receiver answers 400 with it). Both Graph shapes are accepted: up to v23 a status may
carry `conversation` beside `pricing`; from v24 only `pricing`. Unknown fields are ignored;
unknown `field`s (templates, account updates) yield no events but are not errors.

What a body may hold, each with a fixture in `tests/fixtures/webhooks/` naming its page:
- message statuses (`StatusEvent`), to a phone, to a business-scoped user id (BSUID: no
  `recipient_id`, only `recipient_user_id`) or to a group (`recipient_type: "group"`, the group
  id in `recipient_id`, one status per participant);
- call events under `field: "calls"`: `calls[]` connect/terminate (`CallEvent`) and `statuses[]`
  of `type: "call"` (RINGING, ACCEPTED, REJECTED: `CallStatusEvent`, never message statuses);
- inbound `messages[]` (`InboundMessage`), whose `from` is absent for users known only by BSUID.
Each event says whose market it is priced in: a phone where there is one, else the country of
the BSUID, else nothing (never a guess).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any, TypeVar

T = TypeVar("T")


def compact_pickle(cls: type[T]) -> type[T]:
    """Pickled as a call of the class with its fields in a tuple. Events travel pickled from
    the webhook workers to the main process, and for frozen slotted dataclasses pickle's own
    form took three times as long to load there (41 against 12 µs a delivery)."""
    fields = attrgetter(*cls.__slots__)  # type: ignore[attr-defined]

    def reduce(self: T) -> tuple[Callable[..., T], tuple[Any, ...]]:
        return cls, fields(self)

    setattr(cls, "__reduce__", reduce)  # noqa: B010 - mypy refuses assigning a method
    return cls


class MalformedWebhook(ValueError):
    """The body is not a Meta webhook we can read; the message says what is wrong."""


@compact_pickle
@dataclass(frozen=True, slots=True)
class Pricing:
    billable: bool | None  # None: the webhook did not say (counting decides, by the time)
    pricing_model: str
    category: str
    pricing_type: str  # "" when neither `type` nor `billable` was given
    cost: Decimal | None = None  # `pricing.cost.amount`: what Meta charged (max price)
    cost_currency: str = ""  # `pricing.cost.currency`, upper case


@compact_pickle
@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A message status. For a group, `recipient_id` is the group's id and each participant's
    delivery is its own status (and its own charge), told apart by `participant_id`."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    message_id: str
    status: str
    timestamp: int
    recipient_id: str  # as sent: a phone, a group id, or "" when sent to a BSUID
    pricing: Pricing | None
    recipient_type: str = "individual"  # or "group"
    participant_id: str = ""  # groups: the participant (a phone in Meta's examples)
    recipient_user_id: str = ""  # the BSUID, e.g. BR.1502576394655843
    recipient_parent_user_id: str = ""  # e.g. US.ENT.11815799212886844830
    recipient_phone: str = ""  # digits of whoever received it (the participant for groups)
    bsuid_country: str = ""  # ISO country of the recipient's BSUID, upper case, or ""


@compact_pickle
@dataclass(frozen=True, slots=True)
class CallEvent:
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    call_id: str
    event: str  # connect, terminate, ...
    direction: str
    status: str  # terminate: completed / failed; else ""
    duration_seconds: int
    timestamp: int
    caller: str  # `from`: the user for user-initiated calls, the business otherwise
    callee: str  # `to`: whose market prices a business-initiated call ("" if only a BSUID)
    caller_user_id: str = ""  # `from_user_id`
    callee_user_id: str = ""  # `to_user_id`
    user_phone: str = ""  # digits of the user's side (the callee of a business-initiated call)
    bsuid_country: str = ""  # ISO country of the user's BSUID, upper case, or ""


@compact_pickle
@dataclass(frozen=True, slots=True)
class CallStatusEvent:
    """RINGING, ACCEPTED or REJECTED of a business-initiated call (`field: "calls"`): no
    pricing, no duration; the terminate event that follows is what a call costs."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    call_id: str
    status: str  # ringing, accepted, rejected (lower case)
    timestamp: int
    recipient_id: str
    recipient_user_id: str = ""
    recipient_phone: str = ""
    bsuid_country: str = ""


@compact_pickle
@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a user sent to the business: free, but it opens the customer service window."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    message_id: str
    timestamp: int
    message_type: str
    sender: str  # `from`: digits, "" when the user is known only by BSUID
    sender_user_id: str = ""  # `from_user_id`
    group_id: str = ""  # set when the message was sent in a group
    bsuid_country: str = ""


Event = StatusEvent | CallEvent | CallStatusEvent | InboundMessage


@compact_pickle
@dataclass(frozen=True, slots=True)
class Delivery:
    """An accepted request: its exact bytes, and the events the receiver parsed from them."""

    body: bytes
    received_at: float
    events: list[Event]
    forward_headers: dict[str, str] | None = None


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what json.loads makes; the ABC check below costs more
        return value
    if not isinstance(value, Mapping):
        raise MalformedWebhook(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedWebhook(f"{where} must be a list")
    return value


def _text(value: Any, where: str, *, required: bool = False, limit: int = 256) -> str:
    if type(value) is str and value and len(value) <= limit:  # the common case, same result
        return value
    if value is None or value == "":
        if required:
            raise MalformedWebhook(f"{where} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedWebhook(f"{where} must be a string")
    text = str(value)
    if len(text) > limit:
        raise MalformedWebhook(f"{where} is too long")
    return text


# Unix seconds of 10000-01-01: later "timestamps" cannot be dates (and break calendar math).
_LAST_TIMESTAMP = 253_402_300_800


def _timestamp(value: Any, where: str) -> int:
    seconds = _int(value, where)
    if seconds >= _LAST_TIMESTAMP:
        raise MalformedWebhook(f"{where} is not a unix time in seconds")
    return seconds


def _int(value: Any, where: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise MalformedWebhook(f"{where} must be a number")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise MalformedWebhook(f"{where} must be a whole number")
    if not 0 <= result < 2**53:
        raise MalformedWebhook(f"{where} is out of range")
    return result


# Labels as read, by the text they were read from: a stream repeats a handful of statuses,
# categories and types, and normalising each again was a tenth of parsing a status. Bounded,
# since a sender chooses the texts.
_LABELS: dict[str, str] = {}
_LABELS_KEPT = 4096


def _label(value: Any, where: str) -> str:
    if type(value) is str:
        label = _LABELS.get(value)
        if label is not None:
            return label
    label = _text(value, where).strip().lower().replace("-", "_").replace(" ", "_")
    if type(value) is str and len(_LABELS) < _LABELS_KEPT:
        _LABELS[value] = label
    return label


def _optional(obj: Mapping[str, Any], key: str, where: str) -> str:
    """An optional id: "" when absent (most are, on most statuses), else as `_text` reads it."""
    value = obj.get(key)
    return "" if value is None else _text(value, where, limit=_ID_LIMIT)


def _billable(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None


def _pricing(status: Mapping[str, Any]) -> Pricing | None:
    raw = status.get("pricing")
    conversation = status.get("conversation")
    if raw is None and conversation is None:
        return None
    pricing = _obj(raw, ".pricing") if raw is not None else {}
    category = _label(pricing.get("category"), ".pricing.category")
    if not category and conversation is not None:
        # Graph <= v23 without a pricing category: the conversation's origin names it.
        origin = _obj(_obj(conversation, ".conversation").get("origin") or {},
                      ".conversation.origin")
        category = _label(origin.get("type"), ".conversation.origin.type")
    pricing_type = _label(pricing.get("type"), ".pricing.type")
    # Meta is deprecating `billable`. Without it, whether Meta charges depends on the event's
    # time too (service is charged from 2026-10-01), so counting decides.
    billable = _billable(pricing.get("billable"))
    cost, cost_currency = _cost(pricing.get("cost"))
    return Pricing(
        billable=billable,
        pricing_model=_label(pricing.get("pricing_model"), ".pricing.pricing_model"),
        category=category or "unknown",
        pricing_type=pricing_type or ("" if billable is None
                                      else "regular" if billable else "unknown"),
        cost=cost,
        cost_currency=cost_currency,
    )


def _cost(value: Any) -> tuple[Decimal | None, str]:
    """`pricing.cost {amount, currency}` (with a max price for marketing messages), or
    (None, "") when absent or unreadable: its type is not documented, so a number or a numeric
    string is read and anything else leaves the message to the rate card."""
    if not isinstance(value, Mapping):
        return None, ""
    amount, currency = value.get("amount"), value.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str)) or not (
            isinstance(currency, str) and len(currency) == 3 and currency.isascii()
            and currency.isalpha()):
        return None, ""
    try:
        cost = Decimal(str(amount).strip())
    except InvalidOperation:
        return None, ""
    if not cost.is_finite() or not 0 <= cost <= _MAX_MESSAGE_COST:
        return None, ""
    return cost, currency.upper()


# No message costs this much in any currency: a larger amount is a misreading, not a price.
_MAX_MESSAGE_COST = 1_000_000


# Ids are at most this long. Group ids are 56 characters in Meta's examples and BSUIDs up to
# 128 alphanumerics after their country (and `ENT.` for a parent): this only keeps absurd
# values out of the events, it must never refuse a documented one.
_ID_LIMIT = 256


def _phone(value: str) -> str:
    """The digits of a phone number as webhooks write it, or "" when `value` is no phone (a
    group id, a BSUID)."""
    digits = value[1:] if value.startswith("+") else value
    return digits if digits.isascii() and digits.isdigit() else ""


def _bsuid_country(*user_ids: str) -> str:
    """The ISO country that starts a BSUID (`BR.1502576394655843`, `US.ENT.118...`): the two
    letters before the first dot of the first id that has them."""
    for user_id in user_ids:
        country, dot, _ = user_id.partition(".")
        if dot and len(country) == 2 and country.isascii() and country.isalpha():
            return country.upper()
    return ""


def _contacts(value: Mapping[str, Any]) -> dict[str, str]:
    """`contacts[]` as BSUID -> phone digits, for statuses and calls that name only the BSUID
    (a phone appears here while the user is in the business's contact book)."""
    phones: dict[str, str] = {}
    for k, raw in enumerate(_list(value.get("contacts"), ".value.contacts")):
        try:
            contact = _obj(raw, "")
            user_id = _text(contact.get("user_id"), ".user_id", limit=_ID_LIMIT)
            phone = _phone(_text(contact.get("wa_id"), ".wa_id", limit=_ID_LIMIT))
        except MalformedWebhook as exc:
            raise _within(f".value.contacts[{k}]", exc) from None
        if user_id and phone:
            phones[user_id] = phone
    return phones


def _status(status: Mapping[str, Any], origin: dict[str, str],
            phones: dict[str, str]) -> StatusEvent:
    recipient_id = _text(status.get("recipient_id"), ".recipient_id", limit=_ID_LIMIT)
    recipient_type = _label(status.get("recipient_type"), ".recipient_type") or "individual"
    # Meta's group examples spell the participant key both ways.
    participant_key = ("recipient_participant_id" if "recipient_participant_id" in status
                       else "participant_recipient_id")
    participant = _optional(status, participant_key, "." + participant_key)
    user_id = _optional(status, "recipient_user_id", ".recipient_user_id")
    parent_key = ("recipient_parent_user_id" if "recipient_parent_user_id" in status
                  else "parent_recipient_user_id")
    parent = _optional(status, parent_key, "." + parent_key)
    if recipient_type == "group":
        phone = _phone(participant)
        country = _bsuid_country(participant, user_id, parent)
    else:
        phone = _phone(recipient_id) or phones.get(user_id, "")
        country = _bsuid_country(user_id, parent)
    return StatusEvent(
        **origin,
        message_id=_text(status.get("id"), ".id", required=True),
        status=_label(status.get("status"), ".status") or "unknown",
        timestamp=_timestamp(status.get("timestamp"), ".timestamp"),
        recipient_id=recipient_id,
        pricing=_pricing(status),
        recipient_type=recipient_type,
        participant_id=participant,
        recipient_user_id=user_id,
        recipient_parent_user_id=parent,
        recipient_phone=phone,
        bsuid_country=country,
    )


def _call_status(status: Mapping[str, Any], origin: dict[str, str],
                 phones: dict[str, str]) -> CallStatusEvent:
    recipient_id = _text(status.get("recipient_id"), ".recipient_id", limit=_ID_LIMIT)
    user_id = _text(status.get("recipient_user_id"), ".recipient_user_id", limit=_ID_LIMIT)
    parent = _text(status.get("recipient_parent_user_id"), ".recipient_parent_user_id",
                   limit=_ID_LIMIT)
    return CallStatusEvent(
        **origin,
        call_id=_text(status.get("id"), ".id", required=True),
        status=_label(status.get("status"), ".status") or "unknown",
        timestamp=_timestamp(status.get("timestamp"), ".timestamp"),
        recipient_id=recipient_id,
        recipient_user_id=user_id,
        recipient_phone=_phone(recipient_id) or phones.get(user_id, ""),
        bsuid_country=_bsuid_country(user_id, parent),
    )


def _call(call: Mapping[str, Any], origin: dict[str, str],
          phones: dict[str, str]) -> CallEvent:
    caller = _text(call.get("from"), ".from", limit=_ID_LIMIT)
    callee = _text(call.get("to"), ".to", limit=_ID_LIMIT)
    caller_user_id = _text(call.get("from_user_id"), ".from_user_id", limit=_ID_LIMIT)
    callee_user_id = _text(call.get("to_user_id"), ".to_user_id", limit=_ID_LIMIT)
    direction = _label(call.get("direction"), ".direction") or "unknown"
    # The user is the caller of a user-initiated call and the callee otherwise.
    user_initiated = direction == "user_initiated"
    user, user_id, parent_key = ((caller, caller_user_id, "from_parent_user_id")
                                 if user_initiated else
                                 (callee, callee_user_id, "to_parent_user_id"))
    parent = _text(call.get(parent_key), "." + parent_key, limit=_ID_LIMIT)
    return CallEvent(
        **origin,
        call_id=_text(call.get("id"), ".id", required=True),
        event=_label(call.get("event"), ".event") or "unknown",
        direction=direction,
        status=_label(call.get("status"), ".status"),
        duration_seconds=_int(call.get("duration"), ".duration"),
        timestamp=_timestamp(call.get("timestamp"), ".timestamp"),
        caller=caller,
        callee=callee,
        caller_user_id=caller_user_id,
        callee_user_id=callee_user_id,
        user_phone=_phone(user) or phones.get(user_id, ""),
        bsuid_country=_bsuid_country(user_id, parent),
    )


def _inbound(message: Mapping[str, Any], origin: dict[str, str]) -> InboundMessage:
    user_id = _text(message.get("from_user_id"), ".from_user_id", limit=_ID_LIMIT)
    parent = _text(message.get("from_parent_user_id"), ".from_parent_user_id",
                   limit=_ID_LIMIT)
    return InboundMessage(
        **origin,
        message_id=_text(message.get("id"), ".id", required=True),
        timestamp=_timestamp(message.get("timestamp"), ".timestamp"),
        message_type=_label(message.get("type"), ".type") or "unknown",
        sender=_phone(_text(message.get("from"), ".from", limit=_ID_LIMIT)),
        sender_user_id=user_id,
        group_id=_text(message.get("group_id"), ".group_id", limit=_ID_LIMIT),
        bsuid_country=_bsuid_country(user_id, parent),
    )


def _within(where: str, exc: MalformedWebhook) -> MalformedWebhook:
    """The same complaint, placed in its enclosing object. Each level names where its own
    fields are and its callers add theirs as the error goes up, so a valid body, the common
    case, builds no path text at all."""
    return MalformedWebhook(where + str(exc))


def parse(body: Any) -> list[Event]:
    """Every status, call and inbound message event in a webhook body, in order."""
    root = _obj(body, "body")
    obj = root.get("object")
    if obj is not None and obj != "whatsapp_business_account":
        raise MalformedWebhook("object must be whatsapp_business_account")
    entries = _list(root.get("entry"), "entry")
    if "entry" not in root:
        raise MalformedWebhook("entry is required")
    events: list[Event] = []
    for i, raw_entry in enumerate(entries):
        try:
            _entry(raw_entry, events)
        except MalformedWebhook as exc:
            raise _within(f"entry[{i}]", exc) from None
    return events


def _entry(raw_entry: Any, events: list[Event]) -> None:
    entry = _obj(raw_entry, "")
    waba_id = _text(entry.get("id"), ".id", limit=64)
    for j, raw_change in enumerate(_list(entry.get("changes"), ".changes")):
        try:
            _change(raw_change, waba_id, events)
        except MalformedWebhook as exc:
            raise _within(f".changes[{j}]", exc) from None


def _change(raw_change: Any, waba_id: str, events: list[Event]) -> None:
    change = _obj(raw_change, "")
    field = _text(change.get("field"), ".field")
    value = _obj(change.get("value") or {}, ".value")
    if field not in {"messages", "calls", ""}:
        return  # template, account and other fields carry no billable traffic
    metadata = _obj(value.get("metadata") or {}, ".value.metadata")
    # Where the event happened: shared by every status and call in this change.
    origin = {
        "waba_id": waba_id,
        "phone_number_id": _text(metadata.get("phone_number_id"),
                                 ".metadata.phone_number_id", limit=64),
        "display_phone_number": _text(metadata.get("display_phone_number"),
                                      ".metadata.display_phone_number", limit=64),
    }
    phones = _contacts(value) if "contacts" in value else {}
    for k, raw in enumerate(_list(value.get("statuses"), ".value.statuses")):
        try:
            status = _obj(raw, "")
            # Under `calls`, statuses are a call's RINGING/ACCEPTED/REJECTED, not messages.
            if field == "calls" or status.get("type") == "call":
                events.append(_call_status(status, origin, phones))
            else:
                events.append(_status(status, origin, phones))
        except MalformedWebhook as exc:
            raise _within(f".value.statuses[{k}]", exc) from None
    for k, raw in enumerate(_list(value.get("calls"), ".value.calls")):
        try:
            events.append(_call(_obj(raw, ""), origin, phones))
        except MalformedWebhook as exc:
            raise _within(f".value.calls[{k}]", exc) from None
    for k, raw in enumerate(_list(value.get("messages"), ".value.messages")):
        try:
            events.append(_inbound(_obj(raw, ""), origin))
        except MalformedWebhook as exc:
            raise _within(f".value.messages[{k}]", exc) from None
