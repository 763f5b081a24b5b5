"""Fake Bitrix24 REST: telephony.externalcall.*, user.get and the CRM lookups routing uses
(crm.duplicate.findbycomm, crm.contact/company/lead.get), over an incoming webhook or an OAuth
application."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Fault

WEBHOOK_USER, WEBHOOK_CODE = "1", "fakewebhookcode123"
CLIENT_ID, CLIENT_SECRET = "local.fake.app", "fake-client-secret"
CRM_GET = {"crm.contact.get": "CONTACT", "crm.company.get": "COMPANY", "crm.lead.get": "LEAD"}
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


class FakeBitrix(FakeServer):
    def __init__(self, app_only: bool = False) -> None:
        super().__init__()
        self.app_only = app_only  # the portal refuses telephony from webhooks (WRONG_AUTH_TYPE)
        self.calls: dict[str, ExternalCall] = {}
        self.by_external: dict[str, str] = {}
        self.log: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self.refresh_token = "refresh-0"
        self.access_tokens: dict[str, float] = {}
        self.token_lifetime = 3600.0
        self.refreshes = 0
        self.users: list[dict[str, Any]] = []  # what user.get knows
        # CRM entities by type (CONTACT, COMPANY, LEAD) and ID, as crm.*.get returns them
        self.crm: dict[str, dict[str, dict[str, Any]]] = {"CONTACT": {}, "COMPANY": {}, "LEAD": {}}
        self.latency = 0.0  # seconds every REST call takes (huge: the portal hangs)
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

    def add_crm(self, kind: str, entity_id: int, phones: list[str], assigned: str, **fields: Any) -> None:
        """A CRM entity with these phone numbers (as a person would type them) and responsible user."""
        self.crm[kind][str(entity_id)] = {
            "ID": str(entity_id),
            "ASSIGNED_BY_ID": assigned,
            "PHONE": [
                {"ID": str(i), "VALUE_TYPE": "WORK", "VALUE": v, "TYPE_ID": "PHONE"}
                for i, v in enumerate(phones)
            ],
            **fields,
        }

    def _find_by_comm(self, params: dict[str, Any]) -> web.Response:
        """crm.duplicate.findbycomm: parameter names in any case, as the portal reads them."""
        p = {k.upper(): v for k, v in params.items()}
        kind, values, entity = p.get("TYPE"), p.get("VALUES"), p.get("ENTITY_TYPE")
        if not kind:
            return self._error(400, "", "Communication type is not defined.")
        if kind not in ("PHONE", "EMAIL"):
            return self._error(400, "", f"Communication type '{kind}' is not supported in current context.")
        if not values or not isinstance(values, list):
            return self._error(400, "", "Communication values is not defined.")
        if len(values) > 20:
            return self._error(400, "", "Too many communication values.")
        wanted = {"".join(ch for ch in str(v) if ch.isdigit()) for v in values} - {""}
        found: dict[str, list[int]] = {}
        for name, entities in self.crm.items():
            if entity in ("LEAD", "CONTACT", "COMPANY") and name != entity:
                continue
            ids = [
                int(e["ID"])
                for e in entities.values()
                if kind == "PHONE"
                and any("".join(ch for ch in ph["VALUE"] if ch.isdigit()) in wanted for ph in e["PHONE"])
            ]
            if ids:
                found[name] = sorted(ids)[:20]
        return web.json_response({"result": found or []})  # nothing found: an empty list, not {}

    def _crm_get(self, kind: str, params: dict[str, Any]) -> web.Response:
        p = {k.upper(): v for k, v in params.items()}
        raw = str(p.get("ID", ""))
        if not raw.isdigit() or int(raw) <= 0:
            return self._error(400, "", "ID is not defined or invalid.")
        entity = self.crm[kind].get(raw)
        if entity is None:
            return self._error(400, "", "Not found")
        return web.json_response({"result": entity})

    async def _dispatch(self, method: str, p: dict[str, Any]) -> web.Response:
        self.log.append((method, p))
        if self.latency:
            task = asyncio.current_task()
            assert task is not None
            self._hanging.add(task)  # a hung request must not hold the fake's shutdown
            try:
                await asyncio.sleep(self.latency)
            finally:
                self._hanging.discard(task)
        m = method.lower()
        if m == "crm.duplicate.findbycomm":
            return self._find_by_comm(p)
        if m in CRM_GET:
            return self._crm_get(CRM_GET[m], p)
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
            ext = p.get("EXTERNAL_CALL_ID")
            if ext and ext in self.by_external:  # like the portal: the same external call, same CALL_ID
                return web.json_response({"result": {"CALL_ID": self.by_external[ext]}})
            call_id = f"externalCall.{next(self._ids)}"
            self.calls[call_id] = ExternalCall(call_id, dict(p))
            if ext:
                self.by_external[ext] = call_id
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
            if call.finish is not None:
                return self._error(400, "ERROR_CALL_FINISHED", "Call is already finished")
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
