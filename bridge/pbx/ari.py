"""ARI (Asterisk REST Interface) on aiohttp: REST calls with typed errors, and the events WebSocket.

ari-py does not import on Python 3 and the swagger-based async clients have neither subscribeAll
nor reconnection (SPECS.md), so this is a small client of our own:

- ``AriClient``: one REST call = one method; every answer goes through ``classify`` (one classifier
  for the whole API, as aiogram's ``check_response``), transport failures become ``AriUnavailable``.
  The password travels only in the Authorization header: never in a URL, a log line or an error.
- ``AriSupervisor``: keeps ``/ari/events?app=NAME&subscribeAll=true`` open for the daemon, with
  exponential backoff and jitter, a WebSocket heartbeat (a half-open connection is noticed), the
  application's event filter set again and ``on_connected`` run after every (re)connect (our Stasis
  application re-adopts its calls there), and its state for /status.

Closing the WebSocket never touches a call: channels stay in their bridges while we are away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from bridge.backoff import Backoff

log = structlog.get_logger("bridge.ari")

Event = dict[str, Any]


@dataclass(frozen=True)
class AriSettings:
    url: str = "http://127.0.0.1:8088/ari"
    username: str = "novofon-bridge"
    password: str = field(default="", repr=False)
    app: str = "novofon-bridge"
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    heartbeat: float = 5.0  # WebSocket ping period; no pong within half of it = dead connection

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


# -- errors ------------------------------------------------------------------------------------


class AriError(Exception):
    """An ARI call failed; ``status`` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AriUnavailable(AriError):
    """No answer, a timeout or a 5xx: Asterisk or its HTTP server is down; try again later."""


class AriAuthError(AriError):
    """401/403: the user or password in config.yaml does not match ari.conf."""


class AriBadRequest(AriError):
    """400/422: a value Asterisk refuses (a bug or a bad setting, never worth a retry)."""


class AriNotFound(AriError):
    """404: no such channel, bridge or application (often: it has just hung up)."""


class AriConflict(AriError):
    """409: the object is in the wrong state (a channel not in our application, an id in use)."""


class AriDialFailed(AriError):
    """Originate: Asterisk could not create the channel (no such endpoint, or not reachable)."""


def classify(status: int, body: str, what: str) -> AriError | None:
    """One classifier for every ARI answer: None when it succeeded, else the error to raise."""
    if 200 <= status < 300:
        return None
    try:
        decoded = json.loads(body) if body else {}
        detail = (
            str(decoded.get("message") or decoded.get("error") or "") if isinstance(decoded, dict) else ""
        )
    except ValueError:
        detail = body[:200]
    text = f"ARI {what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status in (401, 403):
        return AriAuthError(f"{text}: check asterisk.ari.username/password against ari.conf", status)
    if status == 404:
        return AriNotFound(text, status)
    if status == 409:
        return AriConflict(text, status)
    if status in (400, 422):
        return AriBadRequest(text, status)
    if status == 500 and detail == "Allocation failed":
        return AriDialFailed(text, status)
    if status >= 500 or status in (408, 429):
        return AriUnavailable(text, status)
    return AriBadRequest(text, status)


# -- REST --------------------------------------------------------------------------------------


