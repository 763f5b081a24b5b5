"""Bitrix24: calls in the CRM (the telephony sink), employees from its users (events and periodic
sync), click-to-call from a CRM card, and the local application's installation (application.py)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from bridge.calls.numbers import normalise
from bridge.errors import BadRequest
from bridge.http.params import read_params
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.bitrix24.application import Application
from bridge.integrations.bitrix24.click_to_call import JOB as CLICK_JOB
from bridge.integrations.bitrix24.click_to_call import STALE_AFTER, ClickToCall
from bridge.integrations.bitrix24.client import BitrixClient
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
    sync = DirectorySync(
        client,
        ctx.directory,
        b.telegram_field,
        b.sync_interval,
        extensions=ctx.cfg.asterisk.internal_extensions,
    )
    clicks = ClickToCall(ctx.directory, ctx.state, ctx.jobs, ctx.calls, ctx.cfg.pbx.country_code)
    pbx = ctx.cfg.pbx
    default_line = normalise(pbx.default_did, pbx.country_code)
    lines = {normalise(did, pbx.country_code): name for did, name in pbx.lines.items()}
    if default_line.isdigit():
        lines.setdefault(default_line, "")
    app = Application(b, client, ctx.state, lines)

    async def sync_user(job: dict[str, Any]) -> None:
        await sync.sync_user(str(job["user_id"]))

    async def event(request: web.Request) -> web.Response:
        """An event, checked and committed as a job (Bitrix24 never retries a delivery)."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadRequest(415, "unsupported-media-type", "Bitrix24 events are form-encoded")
        form = await read_params(request)
        if form.get("event", "").upper() == "ONAPPINSTALL":
            return web.json_response({"result": await app.accept_install(form)})
        name, data = parse_event(form, app.expected_token())
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
        sinks=[Bitrix24Sink(b, client, ctx.state, ctx.directory, pbx.timezone, default_line)],
        routes=[Route(b.events_path, event)],
        job_handlers={USER_JOB: (sync_user, None), CLICK_JOB: (clicks.originate, STALE_AFTER)},
    )
    if b.sync_interval > 0:
        parts.tasks["directory-sync"] = sync.run
    if b.app_mode:  # event.bind + external lines, after start and after every installation
        parts.tasks["bitrix24-app"] = app.run
    return parts
