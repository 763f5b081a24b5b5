"""The SMS gateway (SMSC-style): an SMS to the caller after a missed call, and its /smsc callback
(delivery statuses of our SMS, SMS sent to our number)."""

from __future__ import annotations

import structlog
from aiohttp import web

from bridge.http.params import read_params
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.smsc import callback
from bridge.integrations.smsc.sink import SmsSink
from bridge.integrations.smsc.state import remember_status

log = structlog.get_logger("bridge.sms")


def setup(ctx: Context) -> Parts:
    s = ctx.cfg.sinks.sms
    if not s.enabled:
        return Parts()

    async def smsc_route(request: web.Request) -> web.Response:
        """Checked, committed, then "OK" (the gateway retries anything else)."""
        callback.check_token(request.query, s.callback_token)  # in the URL the gateway calls
        data = await read_params(request, charset=callback.charset_of(request.query))
        data.pop("token", None)
        data.pop("charset", None)
        callback.check(data, s.callback_secret, s.callback_hash)
        kind, sms_id, phone = callback.parse(data)
        if kind == "incoming":
            key, record = callback.incoming_record(data, phone, ctx.cfg.pbx.default_did)
            stored = ctx.commit_inbound(key, [record])
            log.info("sms.incoming", sms_id=sms_id, pbx_call_id=record.pbx_call_id, repeat=not stored)
        else:
            remember_status(ctx.state, sms_id, data["status"])
            log.info("sms.status", sms_id=sms_id, status=data["status"], error=data.get("err", ""))
        return web.Response(text="OK")

    return Parts(
        sinks=[SmsSink(s, ctx.http, ctx.state)],
        routes=[Route("/smsc", smsc_route, ("GET", "POST"))],
    )
