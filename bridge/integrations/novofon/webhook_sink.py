"""Novofon-compatible webhooks: POST each record exactly as Novofon's cloud does.

Form-encoded fields with Novofon's names, and the ``Signature`` header computed per event with the
customer's Novofon API secret, so a CRM that already accepts Novofon notifications (a Salebot
project's zadarma_webhook URL, say) accepts ours unchanged.
"""

from __future__ import annotations

import aiohttp

from bridge.calls.records import is_signed, sign
from bridge.errors import RetryLater
from bridge.http.client import Http, classify_status, retry_after_header, transport_error
from bridge.outbox.store import Delivery


class WebhookSink:
    def __init__(
        self, name: str, url: str, secret: str, http: Http, events: frozenset[str] = frozenset()
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret
        self._http = http
        self._events = events

    async def send(self, delivery: Delivery) -> None:
        fields = delivery.record.fields
        if (self._events and fields["event"] not in self._events) or not is_signed(fields):
            return  # not wanted by this CRM, or not a Novofon call event (SMS): settled, no request
        headers = {"Idempotency-Key": delivery.idempotency_key}
        if self._secret:
            headers["Signature"] = sign(fields, self._secret)
        try:
            async with self._http.session.post(self.url, data=fields, headers=headers) as resp:
                body = await resp.text(errors="replace")
                classify_status(resp.status, body, retry_after_header(resp.headers.get("Retry-After")))
        except RetryLater:
            raise
        except (aiohttp.ClientError, TimeoutError) as e:
            raise transport_error(e) from e

    async def close(self) -> None:
        pass
