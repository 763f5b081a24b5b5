"""The one Bitrix24 REST client: an incoming webhook or a local application (OAuth, refreshed
tokens, single-flight), under the portal's leaky-bucket limit; answers classified into RetryLater /
PermanentFailure (bridge.errors)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp
import structlog

from bridge.errors import DeliveryError, PermanentFailure, RetryLater
from bridge.http.client import Http, classify, is_temporary, retry_after_header, transport_error
from bridge.http.ratelimit import TokenBucket
from bridge.integrations.bitrix24.batch import MAX_COMMANDS, BatchResult, command
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.bitrix24.state import OAuthToken, load_token, save_token
from bridge.outbox.state import StateStore

log = structlog.get_logger("bridge.bitrix24")


class BitrixError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"Bitrix24 {status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


class AppNotInstalled(RetryLater):
    """Application mode before ONAPPINSTALL: no token yet, and none pasted into the config."""

    def __init__(self, settings: Bitrix24Settings) -> None:
        url = settings.handler_url or f"https://ВАШ-ХОСТ{settings.events_path}"
        super().__init__(
            "Bitrix24: локальное приложение ещё не установлено на портале — установите его "
            f"(«Путь для первоначальной установки»: {url}); токены придут с событием ONAPPINSTALL",
            retry_after=60.0,
        )


class BitrixRefused(PermanentFailure):
    """Bitrix24 refused the request for good; ``error`` is its code (the sink reads a few)."""

    def __init__(self, e: BitrixError, advice: str = "") -> None:
        super().__init__(f"{e}{advice}")
        self.status, self.error, self.description = e.status, e.error, e.description


class BitrixClient:
    """Bitrix24 REST over an incoming webhook or a local application (OAuth, refreshed tokens),
    under the portal's leaky-bucket limit; answers classified into RetryLater / PermanentFailure."""

    def __init__(self, settings: Bitrix24Settings, http: Http, state: StateStore) -> None:
        self.s = settings
        self._http = http
        self._state = state
        self._bucket = TokenBucket(settings.rate, settings.burst)
        # Refresh tokens are one-time: two refreshes at once would leave one of them holding a
        # spent token. Only one refresh runs; the others wait for it and use its result.
        self._refresh_lock = asyncio.Lock()

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Call a REST method; return its ``result``."""
        return (await self._request(method, params))["result"]

    async def batch(
        self, cmds: Mapping[str, tuple[str, Mapping[str, Any]]], halt: bool = True
    ) -> BatchResult:
        """Up to 50 commands in one request (``batch.Ref`` passes an earlier result on); with
        ``halt`` the portal stops at the first failing command."""
        if not 0 < len(cmds) <= MAX_COMMANDS:
            raise ValueError(f"a batch takes 1..{MAX_COMMANDS} commands, not {len(cmds)}")
        cmd = {key: command(method, params) for key, (method, params) in cmds.items()}
        return BatchResult.parse(await self.call("batch", {"halt": 1 if halt else 0, "cmd": cmd}))

    def raise_for(self, error: str, description: str) -> NoReturn:
        """Raise a batch command's error classified as a whole request's would be."""
        e = BitrixError(400, error, description)
        raise self._classify(400, e) or BitrixRefused(e)

    def has_credentials(self) -> bool:
        """A webhook, or an application with a token (from ONAPPINSTALL or the config)."""
        return bool(self.s.webhook_url or self.s.app.refresh_token or load_token(self._state))

    async def token_works(self, access_token: str) -> bool:
        """Does the portal accept this access token for our application (app.info)? How an
        ONAPPINSTALL is proved to come from the portal (b24restdocs, safe-event-handlers)."""
        await self._bucket.acquire()
        url = self.s.app.portal_url.rstrip("/") + "/rest/app.info.json"
        try:
            async with self._http.session.post(url, json={"auth": access_token}) as resp:
                body = await resp.json(content_type=None)
                return resp.status == 200 and isinstance(body, dict) and isinstance(body.get("result"), dict)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise transport_error(e) from None

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
                    retry_after = retry_after_header(resp.headers.get("Retry-After"))
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError:
                        body = {"error": "BAD_RESPONSE", "error_description": (await resp.text())[:200]}
            except (aiohttp.ClientError, TimeoutError) as e:
                raise transport_error(e) from None
            if not isinstance(body, dict):
                body = {"error": "BAD_RESPONSE", "error_description": str(body)[:200]}
            if "result" in body and status < 400:
                return body
            err = BitrixError(status, str(body.get("error", "")), str(body.get("error_description", "")))
            if err.error == "expired_token" and self.s.app.portal_url:
                await self._refresh(load_token(self._state))
                continue
            classify(
                status,
                err,
                api="Bitrix24",
                retry_after=retry_after,
                by_body=self._classify,
                describe=str(err),
            )
            raise RetryLater(f"{err} (an answer without a result)")  # a 2xx that says nothing
        raise RetryLater("Bitrix24 kept rejecting a fresh OAuth token")

    def _classify(self, status: int, e: BitrixError) -> DeliveryError | None:
        """Bitrix24's own error codes; the shared classifier decides the rest by the status."""
        if e.error == "QUERY_LIMIT_EXCEEDED":
            # The portal's leaky bucket is over: nobody sends until it has drained a little (every
            # call being delivered in parallel waits on the same bucket), then exactly this long.
            pause = max(1.0, 2.0 / self.s.rate)
            self._bucket.close_for(pause)
            return RetryLater(str(e), retry_after=pause)
        if e.error == "WRONG_AUTH_TYPE":
            return BitrixRefused(
                e,
                " — this portal allows telephony only to applications: "
                "configure sinks.bitrix24.app instead of webhook_url",
            )
        if status >= 300 and not is_temporary(status):
            return BitrixRefused(e)
        return None  # 5xx, 429...: the status decides (backoff, or Retry-After when given)

    async def _endpoint(self, method: str) -> tuple[str, dict[str, str]]:
        if self.s.webhook_url:
            return self.s.webhook_url.rstrip("/") + f"/{method}.json", {}
        token = load_token(self._state)
        if token is None and not self.s.app.refresh_token:
            raise AppNotInstalled(self.s)
        if token is None or token.expires < time.time() + 30:
            token = await self._refresh(token)
        return self.s.app.portal_url.rstrip("/") + f"/rest/{method}.json", {"auth": token.access_token}

    async def _refresh(self, stale: OAuthToken | None) -> OAuthToken:
        """Single-flight: if another caller refreshed while we waited, use its token."""
        async with self._refresh_lock:
            current = load_token(self._state)
            if current is not None and current.expires >= time.time() + 30:
                refreshed_meanwhile = stale is None or current.access_token != stale.access_token
                if refreshed_meanwhile:
                    return current
            return await self._refresh_now(current)

    async def _refresh_now(self, current: OAuthToken | None) -> OAuthToken:
        app = self.s.app
        if not app.client_id or not app.client_secret:
            raise RetryLater(
                "Bitrix24: токен истёк, а для его обновления нужны sinks.bitrix24.app.client_id и "
                "client_secret (из формы локального приложения): впишите их и перезапустите службу",
                retry_after=60.0,
            )
        query = {
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "refresh_token": current.refresh_token if current else app.refresh_token,
        }
        try:
            async with self._http.session.get(app.oauth_url, params=query) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise RetryLater(f"Bitrix24 OAuth refresh failed: {type(e).__name__}") from None
        if not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error", "?") if isinstance(body, dict) else "?"
            if error in ("invalid_grant", "invalid_client"):
                raise PermanentFailure(
                    f"Bitrix24 OAuth refused ({error}): reinstall the application or "
                    "put a new refresh_token in sinks.bitrix24.app"
                )
            raise RetryLater(f"Bitrix24 OAuth refresh failed: {error}")
        token = OAuthToken(
            str(body["access_token"]),
            str(body["refresh_token"]),
            time.time() + float(body.get("expires_in", 3600)),
        )
        save_token(self._state, token)
        log.info("bitrix24.token_refreshed")
        return token
