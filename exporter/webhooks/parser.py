"""Meta-format webhook bodies, as 360dialog relays them, read into plain events.

Pure functions: a body either yields a list of events or raises `MalformedWebhook` with a short
reason (the receiver answers 400 with it). Both Graph shapes are accepted: up to v23 a status may
carry `conversation` beside `pricing`; from v24 only `pricing`. Unknown fields are ignored;
unknown `field`s (templates, account updates) yield no events but are not errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    billable: bool
    pricing_model: str
    category: str
    pricing_type: str


@compact_pickle
@dataclass(frozen=True, slots=True)
class StatusEvent:
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    message_id: str
    status: str
    timestamp: int
    recipient_id: str
    pricing: Pricing | None


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
    callee: str  # `to`: whose market prices a business-initiated call


Event = StatusEvent | CallEvent


@compact_pickle
@dataclass(frozen=True, slots=True)
class Delivery:
    """An accepted request: its exact bytes, and the events the receiver parsed from them."""

    body: bytes
    received_at: float
    events: list[Event]
    forward_headers: dict[str, str] | None = None


def _obj(value: Any, where: str) -> Mapping[str, Any]:
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


def _label(value: Any, where: str) -> str:
    return _text(value, where).strip().lower().replace("-", "_").replace(" ", "_")


def _billable(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None


def _pricing(status: Mapping[str, Any], where: str) -> Pricing | None:
    raw = status.get("pricing")
    conversation = status.get("conversation")
    if raw is None and conversation is None:
        return None
    pricing = _obj(raw, f"{where}.pricing") if raw is not None else {}
    category = _label(pricing.get("category"), f"{where}.pricing.category")
    if not category and conversation is not None:
        # Graph <= v23 without a pricing category: the conversation's origin names it.
        origin = _obj(_obj(conversation, f"{where}.conversation").get("origin") or {},
                      f"{where}.conversation.origin")
        category = _label(origin.get("type"), f"{where}.conversation.origin.type")
    pricing_type = _label(pricing.get("type"), f"{where}.pricing.type")
    billable = _billable(pricing.get("billable"))
    if billable is None:
        # Meta is deprecating `billable`: decide from the type, as Meta advises.
        billable = pricing_type in {"", "regular"} and category not in {"", "service"}
    return Pricing(
        billable=billable,
        pricing_model=_label(pricing.get("pricing_model"), f"{where}.pricing.pricing_model"),
        category=category or "unknown",
        pricing_type=pricing_type or ("regular" if billable else "unknown"),
    )


def parse(body: Any) -> list[Event]:
    """Every status and call event in a webhook body, in order."""
    root = _obj(body, "body")
    obj = root.get("object")
    if obj is not None and obj != "whatsapp_business_account":
        raise MalformedWebhook("object must be whatsapp_business_account")
    entries = _list(root.get("entry"), "entry")
    if "entry" not in root:
        raise MalformedWebhook("entry is required")
    events: list[Event] = []
    for i, raw_entry in enumerate(entries):
        entry = _obj(raw_entry, f"entry[{i}]")
        waba_id = _text(entry.get("id"), f"entry[{i}].id", limit=64)
        for j, raw_change in enumerate(_list(entry.get("changes"), f"entry[{i}].changes")):
            where = f"entry[{i}].changes[{j}]"
            change = _obj(raw_change, where)
            field = _text(change.get("field"), f"{where}.field")
            value = _obj(change.get("value") or {}, f"{where}.value")
            if field not in {"messages", "calls", ""}:
                continue  # template, account and other fields carry no billable traffic
            metadata = _obj(value.get("metadata") or {}, f"{where}.value.metadata")
            # Where the event happened: shared by every status and call in this change.
            origin = {
                "waba_id": waba_id,
                "phone_number_id": _text(metadata.get("phone_number_id"),
                                         f"{where}.metadata.phone_number_id", limit=64),
                "display_phone_number": _text(metadata.get("display_phone_number"),
                                              f"{where}.metadata.display_phone_number", limit=32),
            }
            for k, raw in enumerate(_list(value.get("statuses"), f"{where}.value.statuses")):
                w = f"{where}.value.statuses[{k}]"
                status = _obj(raw, w)
                events.append(StatusEvent(
                    **origin,
                    message_id=_text(status.get("id"), f"{w}.id", required=True),
                    status=_label(status.get("status"), f"{w}.status") or "unknown",
                    timestamp=_timestamp(status.get("timestamp"), f"{w}.timestamp"),
                    recipient_id=_text(status.get("recipient_id"), f"{w}.recipient_id", limit=32),
                    pricing=_pricing(status, w),
                ))
            for k, raw in enumerate(_list(value.get("calls"), f"{where}.value.calls")):
                w = f"{where}.value.calls[{k}]"
                call = _obj(raw, w)
                events.append(CallEvent(
                    **origin,
                    call_id=_text(call.get("id"), f"{w}.id", required=True),
                    event=_label(call.get("event"), f"{w}.event") or "unknown",
                    direction=_label(call.get("direction"), f"{w}.direction") or "unknown",
                    status=_label(call.get("status"), f"{w}.status"),
                    duration_seconds=_int(call.get("duration"), f"{w}.duration"),
                    timestamp=_timestamp(call.get("timestamp"), f"{w}.timestamp"),
                    caller=_text(call.get("from"), f"{w}.from", limit=32),
                    callee=_text(call.get("to"), f"{w}.to", limit=32),
                ))
    return events
