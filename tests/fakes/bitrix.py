"""Fake Bitrix24 REST, as strict as the portal (b24restdocs): telephony.externalcall.*, batch,
event.bind, externalLine, scope / app.info, user.get; an incoming webhook or an OAuth application.

What it refuses, like the real portal: a method outside the caller's scopes (``insufficient_scope``),
telephony from a webhook when the portal allows it only to applications (``app_only``:
WRONG_AUTH_TYPE), app-only methods (event.bind, externalLine.add, app.info) from a webhook, an
unknown or inactive USER_ID / USER_PHONE_INNER, a PHONE_NUMBER without digits ("anonymous"),
a spent or foreign refresh token (refresh tokens are one-time), and requests over the leaky
bucket (503 QUERY_LIMIT_EXCEEDED) when ``limit`` is set. Events (ONEXTERNALCALLSTART, ONUSERADD)
reach a handler only after ``event.bind``; ``click_to_call`` and ``add_user`` are the portal's
"clicks", ``install`` posts ONAPPINSTALL as a portal does on installing a local application.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web

from tests.fakes.base import FakeServer, Fault
from tests.fakes.bitrix_batch import run_batch

WEBHOOK_USER, WEBHOOK_CODE = "1", "fakewebhookcode123"
CLIENT_ID, CLIENT_SECRET = "local.fake.app", "fake-client-secret"
MEMBER_ID = "a223c6b3710f85df22e9377d6c4f7553"
REGISTER_REPEAT_WINDOW = 30 * 60.0  # a repeated register answers the same CALL_ID this long
STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423", "OTHER"}
ALL_SCOPES = frozenset({"telephony", "user", "crm"})
# event.bind knows these; ONUSERUPDATE is not in Bitrix24's REST event list (SPECS.md).
KNOWN_EVENTS = frozenset({"ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART", "ONUSERADD", "ONAPPUNINSTALL"})
APP_ONLY_METHODS = frozenset(
    {"event.bind", "event.get", "event.unbind", "app.info", "telephony.externalline.add"}
)


def query_limit() -> Fault:
    return Fault(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})


def portal_user(
    uid: int | str, ext: str = "", name: str = "Имя Фамилия", active: bool = True
) -> dict[str, Any]:
    first, _, last = name.partition(" ")
    return {"ID": str(uid), "NAME": first, "LAST_NAME": last, "UF_PHONE_INNER": ext, "ACTIVE": active}


class Refused(Exception):
    """A method's error answer: HTTP status, error code, description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


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


# The portal's users most tests need: the admin, and the employees behind extensions 101 and 102.
PORTAL_USERS = [
    portal_user(1, "", "Администратор Портала"),
    portal_user(11, "101", "Иван Петров"),
    portal_user(12, "102", "Пётр Сидоров"),
]


@dataclass(frozen=True)
class Auth:
    kind: str  # "webhook" | "app"
    scopes: frozenset[str]


