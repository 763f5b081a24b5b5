"""Fake ARI: the REST calls our client makes and the events WebSocket, as strict as Asterisk 22.

Basic auth on every request (401 "Authentication required" otherwise); unknown channels and bridges
answer 404; an application exists while its WebSocket is open (GET /applications/{app} 404
otherwise); originating into an id in use is 409; an endpoint in ``unreachable`` is 500
"Allocation failed". Tests push events with ``emit`` and drop connections with ``drop``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.base import FakeServer

USER, PASSWORD = "novofon-bridge", "fake-ari-password"


@dataclass
class FakeChannel:
    id: str
    name: str
    state: str = "Down"
    app_name: str = ""
    app_data: str = ""
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    ringing: bool = False
    played: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "caller": {"name": "", "number": ""},
            "dialplan": {
                "context": "x",
                "exten": "s",
                "priority": 1,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": "2026-11-29T14:50:12.098+0000",
        }


class FakeAri(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.channels: dict[str, FakeChannel] = {}
        self.bridges: dict[str, list[str]] = {}
        self.bridge_times: dict[str, str] = {}
        self.filters: dict[str, list[str]] = {}  # app -> allowed event types
        self.sockets: dict[str, list[web.WebSocketResponse]] = {}  # app -> open sockets
        self.connects: list[dict[str, str]] = []  # query of every events connection
        self.hangups: list[tuple[str, str]] = []  # (channel, reason)
        self.log: list[str] = []  # "METHOD path" of every REST call
        self.unreachable: set[str] = set()
        self.answer_pings = True  # False: a half-open connection (no pongs, no close)
        self._seq = 0
        r = self.app.router
        r.add_get("/ari/events", self.events)
        r.add_get("/ari/asterisk/info", self.info)
        r.add_get("/ari/applications/{app}", self.application)
        r.add_put("/ari/applications/{app}/eventFilter", self.event_filter)
        r.add_get("/ari/channels", self.list_channels)
        r.add_post("/ari/channels", self.originate)
        r.add_delete("/ari/channels/{id}", self.hangup)
        r.add_post("/ari/channels/{id}/ring", self.ring)
        r.add_delete("/ari/channels/{id}/ring", self.ring_stop)
        r.add_post("/ari/channels/{id}/play", self.play)
        r.add_get("/ari/bridges", self.list_bridges)
        r.add_post("/ari/bridges", self.create_bridge)
        r.add_post("/ari/bridges/{id}/addChannel", self.add_channel)
        r.add_delete("/ari/bridges/{id}", self.destroy_bridge)
        self.app.middlewares.insert(0, self._auth)

    @property
    def base(self) -> str:
        return f"{self.url}/ari"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"message": "Authentication required"}, status=401)
        if request.path != "/ari/events":
            self.log.append(f"{request.method} {request.path.removeprefix('/ari')}")
        response: web.StreamResponse = await handler(request)
        return response

    # -- events --------------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.WebSocketResponse:
        app = request.query.get("app", "")
        ws = web.WebSocketResponse(autoping=self.answer_pings)
        await ws.prepare(request)
        self.connects.append(dict(request.query))
        self.sockets.setdefault(app, []).append(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break
                if msg.type is WSMsgType.PING and not self.answer_pings:
                    continue  # swallowed: the client hears nothing back
        finally:
            self.sockets[app].remove(ws)
        return ws

    def registered(self, app: str) -> bool:
        return bool(self.sockets.get(app))

    async def emit(self, app: str, event: dict[str, Any]) -> None:
        """Send an event to the application's WebSocket, as Asterisk would (filtered)."""
        allowed = self.filters.get(app)
        if allowed is not None and event["type"] not in allowed:
            return
        for ws in list(self.sockets.get(app, [])):
            await ws.send_json({"application": app, **event})

    async def drop(self, app: str) -> None:
        """Close the application's WebSockets (Asterisk restarting, a network cut)."""
        for ws in list(self.sockets.get(app, [])):
            await ws.close()

    # -- REST ----------------------------------------------------------------------------------
    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"version": "22.10.1"}})

    async def application(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        if not self.registered(app):
            return web.json_response({"message": "Application not found"}, status=404)
        return web.json_response({"name": app, "channel_ids": [], "bridge_ids": []})

    async def event_filter(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        if not self.registered(app):
            return web.json_response({"message": "Application not found"}, status=404)
        body = await request.json()
        self.filters[app] = [f["type"] for f in body.get("allowed", [])]
        return web.json_response({"name": app, "events_allowed": body.get("allowed", [])})

    async def list_channels(self, request: web.Request) -> web.Response:
        return web.json_response([c.json() for c in self.channels.values()])

    async def originate(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        if "endpoint" not in q or "app" not in q:
            return web.json_response({"message": "Endpoint must be specified"}, status=400)
        if q["endpoint"] in self.unreachable:
            return web.json_response({"error": "Allocation failed"}, status=500)
        self._seq += 1
        chan_id = q.get("channelId") or f"pbx-{self._seq}"
        if chan_id in self.channels:
            return web.json_response({"message": "Channel with given unique ID already exists"}, status=409)
        body = await request.json() if request.can_read_body else None
        chan = FakeChannel(chan_id, f"{q['endpoint']}-{self._seq:08x}", params=q, body=body)
        self.channels[chan_id] = chan
        if q.get("otherChannelId"):
            self.channels[q["otherChannelId"]] = FakeChannel(q["otherChannelId"], f"{chan.name};2")
        return web.json_response(chan.json())

    def _chan(self, request: web.Request) -> FakeChannel | None:
        return self.channels.get(request.match_info["id"])

    async def hangup(self, request: web.Request) -> web.Response:
        chan = self.channels.pop(request.match_info["id"], None)
        if chan is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        self.hangups.append((chan.id, request.query.get("reason", "")))
        return web.Response(status=204)

    async def ring(self, request: web.Request) -> web.Response:
        chan = self._chan(request)
        if chan is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        chan.ringing = True
        return web.Response(status=204)

    async def ring_stop(self, request: web.Request) -> web.Response:
        chan = self._chan(request)
        if chan is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        chan.ringing = False
        return web.Response(status=204)

    async def play(self, request: web.Request) -> web.Response:
        chan = self._chan(request)
        if chan is None:
            return web.json_response({"message": "Channel not found"}, status=404)
        chan.played.append(request.query["media"])
        return web.json_response({"id": "pb-1", "target_uri": f"channel:{chan.id}"}, status=201)

    async def list_bridges(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "id": b,
                    "channels": chans,
                    "creationtime": self.bridge_times.get(b, "2026-11-29T14:50:12.098+0000"),
                }
                for b, chans in self.bridges.items()
            ]
        )

    async def create_bridge(self, request: web.Request) -> web.Response:
        bridge_id = request.query.get("bridgeId", f"bridge-{self._seq}")
        if bridge_id in self.bridges:
            return web.json_response({"message": "Bridge with given unique ID already exists"}, status=409)
        self.bridges[bridge_id] = []
        return web.json_response({"id": bridge_id, "channels": []})

    async def add_channel(self, request: web.Request) -> web.Response:
        bridge = self.bridges.get(request.match_info["id"])
        if bridge is None:
            return web.json_response({"message": "Bridge not found"}, status=404)
        wanted = request.query.get("channel", "").split(",")
        if any(c not in self.channels for c in wanted):
            return web.json_response({"message": "Channel not found"}, status=400)
        bridge.extend(c for c in wanted if c not in bridge)
        return web.Response(status=204)

    async def destroy_bridge(self, request: web.Request) -> web.Response:
        if self.bridges.pop(request.match_info["id"], None) is None:
            return web.json_response({"message": "Bridge not found"}, status=404)
        return web.Response(status=204)

    # -- helpers for tests ---------------------------------------------------------------------
    def add_live(self, chan_id: str, name: str, app_data: str = "", state: str = "Up") -> FakeChannel:
        """A channel Asterisk has already (a call that outlived a daemon restart)."""
        chan = FakeChannel(chan_id, name, state, "Stasis" if app_data else "AppDial", app_data)
        self.channels[chan_id] = chan
        return chan
