"""Keeps the employee directory in step with Bitrix24's users: one user at a time when an event
says so, and every user periodically (ONUSERUPDATE is not in every portal's event list).

A user's internal number (``UF_PHONE_INNER``) is anyone's to type: it is stored only if it is an
extension by ``asterisk.internal_extensions`` (ASCII digits, the whole value); anything else, a
CR/LF smuggling an AMI action or a SIP URI, is skipped with a log line. A user claiming an
extension config.yaml already gives someone is refused too (config.yaml wins; see directory.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.calls.numbers import InvalidNumber, check_extension
from bridge.directory import Directory, Employee
from bridge.errors import DeliveryError
from bridge.integrations.bitrix24.client import BitrixClient

log = structlog.get_logger("bridge.bitrix24")


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
        telegram_field: str = "",
        interval: float = 3600.0,
        *,
        extensions: str,
    ) -> None:
        self.client = client
        self.directory = directory
        self.telegram_field = telegram_field
        self.interval = interval
        self.extensions = re.compile(extensions)

    def employee(self, user: Mapping[str, Any]) -> Employee | None:
        """The directory entry for a Bitrix24 user; None without a (valid) internal number."""
        ext = str(user.get("UF_PHONE_INNER") or "").strip(" ")
        if not ext:
            return None
        try:
            check_extension(ext, self.extensions)
        except InvalidNumber:
            log.warning(
                "directory.bad_extension",
                bitrix_user_id=str(user.get("ID", ""))[:20],
                uf_phone_inner=ext[:60],
                pattern=self.extensions.pattern,
            )
            return None
        name = " ".join(str(user.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
        tg = str(user.get(self.telegram_field) or "").strip() if self.telegram_field else ""
        active = user.get("ACTIVE") in (True, "Y", "1", 1, "true")
        return Employee(ext, name, str(user.get("ID", "")), tg, active, "bitrix24")

    async def sync_user(self, user_id: str) -> None:
        users = await self.client.call("user.get", {"ID": user_id})
        for user in users if isinstance(users, list) else []:
            e = self.employee(user)
            if e is not None and self._save(e):
                log.info("directory.user_synced", extension=e.extension, bitrix_user_id=e.bitrix_user_id)

    async def sync_all(self) -> SyncResult:
        users = await self.client.call_all("user.get", {"FILTER": {"ACTIVE": True}})
        saved, keep = 0, set()
        for user in users:
            e = self.employee(user)
            if e is not None and e.active:
                keep.add(e.extension)
                saved += self._save(e)
        gone = self.directory.deactivate_others("bitrix24", keep)
        log.info("directory.synced", users=len(users), employees=saved, deactivated=gone)
        return SyncResult(len(users), saved, gone)

    def _save(self, e: Employee) -> bool:
        if self.directory.upsert(e):
            return True
        owner = self.directory.get(e.extension)
        if owner is not None and owner.bitrix_user_id != e.bitrix_user_id:
            log.warning(
                "directory.conflict",
                extension=e.extension,
                bitrix_user_id=e.bitrix_user_id,
                owner=owner.source,
                fix="config.yaml wins: correct UF_PHONE_INNER in Bitrix24, or give the config.yaml "
                "entry this bitrix_user_id",
            )
        return False

    async def run(self) -> None:
        """Sync every user every ``interval`` seconds (events keep it current in between)."""
        while True:
            try:
                await self.sync_all()
            except DeliveryError as e:
                log.warning("directory.sync_failed", error=str(e))
            await asyncio.sleep(self.interval)
