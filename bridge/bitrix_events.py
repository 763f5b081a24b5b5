"""Bitrix24 into the daemon: employee sync (events and periodic user.get).

Bitrix24 posts its events form-encoded (``event``, ``data[...]``, ``auth[application_token]``) and
never retries a failed delivery, so an event is only checked and committed as a job (bridge/jobs.py)
before we answer; the job (a user.get, a click-to-call) runs in the background, retried there.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.directory import Directory, Employee
from bridge.http.novofon import BadRequest
from bridge.jobs import Jobs
from bridge.sinks.base import DeliveryError
from bridge.sinks.bitrix24 import BitrixClient

log = structlog.get_logger("bridge.bitrix24")

USER_EVENTS = ("ONUSERADD", "ONUSERUPDATE")


def parse_event(form: Mapping[str, str], application_token: str) -> tuple[str, dict[str, str]]:
    """Check a Bitrix24 event; return (event name, data[...] flattened: "FIELDS][ID" -> "FIELDS.ID")."""
    if not application_token:
        raise BadRequest(403, "not-configured", "sinks.bitrix24.application_token is not set")
    token = form.get("auth[application_token]", "")
    if not hmac.compare_digest(token.encode(), application_token.encode()):
        raise BadRequest(401, "bad-token", "auth[application_token] does not match")
    event = form.get("event", "").upper()
    if not event or len(event) > 64 or not event.isalnum():
        raise BadRequest(400, "unknown-event", "event is missing or malformed")
    data = {}
    for key, value in form.items():
        if key.startswith("data[") and key.endswith("]"):
            data[key[5:-1].replace("][", ".")] = value
    return event, data


def user_id_of(data: Mapping[str, str]) -> str:
    uid = data.get("FIELDS.ID") or data.get("ID") or data.get("USER_ID") or ""
    if not uid.isdigit() or len(uid) > 12:
        raise BadRequest(400, "bad-field", "the event carries no numeric user ID")
    return uid


@dataclass(frozen=True)
class SyncResult:
    seen: int
    saved: int
    deactivated: int


class DirectorySync:
    """Keeps the directory in step with Bitrix24's users."""

    def __init__(
        self,
        client: BitrixClient,
        directory: Directory,
        jobs: Jobs | None = None,
        telegram_field: str = "",
        interval: float = 3600.0,
    ) -> None:
        self.client = client
        self.directory = directory
        self.telegram_field = telegram_field
        self.interval = interval
        if jobs is not None:
            jobs.handle("bitrix-user", lambda p: self.sync_user(str(p["user_id"])))

    def employee(self, user: Mapping[str, Any]) -> Employee | None:
        ext = str(user.get("UF_PHONE_INNER") or "").strip()
        if not ext:
            return None
        name = " ".join(str(user.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
        tg = str(user.get(self.telegram_field) or "").strip() if self.telegram_field else ""
        active = user.get("ACTIVE") in (True, "Y", "1", 1, "true")
        return Employee(ext, name, str(user.get("ID", "")), tg, active, "bitrix24")

    async def sync_user(self, user_id: str) -> None:
        users = await self.client.call("user.get", {"ID": user_id})
        for user in users if isinstance(users, list) else []:
            e = self.employee(user)
            if e is not None:
                self.directory.upsert(e)
                log.info("directory.user_synced", extension=e.extension, bitrix_user_id=e.bitrix_user_id)

    async def sync_all(self) -> SyncResult:
        users = await self.client.call_all("user.get", {"FILTER": {"ACTIVE": True}})
        saved, keep = 0, set()
        for user in users:
            e = self.employee(user)
            if e is not None and e.active:
                self.directory.upsert(e)
                keep.add(e.extension)
                saved += 1
        gone = self.directory.deactivate_others("bitrix24", keep)
        log.info("directory.synced", users=len(users), employees=saved, deactivated=gone)
        return SyncResult(len(users), saved, gone)

    async def run(self) -> None:
        """Sync every user every ``interval`` seconds (events keep it current in between)."""
        while True:
            try:
                await self.sync_all()
            except DeliveryError as e:
                log.warning("directory.sync_failed", error=str(e))
            await asyncio.sleep(self.interval)
