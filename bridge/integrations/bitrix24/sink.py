"""Bitrix24 telephony: each call becomes an external call in the CRM, with its card and recording.

Lifecycle per call (pbx_call_id -> Bitrix24 CALL_ID kept in the outbox ``sink_state``, so retries
and restarts never register a call twice; EXTERNAL_CALL_ID = pbx_call_id as well). Each step
happens once: the state says what was done, and the outbox holds a call's later records while an
earlier one is dead, so a replay after ``outbox retry`` goes register -> finish -> attachRecord.

  inbound   first INTERNAL: register (TYPE 2) and show the card, in one ``batch`` request (the
            card pops up one round trip after the first ring); each later INTERNAL: show it to
            that employee; ANSWER: show it to who answered (a pickup's phone never rang) and hide
            it from the others; END: finish;
  outbound  OUT_START: register (TYPE 1, LINE_NUMBER = our outbound number, card shown to the
            caller); OUT_END: finish (cancelled: 603-S; a call-back the employee declined: 603);
  RECORD    attachRecord (FILENAME + FILE_CONTENT) after finish.

What Bitrix24 refuses is never sent: a hidden caller ("anonymous", empty — "Unsupported phone
number format") is registered as HIDDEN_CALLER without creating a CRM lead; an extension with no
Bitrix24 user is registered on ``default_user_id`` (a USER_PHONE_INNER no user has is refused);
an answered call that rounds to 0 s is reported as 1 s (DURATION 0 shows an answered call as failed).

Two ways in: an incoming webhook URL, or a local application (OAuth with token refresh), because
some portals now refuse register/finish from a webhook (WRONG_AUTH_TYPE).

A request whose answer was lost (the outbox gave up waiting; the portal may still have done it):
- register: its exact parameters are saved before it is sent; a retry sends the very same request,
  and Bitrix24 answers a repeated register (same PHONE_NUMBER, TYPE, USER_ID/USER_PHONE_INNER,
  LINE_NUMBER, EXTERNAL_CALL_ID) with the CALL_ID it made, for 30 minutes while the call is not
  finished. After REGISTER_SAME_WINDOW the retry is a new register (logged: the card may be doubled);
- finish: if the retry hears "Call is not found", the lost finish was done (a finished call is no
  longer found); attachRecord cannot be checked, so a lost one may be attached twice.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from bridge.calls.records import CallRecord, Event
from bridge.directory import Directory
from bridge.errors import PermanentFailure, RetryLater
from bridge.integrations.bitrix24.batch import Ref
from bridge.integrations.bitrix24.client import BitrixClient, BitrixRefused
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.bitrix24.state import BitrixCall, load_call, save_call
from bridge.outbox.state import StateStore
from bridge.outbox.store import Delivery

log = structlog.get_logger("bridge.bitrix24")

RECORDING_WAIT_ATTEMPTS = 6
HIDDEN_CALLER = "0000000000"  # PHONE_NUMBER for a caller who hid their number: digits Bitrix24 takes
REGISTER_SAME_WINDOW = 25 * 60.0  # Bitrix24 repeats a CALL_ID for 30 min: keep a margin for clocks

# Novofon disposition -> Bitrix24 STATUS_CODE.
INBOUND_STATUS = {"answered": "200"}  # anything else inbound is a missed call
OUTBOUND_STATUS = {
    "answered": "200",
    "busy": "486",
    "no answer": "480",
    "cancel": "603-S",  # "call cancelled" (603 is "declined")
    "failed": "503",
    "unallocated number": "404",
}
# A call-back whose employee declined it (the Originator's OUT_END, meta leg_end): "declined",
# not "cancelled" — the records' disposition ("cancel") cannot tell the two apart.
EMPLOYEE_DECLINED = "603"


class Bitrix24Sink:
    name = "bitrix24"

    def __init__(
        self,
        settings: Bitrix24Settings,
        client: BitrixClient,
        state: StateStore,
        directory: Directory,
        timezone: str,
        default_line: str = "",  # our number for outbound calls (pbx.default_did): LINE_NUMBER
    ) -> None:
        if not settings.webhook_url and not settings.app.portal_url:
            raise ValueError("Bitrix24 needs webhook_url or app.portal_url")
        self.s = settings
        self._state = state
        self._directory = directory
        self.client = client
        self._call = client.call
        self._tz = ZoneInfo(timezone)
        self._default_line = default_line

    def _save(self, pbx_call_id: str, st: BitrixCall) -> None:
        save_call(self._state, pbx_call_id, st)

    def _user(self, ext: str) -> dict[str, str]:
        user = self._directory.bitrix_user(ext) or self.s.default_user_id
        if user:
            return {"USER_ID": user}
        who = (
            f"у внутреннего номера {ext} нет пользователя Bitrix24" if ext else "в звонке не было сотрудника"
        )
        raise PermanentFailure(
            f"{who}, а sinks.bitrix24.default_user_id не задан: укажите пользователя по умолчанию "
            "или внутренний номер в профиле сотрудника Bitrix24 (employees sync)"
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def send(self, delivery: Delivery) -> None:
        r = delivery.record
        f, ev = r.fields, r.event
        if ev is Event.SMS:
            return  # not a call: Bitrix24 telephony has nothing to do with it
        st = load_call(self._state, r.pbx_call_id)
        if ev is Event.START:
            return  # nobody to show the card to yet: registered at the first extension rung
        if ev is Event.INTERNAL:
            await self._register(r, st, f["internal"], show=self._card_user(st, f["internal"]))
            await self._show(r, st, f["internal"])
        elif ev is Event.OUT_START:
            await self._register(r, st, f["internal"])
        elif ev is Event.ANSWER and r.meta.get("direction") == "in":
            if f["internal"]:  # who answered sees the card, even if their phone never rang (a pickup)
                await self._register(r, st, f["internal"], show=self._card_user(st, f["internal"]))
                await self._show(r, st, f["internal"])
            await self._hide(r, st, keep=f["internal"])
        elif ev in (Event.END, Event.OUT_END):
            await self._register(r, st, f["internal"])
            await self._finish(r, st)
            answered = f["disposition"] == "answered"  # the answerer keeps the card (the CRM form)
            await self._hide(r, st, keep=f["internal"] if answered else None)
        elif ev is Event.RECORD and self.s.attach_recordings:
            await self._attach(r, st, delivery.attempts)

    def _card_user(self, st: BitrixCall, ext: str) -> str | None:
        """The Bitrix24 user to pop the card up for, if any."""
        user = self._directory.bitrix_user(ext)
        return user if self.s.show_card and user and user not in st.shown else None

    async def _register(self, r: CallRecord, st: BitrixCall, ext: str, show: str | None = None) -> None:
        """Register the call; with ``show``, show that user the card in the same batch request.

        The request is saved before it is sent: if its answer is lost (a hung connection that the
        portal completed later), the retry sends the very same request, and Bitrix24 answers a
        repeat within 30 minutes with the same CALL_ID instead of a second card."""
        if st.call_id:
            return
        now = time.time()
        if st.register is not None and now - st.register_at < REGISTER_SAME_WINDOW:
            params = st.register
            log.info(
                "bitrix24.register_repeated", pbx_call_id=r.pbx_call_id, age_s=round(now - st.register_at)
            )
        else:
            if st.register is not None:
                log.warning(
                    "bitrix24.register_unconfirmed",
                    pbx_call_id=r.pbx_call_id,
                    age_s=round(now - st.register_at),
                    note="an earlier register may have made a call card; this one may be a second",
                )
            st.register, st.register_at = self._register_params(r, ext), now
            self._save(r.pbx_call_id, st)  # before sending: a retry must send the same request
            params = st.register
        try:
            if show is not None:
                await self._register_with_card(r, st, params, show)
            else:
                result = await self._call("telephony.externalcall.register", params)
                st.call_id = result["CALL_ID"]
        except BitrixRefused:
            st.register = None  # refused: nothing was made, the next try is a fresh request
            self._save(r.pbx_call_id, st)
            raise
        st.register = None
        self._save(r.pbx_call_id, st)

    def _register_params(self, r: CallRecord, ext: str) -> dict[str, Any]:
        f = r.fields
        inbound = r.meta.get("direction") == "in"
        phone = f["caller_id"] if inbound else f["destination"]
        hidden = not phone.isdigit()  # "anonymous", "unknown", empty, a name
        params = {
            **self._user(ext),
            "PHONE_NUMBER": HIDDEN_CALLER if hidden else phone,
            "TYPE": "2" if inbound else "1",
            "CALL_START_DATE": self._iso(f["call_start"]),
            "CRM_CREATE": "1" if self.s.crm_create and not hidden else "0",
            "SHOW": "0" if inbound or not self.s.show_card else "1",
            "EXTERNAL_CALL_ID": r.pbx_call_id,
        }
        line = f.get("called_did", "") if inbound else f.get("called_did") or self._default_line
        if line:
            params["LINE_NUMBER"] = line
        return params

    async def _register_with_card(
        self, r: CallRecord, st: BitrixCall, params: dict[str, Any], user: str
    ) -> None:
        """register + show in one batch request: show takes register's CALL_ID on the portal."""
        card = {"CALL_ID": Ref("register", "CALL_ID"), "USER_ID": user}
        done = await self.client.batch(
            {
                "register": ("telephony.externalcall.register", params),
                "show": ("telephony.externalcall.show", card),
            }
        )
        registered = done.results.get("register")
        if isinstance(registered, dict) and registered.get("CALL_ID"):
            st.call_id = str(registered["CALL_ID"])
            if "show" in done.results:
                st.shown.append(user)
            self._save(r.pbx_call_id, st)
        for name in ("register", "show"):  # halted at the first error: at most one of them
            if name in done.errors:
                self.client.raise_for(done.errors[name].error, f"{name}: {done.errors[name].description}")
        if not st.call_id:
            raise RetryLater(f"Bitrix24 batch answered without a CALL_ID: {str(done.results)[:200]}")

    async def _show(self, r: CallRecord, st: BitrixCall, ext: str) -> None:
        user = self._card_user(st, ext)
        if not user:
            return
        await self._call("telephony.externalcall.show", {"CALL_ID": st.call_id, "USER_ID": user})
        st.shown.append(user)
        self._save(r.pbx_call_id, st)

    async def _hide(self, r: CallRecord, st: BitrixCall, keep: str | None) -> None:
        keep_user = self._directory.bitrix_user(keep or "")
        others = [u for u in st.shown if u != keep_user]
        if not others:
            return
        await self._call("telephony.externalcall.hide", {"CALL_ID": st.call_id, "USER_ID": others})
        st.shown = [u for u in st.shown if u == keep_user]
        self._save(r.pbx_call_id, st)

    async def _finish(self, r: CallRecord, st: BitrixCall) -> None:
        if st.finished:
            return
        f = r.fields
        table = INBOUND_STATUS if r.event is Event.END else OUTBOUND_STATUS
        status = table.get(f["disposition"], "304" if r.event is Event.END else "OTHER")
        if r.meta.get("callback_leg") == "employee" and r.meta.get("leg_end") == "rejected":
            status = EMPLOYEE_DECLINED
        duration = f["duration"]
        if status == "200" and duration in ("", "0"):
            duration = "1"  # an answered call reported with 0 s is shown as failed
        params: dict[str, Any] = {
            "CALL_ID": st.call_id,
            **self._user(f["internal"]),
            "DURATION": duration,
            "STATUS_CODE": status,
        }
        if status == "OTHER":
            params["FAILED_REASON"] = f["disposition"]
        retried, st.finish_sent = st.finish_sent, True
        self._save(r.pbx_call_id, st)
        try:
            await self._call("telephony.externalcall.finish", params)
        except BitrixRefused as e:
            if not (retried and "not found" in e.description.lower()):
                st.finish_sent = False  # refused: nothing was finished
                self._save(r.pbx_call_id, st)
                raise
            log.info("bitrix24.finish_was_done", pbx_call_id=r.pbx_call_id, answer=str(e))
        st.finished = True
        self._save(r.pbx_call_id, st)

    async def _attach(self, r: CallRecord, st: BitrixCall, attempts: int) -> None:
        if st.attached or not st.call_id:
            return
        link = r.meta.get("recording_url", "")
        if not r.meta.get("recording_file"):
            if link:  # a recording Novofon's cloud keeps: Bitrix24 fetches it by its URL
                await self._attach_url(r, st, link)
            return  # the daemon did not say where the file is (recordings_dir unset): nothing to attach
        path = Path(r.meta["recording_file"])
        if not path.is_file():
            if attempts < RECORDING_WAIT_ATTEMPTS:
                raise RetryLater(f"recording {path} is not there yet", retry_after=2.0 * (attempts + 1))
            log.warning("bitrix24.recording_missing", file=str(path), pbx_call_id=r.pbx_call_id)
            return
        size = path.stat().st_size
        if size > self.s.max_upload_mb * 1024 * 1024:
            if link:
                await self._attach_url(r, st, link)
                return
            # Read whole and base64-encoded in memory, a huge file would take the daemon's memory.
            raise PermanentFailure(
                f"запись {path.name} ({size / 1048576:.0f} МБ) больше sinks.bitrix24.max_upload_mb "
                f"({self.s.max_upload_mb:g} МБ): не загружена в Bitrix24"
            )
        await self._call(
            "telephony.externalCall.attachRecord",
            {
                "CALL_ID": st.call_id,
                "FILENAME": path.name,
                "FILE_CONTENT": await asyncio.to_thread(_base64_file, path),
            },
        )
        st.attached = True
        self._save(r.pbx_call_id, st)

    async def _attach_url(self, r: CallRecord, st: BitrixCall, url: str) -> None:
        await self._call("telephony.externalCall.attachRecord", {"CALL_ID": st.call_id, "RECORD_URL": url})
        st.attached = True
        self._save(r.pbx_call_id, st)

    def _iso(self, call_start: str) -> str:
        return datetime.strptime(call_start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=self._tz).isoformat()

    async def close(self) -> None:
        pass


def _base64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
