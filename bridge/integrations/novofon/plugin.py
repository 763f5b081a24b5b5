"""Novofon: the cloud's call and SMS notifications to us (/call, /sms), and the CRM webhooks we
sign exactly as Novofon does (so a CRM built for Novofon accepts our records unchanged)."""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web

from bridge.errors import BadRequest
from bridge.http.params import read_params
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.novofon.inbound import call_record, sms_record
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.outbox.sink import Sink

log = structlog.get_logger("bridge.http")

MAX_ECHO = 200


def setup(ctx: Context) -> Parts:
    n = ctx.cfg.novofon

    async def call(request: web.Request) -> web.Response:
        data = await read_params(request)
        if "zd_echo" in data and "event" not in data:  # Novofon checks the URL when it is saved
            echo = data["zd_echo"]
            if len(echo) > MAX_ECHO or not echo.isprintable():
                raise BadRequest(400, "bad-field", "zd_echo must be short printable text")
            return web.Response(text=echo)
        key, record = call_record(data, request.headers.get("Signature"), n.api_secret)
        stored = ctx.commit_inbound(key, [record])
        log.info(
            "http.novofon_call",
            record_event=record.fields["event"],
            pbx_call_id=record.pbx_call_id,
            repeat=not stored,
        )
        return web.Response(text="ok")

    async def sms(request: web.Request) -> web.Response:
        data = await read_params(request)
        if n.sms_token:
            token = data.pop("token", "")
            if not hmac.compare_digest(token.encode(), n.sms_token.encode()):
                raise BadRequest(
                    401, "bad-token", "the token query parameter does not match novofon.sms_token"
                )
        key, record = sms_record(data)
        stored = ctx.commit_inbound(key, [record])
        log.info("http.novofon_sms", pbx_call_id=record.pbx_call_id, repeat=not stored)
        return web.Response(text="ok")

    sinks: list[Sink] = [
        WebhookSink(hook.name or f"webhook{i + 1}", hook.url, hook.secret, ctx.http, frozenset(hook.events))
        for i, hook in enumerate(ctx.cfg.sinks.webhooks)
    ]
    return Parts(
        sinks=sinks,
        routes=[Route("/call", call, ("GET", "POST")), Route("/sms", sms, ("GET", "POST"))],
    )
