"""Fake Bitrix24 REST: telephony.externalcall.* over an incoming webhook or an OAuth application."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Fault

WEBHOOK_USER, WEBHOOK_CODE = "1", "fakewebhookcode123"
CLIENT_ID, CLIENT_SECRET = "local.fake.app", "fake-client-secret"
REGISTER_REPEAT_WINDOW = 30 * 60.0  # a repeated register answers the same CALL_ID this long
STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423", "OTHER"}


def query_limit() -> Fault:
    return Fault(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})


@dataclass
class ExternalCall:
    call_id: str
    params: dict[str, Any]
    shown: set[str] = field(default_factory=set)
    hidden: set[str] = field(default_factory=set)
    finish: dict[str, Any] | None = None
    records: list[tuple[str, int]] = field(default_factory=list)
    registered_at: float = field(default_factory=time.time)


def register_key(p: dict[str, Any]) -> tuple[str, ...]:
    """What the portal matches a repeated register on (b24restdocs, "Features of Re-registration")."""
    user = str(p.get("USER_ID") or p.get("USER_PHONE_INNER") or "")
    keys = ("PHONE_NUMBER", "TYPE", "LINE_NUMBER", "EXTERNAL_CALL_ID")
    return (*(str(p.get(k, "")) for k in keys), user)


class FakeBitrix(FakeServer):
    def __init__(self, app_only: bool = False) -> None:
        super().__init__()
        self.app_only = app_only  # the portal refuses telephony from webhooks (WRONG_AUTH_TYPE)
        self.calls: dict[str, ExternalCall] = {}
        self.by_key: dict[tuple[str, ...], str] = {}
        self.log: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self.refresh_token = "refresh-0"
        self.access_tokens: dict[str, float] = {}
        self.token_lifetime = 3600.0
        self.refreshes = 0
        self.users: list[dict[str, Any]] = []  # what user.get knows
        self.app.router.add_post(f"/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/{{method}}.json", self.webhook)
        self.app.router.add_post("/rest/{method}.json", self.oauth_call)
        self.app.router.add_get("/oauth/token/", self.oauth_token)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/"

    @staticmethod
    def _error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def webhook(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.app_only and method.lower().startswith("telephony.externalcall."):
            return self._error(401, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
        return await self._dispatch(method, await request.json())

    async def oauth_call(self, request: web.Request) -> web.Response:
        params = await request.json()
        token = params.pop("auth", None)
        expires = self.access_tokens.get(token or "")
        if expires is None:
            return self._error(401, "invalid_token", "The access token provided is invalid.")
        if expires < time.time():
            return self._error(401, "expired_token", "The access token provided has expired.")
        return await self._dispatch(request.match_info["method"], params)

    async def oauth_token(self, request: web.Request) -> web.Response:
        q = request.query
        if (
            q.get("grant_type") != "refresh_token"
            or q.get("client_id") != CLIENT_ID
            or q.get("client_secret") != CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        if q.get("refresh_token") != self.refresh_token:
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refreshes += 1
        self.refresh_token = f"refresh-{self.refreshes}"
        access = secrets.token_hex(8)
        self.access_tokens[access] = time.time() + self.token_lifetime
        return web.json_response(
            {
                "access_token": access,
                "refresh_token": self.refresh_token,
                "expires_in": int(self.token_lifetime),
            }
        )

    def expire_tokens(self) -> None:
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    async def _dispatch(self, method: str, p: dict[str, Any]) -> web.Response:
        self.log.append((method, p))
        m = method.lower()
        if m == "user.get":
            users = self.users
            if "ID" in p:
                users = [u for u in users if str(u["ID"]) == str(p["ID"])]
            if (p.get("FILTER") or {}).get("ACTIVE"):
                users = [u for u in users if u.get("ACTIVE") is True]
            start = int(p.get("start", 0))
            page = users[start : start + 50]
            body: dict[str, Any] = {"result": page, "total": len(users)}
            if start + 50 < len(users):
                body["next"] = start + 50
            return web.json_response(body)
        if m == "telephony.externalcall.register":
            for key in ("PHONE_NUMBER", "TYPE"):
                if not p.get(key):
                    return self._error(400, "ERROR_ARGUMENT", f"{key} is required")
            if not (p.get("USER_ID") or p.get("USER_PHONE_INNER")):
                return self._error(400, "ERROR_ARGUMENT", "USER_ID or USER_PHONE_INNER should be set")
            if str(p["TYPE"]) not in {"1", "2", "3", "4", "5"}:
                return self._error(400, "ERROR_ARGUMENT", "Unknown TYPE")
            # Like the portal: the same request again within 30 minutes, while that call is not
            # finished, answers the CALL_ID it made; anything else is a new call.
            key = register_key(p)
            same = self.calls.get(self.by_key.get(key, ""))
            if same and same.finish is None and time.time() - same.registered_at < REGISTER_REPEAT_WINDOW:
                return web.json_response({"result": {"CALL_ID": same.call_id}})
            call_id = f"externalCall.{next(self._ids)}"
            self.calls[call_id] = ExternalCall(call_id, dict(p))
            self.by_key[key] = call_id
            return web.json_response({"result": {"CALL_ID": call_id, "CRM_CREATED_LEAD": None}})
        call = self.calls.get(str(p.get("CALL_ID", "")))
        if call is None:
            return self._error(400, "ERROR_NOT_FOUND", "Call is not found")
        if m == "telephony.externalcall.show":
            users = p["USER_ID"] if isinstance(p["USER_ID"], list) else [p["USER_ID"]]
            call.shown.update(str(u) for u in users)
        elif m == "telephony.externalcall.hide":
            users = p["USER_ID"] if isinstance(p["USER_ID"], list) else [p["USER_ID"]]
            call.hidden.update(str(u) for u in users)
        elif m == "telephony.externalcall.finish":
            if call.finish is not None:  # a finished call is no longer among the calls in progress
                return self._error(
                    400, "ERROR_CORE", "Call is not found (call should be registered prior to finishing)"
                )
            if str(p.get("STATUS_CODE", "200")) not in STATUS_CODES:
                return self._error(400, "ERROR_ARGUMENT", "Wrong STATUS_CODE")
            call.finish = dict(p)
        elif m == "telephony.externalcall.attachrecord":
            if call.finish is None:
                return self._error(400, "ERROR_CALL_NOT_FINISHED", "Call must be finished first")
            if not p.get("FILENAME") or not (p.get("FILE_CONTENT") or p.get("RECORD_URL")):
                return self._error(400, "ERROR_ARGUMENT", "FILENAME and FILE_CONTENT are required")
            call.records.append((p["FILENAME"], len(p.get("FILE_CONTENT", ""))))
        else:
            return self._error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        return web.json_response({"result": True})
