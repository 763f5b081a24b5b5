"""Novofon: the cloud's call and SMS notifications to us (/call, /sms), and the CRM webhooks we
sign exactly as Novofon does (so a CRM built for Novofon accepts our records unchanged)."""

from __future__ import annotations

import hmac
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from bridge.errors import BadRequest
from bridge.http import peers
from bridge.http.params import read_params
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.novofon import v2
from bridge.integrations.novofon.inbound import MAX_VARIANTS, call_record, sms_record
from bridge.integrations.novofon.recordings import RecordingLinks
from bridge.integrations.novofon.state import add_variant, call_start, variants
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.outbox.sink import Sink

log = structlog.get_logger("bridge.http")

MAX_ECHO = 200


def _epoch(call_start: str, tz: ZoneInfo) -> float:
    return datetime.strptime(call_start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).timestamp()


PLAIN = {"X-Content-Type-Options": "nosniff"}


def setup(ctx: Context) -> Parts:
    n = ctx.cfg.novofon
    allowed = peers.networks(n.allowed_ips)
    tz = ZoneInfo(ctx.cfg.pbx.timezone)

    def check_sender(request: web.Request) -> None:
        if allowed and not peers.contains(allowed, peers.client_address(request)):
            raise BadRequest(403, "address-not-allowed", "the sender's address is not in novofon.allowed_ips")

    async def call(request: web.Request) -> web.Response:
        check_sender(request)
        data = await read_params(request, json_ok=True)
        if "zd_echo" in data and "event" not in data:  # Novofon checks the URL when it is saved
            echo = data["zd_echo"]
            if len(echo) > MAX_ECHO or not echo.isprintable():
                raise BadRequest(400, "bad-field", "zd_echo must be short printable text")
            return web.Response(text=echo, content_type="text/plain", headers=PLAIN)
        if v2.is_v2(data):
            return notification_v2(request, data)
        note = call_record(
            data, request.headers.get("Signature"), n.api_secret, time.time(), tz, n.replay_window
        )
        record = note.record
        if note.variant_of is not None and variants(ctx.state, note.variant_of) >= MAX_VARIANTS:
            log.warning(
                "novofon.replay_suspected",
                record_event=record.fields["event"],
                pbx_call_id=record.pbx_call_id,
                client=str(peers.client_address(request)),
                reason=f"more than {MAX_VARIANTS} phones for one signed notification",
            )
            return web.Response(text="ok", headers=PLAIN)
        stored = ctx.commit_inbound(note.key, [record])
        if stored and note.variant_of is not None:
            add_variant(ctx.state, note.variant_of)
        log.info(
            "http.novofon_call",
            record_event=record.fields["event"],
            pbx_call_id=record.pbx_call_id,
            repeat=not stored,
            client=str(peers.client_address(request)),  # to learn Novofon's addresses (allowed_ips)
        )
        return web.Response(text="ok", headers=PLAIN)

    def notification_v2(request: web.Request, data: dict[str, str]) -> web.Response:
        """Novofon 2.0: no Signature; the token in the URL says it is ours to take."""
        if not n.notifications_token:
            raise BadRequest(
                403, "not-configured", "novofon.notifications_token is not set: 2.0 notifications are refused"
            )
        token = data.pop("token", "")
        if not hmac.compare_digest(token.encode(), n.notifications_token.encode()):
            raise BadRequest(
                401, "bad-token", "the token query parameter does not match novofon.notifications_token"
            )
        key, records = v2.notification(
            data,
            tz,
            ctx.cfg.pbx.country_code,
            lambda pbx_call_id, now: call_start(ctx.state, pbx_call_id, now),
        )
        for r in records:
            started = r.fields.get("call_start")
            if started and abs(time.time() - _epoch(started, tz)) > n.replay_window:
                raise BadRequest(400, "stale", "the call is outside novofon.replay_window (a replay?)")
        stored = ctx.commit_inbound(key, records) if records else False
        log.info(
            "http.novofon_v2",
            notification=data.get("type", ""),
            records=[r.fields["event"] for r in records],
            repeat=bool(records) and not stored,
            client=str(peers.client_address(request)),
        )
        return web.Response(text="ok", headers=PLAIN)

    async def sms(request: web.Request) -> web.Response:
        if not n.sms_token:
            raise BadRequest(403, "not-configured", "novofon.sms_token is not set: /sms is closed")
        check_sender(request)
        data = await read_params(request)
        token = data.pop("token", "")
        if not hmac.compare_digest(token.encode(), n.sms_token.encode()):
            raise BadRequest(401, "bad-token", "the token query parameter does not match novofon.sms_token")
        key, record = sms_record(data)
        stored = ctx.commit_inbound(key, [record])
        log.info("http.novofon_sms", pbx_call_id=record.pbx_call_id, repeat=not stored)
        return web.Response(text="ok", headers=PLAIN)

    sinks: list[Sink] = [
        WebhookSink(hook.name or f"webhook{i + 1}", hook.url, hook.secret, ctx.http, frozenset(hook.events))
        for i, hook in enumerate(ctx.cfg.sinks.webhooks)
    ]
    parts = Parts(
        sinks=sinks,
        routes=[Route("/call", call, ("GET", "POST")), Route("/sms", sms, ("GET", "POST"))],
    )
    if n.recording_links:
        links = RecordingLinks(
            n.recordings_url, n.recordings_key, n.recordings_link_ttl, Path(ctx.cfg.asterisk.recordings_dir)
        )
        parts.routes.append(Route("/recordings/{name:.+}", links.serve, ("GET",)))
        parts.enrichers.append(links.meta_for)
    return parts
