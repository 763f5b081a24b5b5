"""A CRM that accepts Novofon webhooks: checks the Signature with its own copy of Novofon's formula."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from aiohttp import web

from tests.fakes.base import FakeServer

# Written from Novofon's documentation, independently of bridge.calls.records.
SIGNED = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
    "NOTIFY_IVR": ("caller_id", "called_did", "call_start"),  # user-api-v1: NotifyIvr extends NotifyStart
}


# Value formats a CRM built for Novofon checks (SPECS.md): phone numbers are digits only, country
# code first (an extension is digits too: 3-15 digits); times "YYYY-MM-DD HH:MM:SS".
PHONE = re.compile(r"[0-9]{3,15}")
CALL_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
DISPOSITIONS = frozenset(
    {
        "answered",
        "busy",
        "cancel",
        "no answer",
        "failed",
        "no money",
        "unallocated number",
        "no limit",
        "no day limit",
        "line limit",
        "no money, no limit",
    }
)
# Where Novofon sends a phone number: always (caller_id of an inbound call, destination) or when
# known (called_did: the official library reads a missing one as empty).
NUMBERS = {
    "NOTIFY_START": {"caller_id": True, "called_did": False},
    "NOTIFY_INTERNAL": {"caller_id": True, "called_did": False, "internal": True},
    "NOTIFY_ANSWER": {"caller_id": True, "destination": True, "internal": False},
    "NOTIFY_END": {"caller_id": True, "called_did": False, "internal": False},
    "NOTIFY_OUT_START": {"destination": True, "internal": False},
    "NOTIFY_OUT_END": {"caller_id": True, "destination": True, "internal": False},
    "NOTIFY_IVR": {"caller_id": True, "called_did": False},
}


def bad_value(data: dict[str, str]) -> str | None:
    """What a strict CRM refuses in a (correctly signed) notification, or None."""
    event = data["event"]
    for key, required in NUMBERS.get(event, {}).items():
        value = data.get(key, "")
        if (value or required) and not PHONE.fullmatch(value):
            return f"{key}: not a phone number: {value!r}"
    if "call_start" in SIGNED[event] and not CALL_START.fullmatch(data.get("call_start", "")):
        return f"call_start: {data.get('call_start', '')!r}"
    if event in ("NOTIFY_END", "NOTIFY_OUT_END"):
        if data.get("disposition") not in DISPOSITIONS:
            return f"disposition: {data.get('disposition')!r}"
        if not data.get("duration", "").isdigit() or data.get("is_recorded") not in ("0", "1"):
            return "duration/is_recorded"
    if event == "NOTIFY_OUT_END" and data["caller_id"] == data.get("internal"):
        # On an outgoing call caller_id is the number the client saw; the extension is `internal`.
        return "caller_id: an extension on an outgoing call"
    return None


def novofon_signature(data: dict[str, str], secret: str) -> str:
    s = "".join(data[k] for k in SIGNED[data["event"]])
    return base64.b64encode(hmac.new(secret.encode(), s.encode(), hashlib.sha1).hexdigest().encode()).decode()


class NovofonReceiver(FakeServer):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.received: list[dict[str, str]] = []
        self.rejected = 0
        self.refused: list[str] = []  # why values were refused
        self._seen: set[str] = set()
        self.app.router.add_post("/zadarma_webhook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            self.rejected += 1
            return web.Response(status=415, text="form-encoded only")
        data = {k: str(v) for k, v in (await request.post()).items()}
        if data.get("event") not in SIGNED or request.headers.get("Signature") != novofon_signature(
            data, self.secret
        ):
            self.rejected += 1
            return web.Response(status=401, text="bad signature")
        problem = bad_value(data)
        if problem is not None:
            self.rejected += 1
            self.refused.append(problem)
            return web.Response(status=400, text=problem)
        key = request.headers.get("Idempotency-Key", "")
        if key not in self._seen:  # a CRM that deduplicates redeliveries
            self._seen.add(key)
            self.received.append(data)
        return web.Response(text="ok")
