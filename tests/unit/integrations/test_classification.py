"""Each sink classifies the far side's status and body the same way (bridge/http/client.py): SMS
gateway 503 JSON, Bitrix24 503 QUERY_LIMIT_EXCEEDED and 500, a webhook's 429 with Retry-After."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.errors import RetryLater
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.smsc.sink import SmsSink
from bridge.outbox.dispatcher import RetryPolicy
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from tests.fakes.base import Fault
from tests.fakes.bitrix import FakeBitrix, query_limit
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.fakes.smsc import LOGIN, PASSWORD, FakeSmsc
from tests.helpers import delivery
from tests.transcripts import replay
from tests.unit.integrations.conftest import deliver, serving

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutboxStore]:
    s = OutboxStore(tmp_path / "outbox.sqlite3")
    yield s
    s.close()


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    h = Http(timeout=5)
    yield h
    await h.close()


async def test_sms_gateway_503_with_a_json_body_is_retried_not_dead(store: OutboxStore, http: Http) -> None:
    smsc = FakeSmsc()
    smsc.fail_next(Fault(503, {"error": "service temporarily unavailable"}))  # was: dead at once
    settings = SmsSettings(enabled=True, api_url="", login=LOGIN, password=PASSWORD, company="ООО Ромашка")
    async with serving(smsc):
        sink = SmsSink(
            dataclasses.replace(settings, api_url=f"{smsc.url}/sys/send.php"), http, StateStore(store.db)
        )
        with pytest.raises(RetryLater) as e:
            await sink.send(delivery(replay("inbound_missed")[-1], sink="sms"))
        assert e.value.retry_after is None  # backoff: the gateway named no time
        assert "503" in str(e.value)
        await deliver(store, [sink], replay("inbound_missed"), policy=FAST)
    assert len(smsc.sent) == 1 and store.list(State.DEAD) == []


async def test_two_missed_calls_from_one_number_delivered_at_once_send_one_sms(
    store: OutboxStore, http: Http
) -> None:
    smsc = FakeSmsc()
    async with serving(smsc):
        settings = SmsSettings(
            enabled=True, api_url=f"{smsc.url}/sys/send.php", login=LOGIN, password=PASSWORD
        )
        sink = SmsSink(settings, http, StateStore(store.db))
        first, second = replay("inbound_missed")[-1], replay("inbound_busy")[-1]  # the same caller
        assert first.fields["caller_id"] == second.fields["caller_id"]
        await asyncio.gather(sink.send(delivery(first, 1, "sms")), sink.send(delivery(second, 2, "sms")))
    assert len(smsc.sent) == 1  # the outbox sends calls in parallel: the check still holds


async def test_bitrix24_query_limit_waits_exactly_and_closes_the_bucket(
    store: OutboxStore, http: Http
) -> None:
    bx = FakeBitrix()
    bx.fail_next(query_limit())
    async with serving(bx):
        client = BitrixClient(
            Bitrix24Settings(webhook_url=bx.webhook_url, rate=2, burst=50), http, StateStore(store.db)
        )
        with pytest.raises(RetryLater) as e:
            await client.call("user.get", {})
        assert e.value.retry_after == 1.0  # a retry after the portal's bucket drained, not backoff
        t0 = time.monotonic()
        await client.call("user.get", {})  # every caller waits for the bucket to reopen
        assert time.monotonic() - t0 >= 0.9


@pytest.mark.parametrize(
    "fault",
    [
        Fault(500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}),
        Fault(503, {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload"}),
        Fault(502),  # nginx in front of the portal, no JSON
    ],
)
async def test_bitrix24_server_errors_are_retried_with_backoff(
    store: OutboxStore, http: Http, fault: Fault
) -> None:
    bx = FakeBitrix()
    bx.fail_next(fault)
    async with serving(bx):
        client = BitrixClient(
            Bitrix24Settings(webhook_url=bx.webhook_url, rate=100, burst=100), http, StateStore(store.db)
        )
        with pytest.raises(RetryLater) as e:
            await client.call("user.get", {})
    assert e.value.retry_after is None  # the outbox's backoff with jitter, not a fixed second


async def test_webhook_429_with_retry_after_is_waited_out_exactly(store: OutboxStore, http: Http) -> None:
    crm = NovofonReceiver(secret="s")
    crm.fail_next(Fault(429, headers={"Retry-After": "1"}))
    records = replay("outbound_busy")[:1]
    async with serving(crm):
        sink = WebhookSink("crm", f"{crm.url}/zadarma_webhook", "s", http)
        with pytest.raises(RetryLater) as e:
            await sink.send(delivery(records[0], sink="crm"))
        assert e.value.retry_after == 1.0
        crm.fail_next(Fault(429, headers={"Retry-After": "1"}))
        t0 = time.monotonic()
        # The policy's backoff would be 100 s: only the receiver's 1 s is waited.
        await deliver(store, [sink], records, policy=dataclasses.replace(FAST, base=100, cap=100))
        assert 0.9 <= time.monotonic() - t0 < 5
    assert len(crm.received) == 1
