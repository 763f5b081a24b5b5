"""An SMS to the caller after a missed inbound call, through an SMSC-style HTTP API.

Off by default. At most one SMS per number per ``per_number_interval`` (a client who calls five
times in a row gets one message), remembered in the outbox's sink_state so a restart does not
forget it. Answers use ``fmt=3`` (JSON) and ``charset=utf-8``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from bridge.calls.numbers import pretty
from bridge.calls.records import Event
from bridge.outbox.store import Delivery, OutboxStore
from bridge.sinks.base import PermanentFailure, RetryLater
from bridge.sinks.http import Http, transport_error

log = structlog.get_logger("bridge.sms")

# SMSC error codes: which of them a later retry can fix.
RETRYABLE = {4: "IP blocked for a while", 9: "too many requests"}


@dataclass(frozen=True)
class SmsSettings:
    api_url: str = "https://smsc.ru/sys/send.php"
    login: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    sender: str = ""
    template: str = "Здравствуйте! Мы пропустили ваш звонок на {line} и перезвоним вам. {company}"
    company: str = ""
    per_number_interval: float = 86400.0
    min_digits: int = 11  # only full phone numbers (not short codes or hidden callers)


class SmsSink:
    name = "sms"

    def __init__(self, settings: SmsSettings, http: Http, store: OutboxStore) -> None:
        self.s = settings
        self._http = http
        self._store = store

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
        last = self._store.get_state(self.name, f"last:{number}")
        if last is not None and time.time() - float(last) < self.s.per_number_interval:
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
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise transport_error(e) from None
        except ValueError:
            raise RetryLater("SMS gateway answered something that is not JSON") from None
        if "error_code" in body or "error" in body:
            code = int(body.get("error_code") or 0)
            reason = f"SMS gateway error {code}: {body.get('error', '')}"
            if code in RETRYABLE:
                raise RetryLater(reason, 60.0)
            raise PermanentFailure(reason)
        self._store.set_state(self.name, f"last:{number}", str(time.time()))
        self._store.set_state(self.name, f"sms:{body.get('id')}", number)
        log.info("sms.sent", number=number, sms_id=body.get("id"))

    async def close(self) -> None:
        pass