class AriClient:
    """REST calls to ARI. Owns its session (created on first use, inside the running loop)."""

    def __init__(self, settings: AriSettings) -> None:
        self.settings = settings
        token = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            timeout = aiohttp.ClientTimeout(total=s.request_timeout, connect=s.connect_timeout)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        what = f"{method} {path}"
        try:
            async with self.session.request(
                method, self.settings.base + path, params=params, json=body
            ) as resp:
                text = await resp.text()
                error = classify(resp.status, text, what)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise AriUnavailable(
                f"ARI {what}: no answer from {self.settings.base} ({type(e).__name__}: {e or 'timeout'})"
            ) from e
        if error is not None:
            raise error
        return json.loads(text) if text else None

    # -- what we use of the API ----------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/asterisk/info"))

    async def application(self, name: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/applications/{_id(name)}"))

    async def set_event_filter(self, app: str, allowed: Iterable[str]) -> None:
        body = {"allowed": [{"type": t} for t in allowed], "disallowed": []}
        await self.request("PUT", f"/applications/{_id(app)}/eventFilter", body=body)

    async def channels(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/channels"))

    async def bridges(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/bridges"))

    async def originate(
        self,
        endpoint: str,
        *,
        app: str,
        app_args: Iterable[str],
        channel_id: str,
        other_channel_id: str | None = None,
        originator: str | None = None,
        caller_id: str | None = None,
        timeout: float = 30.0,
        variables: dict[str, str] | None = None,
        formats: str = "",
    ) -> dict[str, Any]:
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": ",".join(app_args),
            "channelId": channel_id,
            "timeout": str(int(timeout)),
        }
        if other_channel_id:
            params["otherChannelId"] = other_channel_id
        if originator:
            params["originator"] = originator
        if caller_id:
            params["callerId"] = caller_id
        if formats and not originator:
            params["formats"] = formats
        body = {"variables": variables} if variables else None
        return dict(await self.request("POST", "/channels", params, body))

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang a channel up; False when it was already gone."""
        try:
            await self.request("DELETE", f"/channels/{_id(channel_id)}", {"reason": reason})
        except AriNotFound:
            return False
        return True

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{_id(channel_id)}/ring")

    async def play(self, channel_id: str, media: str) -> None:
        await self.request("POST", f"/channels/{_id(channel_id)}/play", {"media": media})

    async def create_bridge(self, bridge_id: str) -> None:
        await self.request("POST", "/bridges", {"bridgeId": bridge_id, "type": "mixing"})

    async def add_to_bridge(self, bridge_id: str, channels: Iterable[str]) -> None:
        await self.request("POST", f"/bridges/{_id(bridge_id)}/addChannel", {"channel": ",".join(channels)})

    async def destroy_bridge(self, bridge_id: str) -> bool:
        try:
            await self.request("DELETE", f"/bridges/{_id(bridge_id)}")
        except AriNotFound:
            return False
        return True

    async def events(self, app: str) -> aiohttp.ClientWebSocketResponse:
        """Open the events WebSocket of ``app`` (registering the application)."""
        s = self.settings
        url = f"{s.base}/events?app={quote(app, safe='')}&subscribeAll=true"
        try:
            async with asyncio.timeout(s.connect_timeout):
                return await self.session.ws_connect(url, heartbeat=s.heartbeat)
        except aiohttp.WSServerHandshakeError as e:
            raise classify(e.status, e.message, "events") or AriUnavailable(str(e)) from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise AriUnavailable(
                f"ARI events: cannot connect to {s.base} ({type(e).__name__}: {e or 'timeout'})"
            ) from e


def _id(value: str) -> str:
    """A path segment: ids we make are [A-Za-z0-9_.-]; anything else is escaped, never a path."""
    return quote(value, safe="")


# -- the events WebSocket, kept open -----------------------------------------------------------

EventHandler = Callable[[Event], Awaitable[None]]
OnConnected = Callable[[], Awaitable[None]]


class AriSupervisor:
    """Keep the events WebSocket of one application open; report its health."""

    def __init__(
        self,
        client: AriClient,
        on_event: EventHandler,
        on_connected: OnConnected | None = None,
        events: Iterable[str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.app = client.settings.app
        self._on_event = on_event
        self._on_connected = on_connected
        self._events = tuple(events) if events is not None else None
        self.backoff = backoff or Backoff()
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.connects = 0
        self.since: float | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self, first: aiohttp.ClientWebSocketResponse | None = None) -> None:
        """Run until cancelled; ``first``: a WebSocket already opened by the caller (the CLI)."""
        attempt = 0
        ws = first
        log.info("ari.connecting", url=self.client.settings.base, app=self.app)
        while True:
            if ws is None:
                try:
                    ws = await self.client.events(self.app)
                except AriError as e:
                    attempt += 1
                    self.last_error = str(e)
                    delay = self.backoff.delay(attempt)
                    if isinstance(e, AriAuthError):
                        delay = max(delay, self.backoff.max_delay)
                    log.warning("ari.unavailable", error=str(e), attempt=attempt, retry_in=round(delay, 2))
                    await asyncio.sleep(delay)
                    continue
            attempt = 0
            self._ws = ws
            try:
                reason = await self._serve(ws)
            except AriError as e:
                reason = str(e)
            finally:
                self.connected.clear()
                self._ws = None
                self.since = time.time()
                await ws.close()
            ws = None
            self.last_error = reason
            delay = self.backoff.delay(1)
            log.warning("ari.disconnected", reason=reason, retry_in=round(delay, 2))
            await asyncio.sleep(delay)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Resubscribe, hand every event over in order; return why the connection ended."""
        if self._events is not None:
            await self.client.set_event_filter(self.app, self._events)
        if self._on_connected is not None:
            await self._on_connected()
        self.connects += 1
        self.last_error = None
        self.since = time.time()
        self.connected.set()
        log.info("ari.connected", url=self.client.settings.base, app=self.app, connects=self.connects)
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = json.loads(msg.data)
            except ValueError:
                log.warning("ari.bad_event", data=str(msg.data)[:200])
                continue
            if not isinstance(event, dict):
                continue
            try:
                await self._on_event(event)
            except Exception:  # one bad event must not drop the connection (panoramisk's fault)
                log.exception("ari.event_handler_failed", event_type=event.get("type"))
        exc = ws.exception()
        return f"events WebSocket closed{f': {exc}' if exc else ''} (code {ws.close_code})"

    async def stop(self) -> None:
        """Close the WebSocket (the calls stay up: nothing is hung up)."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        await self.client.close()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected.is_set(),
            "url": self.client.settings.base,
            "app": self.app,
            "last_error": self.last_error,
            "connects": self.connects,
        }
