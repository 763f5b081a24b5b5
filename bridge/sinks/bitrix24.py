"""Bitrix24 telephony: each call becomes an external call in the CRM, with its card and recording.

Lifecycle per call (pbx_call_id -> Bitrix24 CALL_ID kept in the outbox ``sink_state``, so retries
and restarts never register a call twice; EXTERNAL_CALL_ID = pbx_call_id as well):

  inbound   first INTERNAL: register (TYPE 2) + show the card to each employee being rung;
            ANSWER: hide it from those who did not answer; END: finish (DURATION, STATUS_CODE);
  outbound  OUT_START: register (TYPE 1, card shown to the caller); OUT_END: finish;
  RECORD    attachRecord (FILENAME + FILE_CONTENT) after finish.

Two ways in: an incoming webhook URL, or a local application (OAuth with token refresh), because
some portals now refuse register/finish from a webhook (WRONG_AUTH_TYPE).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from bridge.calls.records import CallRecord, Event
from bridge.directory import Directory
from bridge.outbox.ratelimit import TokenBucket
from bridge.outbox.store import Delivery, OutboxStore
from bridge.sinks.base import PermanentFailure, RetryLater
from bridge.sinks.http import Http, transport_error

log = structlog.get_logger("bridge.bitrix24")

RECORDING_WAIT_ATTEMPTS = 6

# Novofon disposition -> Bitrix24 STATUS_CODE.
INBOUND_STATUS = {"answered": "200"}  # anything else inbound is a missed call
OUTBOUND_STATUS = {
    "answered": "200",
    "busy": "486",
    "no answer": "480",
    "cancel": "603",
    "failed": "503",
    "unallocated number": "404",
}


@dataclass(frozen=True)
class BitrixApp:
    portal_url: str = ""  # https://example.bitrix24.ru
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)  # from the app's installation
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"


@dataclass(frozen=True)
class BitrixSettings:
    webhook_url: str = field(default="", repr=False)  # https://portal/rest/1/CODE/
    app: BitrixApp = BitrixApp()
    default_user_id: str = ""
    crm_create: bool = True
    show_card: bool = True
    attach_recordings: bool = True
    timezone: str = "Europe/Moscow"
    rate: float = 2.0
    burst: float = 50.0


class BitrixError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"Bitrix24 {status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


class Bitrix24Sink:
    name = "bitrix24"

    def __init__(
        self,
        settings: BitrixSettings,
        http: Http,
        store: OutboxStore,
        directory: Directory,
        client: BitrixClient | None = None,
    ) -> None:
        if not settings.webhook_url and not settings.app.portal_url:
            raise ValueError("Bitrix24 needs webhook_url or app.portal_url")
        self.s = settings
        self._store = store
        self._directory = directory
        self.client = client or BitrixClient(settings, http, store)
        self._call = self.client.call
        self._tz = ZoneInfo(settings.timezone)

    # -- state ---------------------------------------------------------------------------------
    def _load(self, pbx_call_id: str) -> dict[str, Any]:
        raw = self._store.get_state(self.name, f"call:{pbx_call_id}")
        return (
            json.loads(raw) if raw else {"call_id": None, "shown": [], "finished": False, "attached": False}
        )

    def _save(self, pbx_call_id: str, st: dict[str, Any]) -> None:
        self._store.set_state(self.name, f"call:{pbx_call_id}", json.dumps(st))

    def _user(self, ext: str) -> dict[str, str]:
        user = self._directory.bitrix_user(ext)
        if user:
            return {"USER_ID": user}
        if ext:
            return {"USER_PHONE_INNER": ext}
        if self.s.default_user_id:
            return {"USER_ID": self.s.default_user_id}
        raise PermanentFailure("no employee for this call: set sinks.bitrix24.default_user_id")

    # -- lifecycle -----------------------------------------------------------------------------
    async def send(self, delivery: Delivery) -> None:
        r = delivery.record
        f, ev = r.fields, r.event
        if ev is Event.SMS:
            return  # not a call: Bitrix24 telephony has nothing to do with it
        st = self._load(r.pbx_call_id)
        if ev is Event.START:
            return  # nobody to show the card to yet: registered at the first extension rung
        if ev is Event.INTERNAL:
            await self._register(r, st, f["internal"])
            await self._show(r, st, f["internal"])
        elif ev is Event.OUT_START:
            await self._register(r, st, f["internal"])
        elif ev is Event.ANSWER and r.meta.get("direction") == "in":
            await self._hide(r, st, keep=f["internal"])
        elif ev in (Event.END, Event.OUT_END):
            await self._register(r, st, f["internal"])
            await self._finish(r, st)
            answered = f["disposition"] == "answered"  # the answerer keeps the card (the CRM form)
            await self._hide(r, st, keep=f["internal"] if answered else None)
        elif ev is Event.RECORD and self.s.attach_recordings:
            await self._attach(r, st, delivery.attempts)

    async def _register(self, r: CallRecord, st: dict[str, Any], ext: str) -> None:
        if st["call_id"]:
            return
        f = r.fields
        inbound = r.meta.get("direction") == "in"
        params = {
            **self._user(ext),
            "PHONE_NUMBER": f["caller_id"] if inbound else f["destination"],
            "TYPE": "2" if inbound else "1",
            "CALL_START_DATE": self._iso(f["call_start"]),
            "CRM_CREATE": "1" if self.s.crm_create else "0",
            "SHOW": "0" if inbound or not self.s.show_card else "1",
            "EXTERNAL_CALL_ID": r.pbx_call_id,
        }
        if inbound and f.get("called_did"):
            params["LINE_NUMBER"] = f["called_did"]
        result = await self._call("telephony.externalcall.register", params)
        st["call_id"] = result["CALL_ID"]
        self._save(r.pbx_call_id, st)

    async def _show(self, r: CallRecord, st: dict[str, Any], ext: str) -> None:
        user = self._directory.bitrix_user(ext)
        if not self.s.show_card or not user or user in st["shown"]:
            return
        await self._call("telephony.externalcall.show", {"CALL_ID": st["call_id"], "USER_ID": user})
        st["shown"].append(user)
        self._save(r.pbx_call_id, st)

    async def _hide(self, r: CallRecord, st: dict[str, Any], keep: str | None) -> None:
        keep_user = self._directory.bitrix_user(keep or "")
        others = [u for u in st["shown"] if u != keep_user]
        if not others:
            return
        await self._call("telephony.externalcall.hide", {"CALL_ID": st["call_id"], "USER_ID": others})
        st["shown"] = [u for u in st["shown"] if u == keep_user]
        self._save(r.pbx_call_id, st)

    async def _finish(self, r: CallRecord, st: dict[str, Any]) -> None:
        if st["finished"]:
            return
        f = r.fields
        table = INBOUND_STATUS if r.event is Event.END else OUTBOUND_STATUS
        status = table.get(f["disposition"], "304" if r.event is Event.END else "OTHER")
        params: dict[str, Any] = {
            "CALL_ID": st["call_id"],
            **self._user(f["internal"]),
            "DURATION": f["duration"],
            "STATUS_CODE": status,
        }
        if status == "OTHER":
            params["FAILED_REASON"] = f["disposition"]
        await self._call("telephony.externalcall.finish", params)
        st["finished"] = True
        self._save(r.pbx_call_id, st)

    async def _attach(self, r: CallRecord, st: dict[str, Any], attempts: int) -> None:
        if st["attached"] or not st["call_id"]:
            return
        if not r.meta.get("recording_file"):
            return  # the daemon did not say where the file is (recordings_dir unset): nothing to attach
        path = Path(r.meta["recording_file"])
        if not path.is_file():
            if attempts < RECORDING_WAIT_ATTEMPTS:
                raise RetryLater(f"recording {path} is not there yet", retry_after=2.0 * (attempts + 1))
            log.warning("bitrix24.recording_missing", file=str(path), pbx_call_id=r.pbx_call_id)
            return
        await self._call(
            "telephony.externalCall.attachRecord",
            {
                "CALL_ID": st["call_id"],
                "FILENAME": path.name,
                "FILE_CONTENT": base64.b64encode(path.read_bytes()).decode(),
            },
        )
        st["attached"] = True
        self._save(r.pbx_call_id, st)

    def _iso(self, call_start: str) -> str:
        return datetime.strptime(call_start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=self._tz).isoformat()

    async def close(self) -> None:
        pass


class BitrixClient:
    """Bitrix24 REST over an incoming webhook or a local application (OAuth, refreshed tokens),
    under the portal's leaky-bucket limit; answers classified into RetryLater / PermanentFailure."""

    name = "bitrix24"

    def __init__(self, settings: BitrixSettings, http: Http, store: OutboxStore) -> None:
        self.s = settings
        self._http = http
        self._store = store
        self._bucket = TokenBucket(settings.rate, settings.burst)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Call a REST method; return its ``result``."""
        return (await self._request(method, params))["result"]

    async def call_all(self, method: str, params: dict[str, Any], limit: int = 10_000) -> list[Any]:
        """A list method, every page (Bitrix24 pages by 50 with ``start`` / ``next``)."""
        out: list[Any] = []
        start: int | None = 0
        while start is not None and len(out) < limit:
            body = await self._request(method, {**params, "start": start})
            page = body["result"]
            out.extend(page if isinstance(page, list) else [])
            nxt = body.get("next")
            start = int(nxt) if nxt is not None else None
        return out

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2):  # the second pass only after refreshing an expired OAuth token
            await self._bucket.acquire()
            url, auth = await self._endpoint(method)
            try:
                async with self._http.session.post(url, json={**params, **auth}) as resp:
                    status = resp.status
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError:
                        body = {"error": "BAD_RESPONSE", "error_description": (await resp.text())[:200]}
            except (aiohttp.ClientError, TimeoutError) as e:
                raise transport_error(e) from None
            if isinstance(body, dict) and "result" in body and status < 400:
                return body
            err = BitrixError(status, str(body.get("error", "")), str(body.get("error_description", "")))
            if err.error == "expired_token" and self.s.app.portal_url:
                await self._refresh()
                continue
            self._classify(err)
        raise RetryLater("Bitrix24 kept rejecting a fresh OAuth token")

    def _classify(self, e: BitrixError) -> None:
        if e.error == "QUERY_LIMIT_EXCEEDED" or e.status == 503:
            self._bucket.drain()
            raise RetryLater(str(e), retry_after=1.0 / self.s.rate * 2)
        if e.status >= 500 or e.status == 429:
            raise RetryLater(str(e))
        if e.error == "WRONG_AUTH_TYPE":
            raise PermanentFailure(
                f"{e} — this portal allows telephony only to applications: "
                "configure sinks.bitrix24.app instead of webhook_url"
            )
        raise PermanentFailure(str(e))

    async def _endpoint(self, method: str) -> tuple[str, dict[str, str]]:
        if self.s.webhook_url:
            return self.s.webhook_url.rstrip("/") + f"/{method}.json", {}
        token = self._token()
        if token is None or token["expires"] < time.time() + 30:
            token = await self._refresh()
        return self.s.app.portal_url.rstrip("/") + f"/rest/{method}.json", {"auth": token["access_token"]}

    def _token(self) -> dict[str, Any] | None:
        raw = self._store.get_state(self.name, "oauth")
        return json.loads(raw) if raw else None

    async def _refresh(self) -> dict[str, Any]:
        app = self.s.app
        current = self._token()
        refresh = current["refresh_token"] if current else app.refresh_token
        query = {
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "refresh_token": refresh,
        }
        try:
            async with self._http.session.get(app.oauth_url, params=query) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise RetryLater(f"Bitrix24 OAuth refresh failed: {type(e).__name__}") from None
        if "access_token" not in body:
            error = body.get("error", "?")
            if error in ("invalid_grant", "invalid_client"):
                raise PermanentFailure(
                    f"Bitrix24 OAuth refused ({error}): reinstall the application or "
                    "put a new refresh_token in sinks.bitrix24.app"
                )
            raise RetryLater(f"Bitrix24 OAuth refresh failed: {error}")
        token = {
            "access_token": body["access_token"],
            "refresh_token": body["refresh_token"],
            "expires": time.time() + float(body.get("expires_in", 3600)),
        }
        self._store.set_state(self.name, "oauth", json.dumps(token))
        log.info("bitrix24.token_refreshed")
        return token
