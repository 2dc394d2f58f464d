"""A known webhook stream, its truth computed independently, and a sink standing in for the
user's application. Shared by the webhook end-to-end tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HMAC_SECRET = "e2e-hmac-secret-0451"
WABA = "104996122399160"
# Per-message USD prices from the shipped example card, restated here so the truth does not
# come from the code under test: (calling code, category) -> price.
PRICES = {("49", "marketing"): Decimal("0.1365"), ("49", "utility"): Decimal("0.0550"),
          ("49", "authentication"): Decimal("0.0768"), ("44", "marketing"): Decimal("0.0529"),
          ("44", "utility"): Decimal("0.0220"), ("44", "authentication"): Decimal("0.0358"),
          ("91", "marketing"): Decimal("0.0107"), ("91", "utility"): Decimal("0.0014"),
          ("91", "authentication"): Decimal("0.0014")}
PER_MINUTE = {"49": Decimal("0.060"), "44": Decimal("0.040"), "91": Decimal("0.010")}
KINDS = [("marketing", "regular"), ("utility", "regular"), ("utility", "free_customer_service"),
         ("authentication", "regular"), ("service", "free_customer_service")]


@dataclass
class Truth:
    messages: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    cost: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    call_seconds: Counter[tuple[str, str]] = field(default_factory=Counter)
    call_cost: dict[tuple[str, str], Decimal] = field(default_factory=dict)


def sign(body: bytes) -> dict[str, str]:
    """Signed as Meta signs a direct delivery (Meta, Webhooks > payload validation)."""
    digest = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + digest}


# 360dialog's header does not say how its digest is written (docs.360dialog.com, partner >
# webhook events and setup > signature validation), so the stream uses every form accepted.
DIALOG_FORMS = ("hex", "sha256=hex", "base64")


def sign_360dialog(body: bytes, form: str) -> dict[str, str]:
    """Signed as 360dialog relays a delivery: the partner's secret, x-360dialog-signature."""
    mac = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256)
    value = {"hex": mac.hexdigest(), "sha256=hex": "sha256=" + mac.hexdigest(),
             "base64": base64.b64encode(mac.digest()).decode()}[form]
    return {"Content-Type": "application/json", "x-360dialog-signature": value}


def stream(seed: int, deliveries: int, channels: int = 3) -> tuple[list[bytes], Truth]:
    """`deliveries` distinct signed bodies (statuses in several orders, calls) and their truth."""
    rnd = random.Random(seed)
    truth = Truth()
    counted: set[str] = set()
    seen_status: set[tuple[str, str]] = set()
    bodies: list[bytes] = []
    open_messages: list[tuple[str, str, str, str, str]] = []
    for n in range(deliveries):
        number = f"49151000000{n % channels:02d}"
        channel = f"pn_{900 + n % channels}"
        if n % 10 == 9:
            code = rnd.choice(list(PER_MINUTE))
            direction = rnd.choice(["BUSINESS_INITIATED", "USER_INITIATED"])
            duration = rnd.randint(1, 600)
            callee = f"{code}1700{n:06d}"
            item = {"id": f"wacid.{seed}.{n}", "from": number, "to": callee, "event": "terminate",
                    "direction": direction, "status": "COMPLETED", "duration": duration,
                    "timestamp": str(1_780_300_000 + n)}
            d = direction.lower()
            truth.calls[(channel, d, "completed")] += 1
            truth.call_seconds[(channel, d)] += duration
            price = (PER_MINUTE[code] * -(-duration // 6) / 10 if d == "business_initiated"
                     else Decimal(0))
            truth.call_cost[(channel, d)] = truth.call_cost.get((channel, d), Decimal(0)) + price
            value = {"metadata": {"display_phone_number": number,
                                  "phone_number_id": channel[3:]}, "calls": [item]}
            field_name = "calls"
        else:
            items: list[dict[str, object]] = []
            wanted = rnd.randint(1, 4)
            while len(items) < wanted:
                if open_messages and rnd.random() < 0.5:
                    wamid, category, ptype, recipient, msg_channel = rnd.choice(open_messages)
                    if msg_channel != channel:
                        continue
                else:
                    category, ptype = rnd.choice(KINDS)
                    code = rnd.choice(["49", "44", "91"])
                    wamid = f"wamid.{seed}.{n}.{len(items)}"
                    recipient = f"{code}1760{rnd.randrange(10**6):06d}"
                    open_messages.append((wamid, category, ptype, recipient, channel))
                status = rnd.choice(["sent", "delivered", "read"])
                items.append({"id": wamid, "status": status, "recipient_id": recipient,
                              "timestamp": str(1_780_300_000 + n),
                              "pricing": {"billable": ptype == "regular", "pricing_model": "PMP",
                                          "type": ptype, "category": category}})
                if (wamid, status) not in seen_status:
                    seen_status.add((wamid, status))
                    truth.statuses[(channel, status)] += 1
                # Meta charges a message when it is delivered: `sent` carries pricing too, but
                # a message is counted and priced on its first delivered or read status only.
                if wamid not in counted and status in ("delivered", "read"):
                    counted.add(wamid)
                    billable = "true" if ptype == "regular" else "false"
                    truth.messages[(channel, category, ptype, billable)] += 1
                    if ptype == "regular":
                        key = (channel, category)
                        truth.cost[key] = truth.cost.get(key, Decimal(0)) + PRICES[
                            (recipient[:2], category)]
            value = {"metadata": {"display_phone_number": number,
                                  "phone_number_id": channel[3:]}, "statuses": items}
            field_name = "messages"
        body = {"object": "whatsapp_business_account",
                "entry": [{"id": WABA, "changes": [{"field": field_name, "value": value}]}]}
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies, truth


class Sink:
    """The user's application: records what it is sent; refuses the first `fail_first`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.refused = 0
        self._fail_first = fail_first
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    return
                with sink._lock:
                    refuse = sink.refused < sink._fail_first
                    if refuse:
                        sink.refused += 1
                    else:
                        sink.received.append((body, headers))
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def bodies(self) -> set[bytes]:
        with self._lock:
            return {body for body, _ in self.received}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