class FakeBitrix(FakeServer):
    def __init__(
        self,
        app_only: bool = False,
        users: list[dict[str, Any]] | None = None,
        webhook_scopes: frozenset[str] = ALL_SCOPES,
        app_scopes: frozenset[str] = ALL_SCOPES,
        latency: float = 0.0,
        limit: tuple[float, float] | None = None,  # (burst X, drain Y per second): the leaky bucket
    ) -> None:
        super().__init__()
        self.app_only = app_only  # the portal refuses telephony from webhooks (WRONG_AUTH_TYPE)
        self.users: list[dict[str, Any]] = list(users or [])  # the portal's users (user.get, USER_ID checks)
        self.webhook_scopes, self.app_scopes = webhook_scopes, app_scopes
        self.latency, self.limit = latency, limit
        self.calls: dict[str, ExternalCall] = {}
        self.by_key: dict[tuple[str, ...], str] = {}  # a register's matching fields -> its CALL_ID
        self.log: list[tuple[str, dict[str, Any]]] = []  # every method called (batch: each command too)
        self.http_requests: list[str] = []  # one entry per REST HTTP request ("batch" counts once)
        self.refused: list[tuple[str, str]] = []  # (method, error) of every refusal
        self.done: list[tuple[str, dict[str, Any]]] = []  # every method the portal carried out
        self.shown_at: dict[str, float] = {}  # CALL_ID -> when its card was first shown (monotonic)
        self._ids = itertools.count(1)
        self.refresh_token = "refresh-0"
        self.access_tokens: dict[str, float] = {}
        self.token_lifetime = 3600.0
        self.refreshes = 0
        self.installed = True  # app.info INSTALLED
        self.application_token = ""
        self.bound: dict[str, set[str]] = {}  # event -> handler URLs (event.bind)
        self.lines: dict[str, dict[str, Any]] = {}  # telephony.externalLine.add
        self._bucket, self._bucket_at = 0.0, time.monotonic()
        self.app.router.add_post(f"/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/{{method}}.json", self.webhook)
        self.app.router.add_post("/rest/{method}.json", self.oauth_call)
        self.app.router.add_get("/oauth/token/", self.oauth_token)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/"

    @property
    def domain(self) -> str:
        return urlparse(self.url).netloc

    @staticmethod
    def _error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def _admit(self, method: str) -> bool:
        """The leaky bucket (counter +1 per HTTP request, -Y per second, over X: refused); then the
        portal's answer time."""
        self.http_requests.append(method)
        admitted = True
        if self.limit is not None:
            burst, drain = self.limit
            now = time.monotonic()
            self._bucket = max(0.0, self._bucket - (now - self._bucket_at) * drain)
            self._bucket_at = now
            if self._bucket + 1 > burst:
                admitted = False
                self.refused.append(("*", "QUERY_LIMIT_EXCEEDED"))
            else:
                self._bucket += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return admitted

    async def webhook(self, request: web.Request) -> web.Response:
        if not await self._admit(request.match_info["method"]):
            return self._error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        return await self._answer(
            request.match_info["method"], await request.json(), Auth("webhook", self.webhook_scopes)
        )

    async def oauth_call(self, request: web.Request) -> web.Response:
        if not await self._admit(request.match_info["method"]):
            return self._error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        params = await request.json()
        token = params.pop("auth", None)
        expires = self.access_tokens.get(token or "")
        if expires is None:
            return self._error(401, "invalid_token", "The access token provided is invalid.")
        if expires < time.time():
            return self._error(401, "expired_token", "The access token provided has expired.")
        return await self._answer(request.match_info["method"], params, Auth("app", self.app_scopes))

    async def _answer(self, method: str, params: dict[str, Any], auth: Auth) -> web.Response:
        try:
            if method.lower() == "batch":
                return web.json_response({"result": self._batch(params, auth)})
            result = self._call(method, params, auth)
        except Refused as e:
            return self._error(e.status, e.error, e.description)
        if isinstance(result, _Paged):  # list methods: total and next beside result
            body: dict[str, Any] = {"result": result.page, "total": result.total}
            if result.next is not None:
                body["next"] = result.next
            return web.json_response(body)
        return web.json_response({"result": result})

    # -- OAuth -----------------------------------------------------------------------------------
    def _new_access_token(self) -> str:
        access = secrets.token_hex(8)
        self.access_tokens[access] = time.time() + self.token_lifetime
        return access

    async def oauth_token(self, request: web.Request) -> web.Response:
        q = request.query
        if (
            q.get("grant_type") != "refresh_token"
            or q.get("client_id") != CLIENT_ID
            or q.get("client_secret") != CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        if q.get("refresh_token") != self.refresh_token:  # one-time: a spent token is refused
            return web.json_response({"error": "invalid_grant"}, status=400)
        self.refreshes += 1
        self.refresh_token = f"refresh-{self.refreshes}"
        return web.json_response(
            {
                "access_token": self._new_access_token(),
                "refresh_token": self.refresh_token,
                "expires_in": int(self.token_lifetime),
                "member_id": MEMBER_ID,
            }
        )

    def expire_tokens(self) -> None:
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    # -- the portal's own actions ----------------------------------------------------------------
    async def install(self, handler_url: str) -> tuple[int, str]:
        """Install (or reinstall) the local application: ONAPPINSTALL posted to ``handler_url``
        (the application's "initial installation path")."""
        return await self._post(handler_url, self.install_form())

    def install_form(self) -> dict[str, str]:
        """A (re)installation: new tokens and application_token, the event bindings of the
        previous installation gone; the ONAPPINSTALL form the portal posts."""
        self.bound.clear()
        self.refresh_token = f"refresh-install-{secrets.token_hex(4)}"
        self.application_token = secrets.token_hex(16)
        return {
            "event": "ONAPPINSTALL",
            "data[VERSION]": "1",
            "data[ACTIVE]": "Y",
            "data[INSTALLED]": "Y",
            "data[LANGUAGE_ID]": "ru",
            "ts": str(int(time.time())),
            **self._auth_form(access_token=self._new_access_token(), refresh_token=self.refresh_token),
        }

    def _auth_form(self, **extra: str) -> dict[str, str]:
        auth = {
            "domain": self.domain,
            "member_id": MEMBER_ID,
            "application_token": self.application_token,
            "expires_in": str(int(self.token_lifetime)),
            "scope": ",".join(sorted(self.app_scopes)),
            "server_endpoint": f"{self.url}/rest/",
            "client_endpoint": f"{self.url}/rest/",
            "status": "L",
            **extra,
        }
        return {f"auth[{k}]": v for k, v in auth.items()}

    async def click_to_call(self, user_id: str, phone: str, line: str = "") -> str | None:
        """A click on a number in a CRM card. Bitrix24 registers the call itself and posts
        ONEXTERNALCALLSTART to the handlers bound with event.bind; with none bound, nothing is
        delivered (None). Returns the CALL_ID it made."""
        if not self.bound.get("ONEXTERNALCALLSTART"):
            return None
        call_id = self._register(
            {"USER_ID": user_id, "PHONE_NUMBER": phone, "TYPE": "1", "LINE_NUMBER": line}
        )
        data = {
            "PHONE_NUMBER": phone,
            "PHONE_NUMBER_INTERNATIONAL": phone,
            "EXTENSION": "",
            "USER_ID": user_id,
            "CALL_LIST_ID": "0",
            "LINE_NUMBER": line,
            "IS_MOBILE": "0",
            "CALL_ID": call_id,
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": "797",
        }
        await self._deliver("ONEXTERNALCALLSTART", {f"data[{k}]": v for k, v in data.items()})
        return call_id

    async def add_user(self, user: dict[str, Any]) -> int:
        """A new employee: ONUSERADD to the bound handlers; how many received it."""
        self.users.append(user)
        return await self._deliver("ONUSERADD", {"data[FIELDS][ID]": str(user["ID"])})

    async def _deliver(self, event: str, data: dict[str, str]) -> int:
        handlers = sorted(self.bound.get(event, ()))
        form = {
            "event": event,
            "ts": str(int(time.time())),
            **data,
            **self._auth_form(access_token=self._new_access_token()),
        }
        for url in handlers:
            await self._post(url, form)  # Bitrix24 never retries a failed delivery
        return len(handlers)

    @staticmethod
    async def _post(url: str, form: dict[str, str]) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.post(url, data=form) as resp:
            return resp.status, await resp.text()

    # -- batch -----------------------------------------------------------------------------------
    def _batch(self, p: dict[str, Any], auth: Auth) -> dict[str, Any]:
        cmd = p.get("cmd")
        if not isinstance(cmd, dict) or not cmd:
            raise Refused(400, "ERROR_ARGUMENT", "cmd is required")
        halt = str(p.get("halt", "0")) in ("1", "true", "True")

        def one(method: str, params: dict[str, Any]) -> tuple[Any, int | None]:
            answer = self._call(method, params, auth)
            return (answer.page, answer.total) if isinstance(answer, _Paged) else (answer, None)

        return run_batch(cmd, halt, one, Refused)

    # -- methods ---------------------------------------------------------------------------------
    def _call(self, method: str, p: dict[str, Any], auth: Auth) -> Any:
        self.log.append((method, p))
        try:
            result = self._method(method.lower(), p, auth)
        except Refused as e:
            self.refused.append((method, e.error))
            raise
        self.done.append((method, p))
        return result

    def _method(self, m: str, p: dict[str, Any], auth: Auth) -> Any:
        scope = m.split(".")[0] if m.split(".")[0] in ALL_SCOPES else None
        if scope is not None and scope not in auth.scopes:
            raise Refused(
                403,
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
            )
        if auth.kind == "webhook" and m in APP_ONLY_METHODS:
            if m == "telephony.externalline.add":
                raise Refused(401, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
            raise Refused(400, "ACCESS_DENIED", "Access denied! Application context required")
        if auth.kind == "webhook" and self.app_only and m.startswith("telephony.externalcall."):
            raise Refused(401, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
        if m == "scope":
            return sorted(auth.scopes)
        if m == "app.info":
            return {"ID": 7, "CODE": CLIENT_ID, "VERSION": 1, "STATUS": "L", "INSTALLED": self.installed}
        if m == "user.get":
            return self._user_get(p)
        if m.startswith("event."):
            return self._event(m, p)
        if m.startswith("telephony.externalline."):
            return self._line(m, p)
        if m == "telephony.externalcall.register":
            return {"CALL_ID": self._register(p), "CRM_CREATED_LEAD": None, "CRM_CREATED_ENTITIES": []}
        return self._on_call(m, p)

    def _user_get(self, p: dict[str, Any]) -> Any:
        users = self.users
        if "ID" in p:
            users = [u for u in users if str(u["ID"]) == str(p["ID"])]
        if (p.get("FILTER") or {}).get("ACTIVE"):
            users = [u for u in users if u.get("ACTIVE") is True]
        start = int(p.get("start", 0))
        page = users[start : start + 50]
        return _Paged(page, len(users), start + 50 if start + 50 < len(users) else None)

    def _active_user(self, p: dict[str, Any]) -> None:
        """USER_ID or USER_PHONE_INNER must name an active user of the portal."""
        uid, inner = str(p.get("USER_ID") or ""), str(p.get("USER_PHONE_INNER") or "")
        if not uid and not inner:
            raise Refused(400, "ERROR_CORE", "USER_ID or USER_PHONE_INNER should be set")
        for u in self.users:
            if u.get("ACTIVE") is True and (
                (uid and str(u["ID"]) == uid) or (not uid and inner and str(u.get("UF_PHONE_INNER")) == inner)
            ):
                return
        raise Refused(400, "ERROR_CORE", "User is not found or is not active")

    def _register(self, p: dict[str, Any]) -> str:
        self._active_user(p)
        if str(p.get("TYPE", "")) not in {"1", "2", "3", "4", "5"}:
            raise Refused(400, "ERROR_CORE", "Unknown TYPE")
        if not re.search(r"\d", str(p.get("PHONE_NUMBER", ""))):  # "anonymous", "", "unknown"
            raise Refused(400, "ERROR_CORE", "Unsupported phone number format")
        # Like the portal: the same request again within 30 minutes, while that call is not
        # finished, answers the CALL_ID it made; anything else is a new call.
        key = register_key(p)
        same = self.calls.get(self.by_key.get(key, ""))
        if same and same.finish is None and time.time() - same.registered_at < REGISTER_REPEAT_WINDOW:
            return same.call_id
        call_id = f"externalCall.{next(self._ids)}"
        self.calls[call_id] = ExternalCall(call_id, dict(p))
        self.by_key[key] = call_id
        if str(p.get("SHOW", "1")) == "1" and p.get("USER_ID"):  # the card, shown to the registering user
            self.calls[call_id].shown.add(str(p["USER_ID"]))
        return call_id

    def _on_call(self, m: str, p: dict[str, Any]) -> Any:
        call = self.calls.get(str(p.get("CALL_ID", "")))
        if m in ("telephony.externalcall.show", "telephony.externalcall.hide"):
            if call is None:
                return False  # documented: result false when the call is not found
            users = p.get("USER_ID") if isinstance(p.get("USER_ID"), list) else [p.get("USER_ID")]
            (call.shown if m.endswith("show") else call.hidden).update(str(u) for u in users)
            if m.endswith("show"):
                self.shown_at.setdefault(call.call_id, time.monotonic())
            return True
        if m == "telephony.externalcall.finish":
            if call is None:
                raise Refused(
                    400, "ERROR_CORE", "Call is not found (call should be registered prior to finishing)"
                )
            if call.finish is not None:
                raise Refused(
                    400, "ERROR_CORE", "Call is not found (call should be registered prior to finishing)"
                )
            self._active_user(p)
            if str(p.get("STATUS_CODE", "200")) not in STATUS_CODES:
                raise Refused(400, "ERROR_CORE", "Wrong STATUS_CODE")
            call.finish = dict(p)
            return {"CALL_ID": call.call_id, "CALL_DURATION": int(p.get("DURATION") or 0)}
        if m == "telephony.externalcall.attachrecord":
            if call is None or call.finish is None:
                raise Refused(
                    400,
                    "ERROR_CORE",
                    "Call is not found in the statistic table. It looks like it is not finished yet.",
                )
            if not p.get("FILENAME") and not p.get("RECORD_URL"):
                raise Refused(
                    400,
                    "ERROR_CORE",
                    "Required parameters are not set. "
                    "Request should contain either URL or FILENAME parameter",
                )
            if p.get("FILENAME") and not str(p["FILENAME"]).lower().endswith((".wav", ".mp3")):
                raise Refused(400, "ERROR_CORE", "Wrong file extension. Only wav and mp3 are allowed")
            call.records.append(
                (p.get("FILENAME") or p.get("RECORD_URL", ""), len(p.get("FILE_CONTENT", "")))
            )
            return {"FILE_ID": len(call.records)}
        raise Refused(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _event(self, m: str, p: dict[str, Any]) -> Any:
        if m == "event.get":
            return [
                {"event": e, "handler": h, "auth_type": "0", "offline": 0}
                for e, hs in self.bound.items()
                for h in sorted(hs)
            ]
        event, handler = str(p.get("event", "")).upper(), str(p.get("handler", ""))
        if m == "event.bind":
            if event not in KNOWN_EVENTS:
                raise Refused(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
            if not handler.startswith(("http://", "https://")):
                raise Refused(400, "ERROR_ARGUMENT", "handler is required")
            if handler in self.bound.get(event, set()):
                raise Refused(400, "", "Handler already binded")
            self.bound.setdefault(event, set()).add(handler)
            return True
        if m == "event.unbind":
            self.bound.get(event, set()).discard(handler)
            return {"count": 1}
        raise Refused(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _line(self, m: str, p: dict[str, Any]) -> Any:
        if m == "telephony.externalline.get":
            return list(self.lines.values())
        if m == "telephony.externalline.add":
            number = str(p.get("NUMBER", ""))
            if not number:
                raise Refused(400, "ERROR_CORE", "NUMBER should not be empty")
            if number in self.lines:
                raise Refused(400, "ERROR_CORE", "Line already exists")
            self.lines[number] = {
                "NUMBER": number,
                "NAME": str(p.get("NAME") or number),
                "CRM_AUTO_CREATE": "Y",
            }
            return {"ID": len(self.lines)}
        raise Refused(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


@dataclass
class _Paged:
    page: list[Any]
    total: int
    next: int | None
