"""Novofon-compatible webhooks: POST each record exactly as Novofon's cloud does.

Form-encoded fields with Novofon's names, and the ``Signature`` header computed per event with the
customer's Novofon API secret, so a CRM that already accepts Novofon notifications (a Salebot
project's zadarma_webhook URL, say) accepts ours unchanged.
"""

from __future__ import annotations

import aiohttp

from bridge.calls.records import is_signed, sign
from bridge.http.client import Http, classify, retry_after_header, transport_error
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
                retry_after = retry_after_header(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise transport_error(e) from e
        # A Novofon-style receiver has no error codes of its own: the status (and Retry-After) decide.
        classify(
            resp.status,
            body,
            api=self.name,
            retry_after=retry_after,
            describe=f"HTTP {resp.status}: {body[:300]}",
        )

    async def close(self) -> None:
        pass
