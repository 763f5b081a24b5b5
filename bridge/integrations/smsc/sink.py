"""An SMS to the caller after a missed inbound call, through an SMSC-style HTTP API.

Off by default. At most one SMS per number per ``per_number_interval`` (a client who calls five
times in a row gets one message), remembered in the outbox's sink_state so a restart does not
forget it. Answers use ``fmt=3`` (JSON) and ``charset=utf-8``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog

from bridge.calls.numbers import pretty
from bridge.calls.records import Event
from bridge.errors import DeliveryError, PermanentFailure, RetryLater
from bridge.http.client import Http, classify, retry_after_header, transport_error
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.smsc.state import last_sent, remember_sent
from bridge.outbox.state import StateStore
from bridge.outbox.store import Delivery

log = structlog.get_logger("bridge.sms")

# SMSC error codes: which of them a later retry can fix.
RETRYABLE = {4: "IP blocked for a while"}
RETRYABLE_AFTER = 60.0
# "More than one identical request to send an SMS within a minute": SMSC took the same request a
# moment ago — ours, whose answer was lost (a timeout, a 5xx after the send). The SMS went out;
# retrying after the minute would send it twice.
DUPLICATE = 9


def error_code(body: Any) -> int | None:
    if not isinstance(body, dict) or "error_code" not in body:
        return None
    try:
        return int(body["error_code"])
    except (TypeError, ValueError):
        return None


def classify_body(status: int, body: Any) -> DeliveryError | None:
    """The gateway's own error codes (its errors come in HTTP 200); the status decides the rest
    (bridge/http/client.py: a 503 is retried whatever its body says)."""
    if not isinstance(body, dict):
        if 200 <= status < 300:
            return RetryLater("SMS gateway answered something that is not JSON")
        return None
    if "error_code" in body or "error" in body:
        try:
            code = int(body.get("error_code") or 0)
        except (TypeError, ValueError):
            code = 0
        reason = f"SMS gateway error {code}: {str(body.get('error', ''))[:200]}"
        if not 200 <= status < 300:
            reason += f" (HTTP {status})"
        if code in RETRYABLE:
            return RetryLater(reason, RETRYABLE_AFTER)
        return PermanentFailure(reason)
    return None


class SmsSink:
    name = "sms"

    def __init__(self, settings: SmsSettings, http: Http, state: StateStore) -> None:
        self.s = settings
        self._http = http
        self._state = state
        # The outbox delivers calls in parallel: two missed calls from one number must not both
        # pass the "recently sent" check before either is remembered. number -> [lock, users]
        self._numbers: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, number: str) -> AsyncIterator[None]:
        lock, users = self._numbers.setdefault(number, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._numbers[number]

    def _wanted(self, f: dict[str, str]) -> str | None:
        if f["event"] != Event.END.value or f.get("disposition") == "answered":
            return None
        number = f.get("caller_id", "")
        return number if number.isdigit() and len(number) >= self.s.min_digits else None

    async def send(self, delivery: Delivery) -> None:
        f = delivery.record.fields
        number = self._wanted(f)
        if number is None:
            return
        async with self._one_at_a_time(number):
            await self._send(delivery, number)

    async def _send(self, delivery: Delivery, number: str) -> None:
        f = delivery.record.fields
        last = last_sent(self._state, number)
        if last is not None and time.time() - last < self.s.per_number_interval:
            log.info("sms.skipped_recently_sent", number=number)
            return
        line = delivery.record.meta.get("line_name") or pretty(f.get("called_did", ""))
        text = self.s.template.format(line=line, company=self.s.company).strip()
        params: dict[str, Any] = {"phones": number, "mes": text, "fmt": "3", "charset": "utf-8"}
        if self.s.api_key:
            params["apikey"] = self.s.api_key
        else:
            params.update(login=self.s.login, psw=self.s.password)
        if self.s.sender:
            params["sender"] = self.s.sender
        try:
            async with self._http.session.post(self.s.api_url, data=params) as resp:
                status, answer = resp.status, await resp.text(errors="replace")
                retry_after = retry_after_header(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise transport_error(e) from None
        try:
            body: Any = json.loads(answer)
        except ValueError:
            body = answer[:300]
        if 200 <= status < 300 and error_code(body) == DUPLICATE:
            remember_sent(self._state, number, "")
            log.info("sms.sent_before", number=number, attempts=delivery.attempts)
            return
        classify(status, body, api="SMS gateway", retry_after=retry_after, by_body=classify_body)
        remember_sent(self._state, number, str(body.get("id")))
        log.info("sms.sent", number=number, sms_id=body.get("id"))

    async def close(self) -> None:
        pass
