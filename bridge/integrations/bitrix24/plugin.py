"""Bitrix24: calls in the CRM (the telephony sink), employees from its users (events and periodic
sync), click-to-call from a CRM card, and clients' responsible managers for call routing (AGI)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from bridge.errors import BadRequest
from bridge.http.params import read_params
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.bitrix24.click_to_call import JOB as CLICK_JOB
from bridge.integrations.bitrix24.click_to_call import STALE_AFTER, ClickToCall
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.crm_lookup import BitrixResponsible
from bridge.integrations.bitrix24.directory_sync import DirectorySync
from bridge.integrations.bitrix24.events import USER_EVENTS, parse_event, user_id_of
from bridge.integrations.bitrix24.sink import Bitrix24Sink

log = structlog.get_logger("bridge.bitrix24")

USER_JOB = "bitrix-user"


def setup(ctx: Context) -> Parts:
    b = ctx.cfg.sinks.bitrix24
    if not b.enabled:
        return Parts()
    client = BitrixClient(b, ctx.http, ctx.state)
    sync = DirectorySync(client, ctx.directory, b.telegram_field, b.sync_interval)
    clicks = ClickToCall(ctx.directory, ctx.state, ctx.jobs, ctx.calls, ctx.cfg.pbx.country_code)

    async def sync_user(job: dict[str, Any]) -> None:
        await sync.sync_user(str(job["user_id"]))

    async def event(request: web.Request) -> web.Response:
        """An event, checked and committed as a job (Bitrix24 never retries a delivery)."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadRequest(415, "unsupported-media-type", "Bitrix24 events are form-encoded")
        name, data = parse_event(await read_params(request), b.application_token)
        if name in USER_EVENTS:
            ctx.jobs.add(USER_JOB, {"user_id": user_id_of(data)})
            outcome = "queued"
        elif name == "ONEXTERNALCALLSTART":
            outcome = clicks.accept(data)
        else:
            log.info("bitrix24.event_ignored", bitrix_event=name)
            outcome = "ignored"
        return web.json_response({"result": outcome})

    parts = Parts(
        sinks=[Bitrix24Sink(b, client, ctx.state, ctx.directory, ctx.cfg.pbx.timezone)],
        routes=[Route(b.events_path, event)],
        job_handlers={USER_JOB: (sync_user, None), CLICK_JOB: (clicks.originate, STALE_AFTER)},
        responsible=BitrixResponsible(client, ctx.cfg.pbx.country_code),
    )
    if b.sync_interval > 0:
        parts.tasks["directory-sync"] = sync.run
    return parts
