"""A CRM that accepts Novofon webhooks: checks the Signature with its own copy of Novofon's formula."""

from __future__ import annotations

import base64
import hashlib
import hmac

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


def novofon_signature(data: dict[str, str], secret: str) -> str:
    s = "".join(data[k] for k in SIGNED[data["event"]])
    return base64.b64encode(hmac.new(secret.encode(), s.encode(), hashlib.sha1).hexdigest().encode()).decode()


class NovofonReceiver(FakeServer):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.received: list[dict[str, str]] = []
        self.rejected = 0
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
        key = request.headers.get("Idempotency-Key", "")
        if key not in self._seen:  # a CRM that deduplicates redeliveries
            self._seen.add(key)
            self.received.append(data)
        return web.Response(text="ok")
