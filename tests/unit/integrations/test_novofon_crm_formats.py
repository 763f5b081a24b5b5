"""A CRM built for Novofon checks value formats, not just the Signature (issue 9 item 10): phone
numbers in caller_id / destination / called_did, an outgoing call's caller_id that is a number and
not the extension, call_start, disposition. Our records pass; what such a CRM refuses is refused."""

from __future__ import annotations

import pytest

from bridge.calls.records import CallRecord, make
from bridge.http.client import Http
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.outbox.store import OutboxStore, State
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.transcripts import NAMES, replay
from tests.unit.integrations.conftest import deliver, serving

SECRET = "novofon-api-secret"


async def send(store: OutboxStore, http: Http, records: list[CallRecord]) -> NovofonReceiver:
    crm = NovofonReceiver(secret=SECRET)
    async with serving(crm):
        sink = WebhookSink("crm", f"{crm.url}/zadarma_webhook", SECRET, http)
        await deliver(store, [sink], records)
    return crm


async def test_every_recorded_call_passes_a_strict_crm(store: OutboxStore, http: Http) -> None:
    """Every lab transcript, forwarded, voice menu, voicemail and outbound calls included."""
    records = [r for name in NAMES for r in replay(name)]
    crm = await send(store, http, records)
    assert (crm.rejected, crm.refused) == (0, [])
    by_call: dict[str, list[dict[str, str]]] = {}
    for data in crm.received:  # calls are delivered in parallel, each call's records in order
        by_call.setdefault(data["pbx_call_id"], []).append(data)
    want: dict[str, list[dict[str, str]]] = {}
    for r in records:
        want.setdefault(r.pbx_call_id, []).append(r.fields)
    assert by_call == want


def _out_end(**changed: str) -> CallRecord:
    (end,) = [r for r in replay("outbound_busy") if r.fields["event"] == "NOTIFY_OUT_END"]
    return make(end.event, {**end.fields, **changed}, end.meta)


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        ({"caller_id": "102"}, "caller_id: an extension on an outgoing call"),  # what we sent before
        ({"caller_id": ""}, "caller_id: not a phone number: ''"),
        ({"destination": "+7 (900) 222-00-02"}, "destination: not a phone number"),
        ({"call_start": "2026-11-29T17:30:31"}, "call_start"),
        ({"disposition": "NO ANSWER"}, "disposition"),
    ],
)
async def test_values_a_novofon_crm_refuses(
    store: OutboxStore, http: Http, changed: dict[str, str], why: str
) -> None:
    crm = await send(store, http, [_out_end(**changed)])
    assert crm.received == [] and crm.rejected == 1
    assert crm.refused[0].startswith(why)
    (dead,) = store.list(State.DEAD)
    assert "HTTP 400" in (dead.last_error or "")
