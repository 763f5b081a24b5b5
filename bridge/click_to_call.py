"""Click-to-call from a Bitrix24 CRM card (ONEXTERNALCALLSTART): ring the employee, then the client,
and report that call's lifecycle on the CALL_ID Bitrix24 gave — never registering a second call.

The call is originated with a ChannelId we choose, so its pbx_call_id (``out_<ChannelId>``) is
known before it starts; the Bitrix24 sink's state for it is seeded with Bitrix24's CALL_ID. If the
employee never answers, the tracker sees no outbound call at all: we close it ourselves with an
OUT_END ("no answer"), so the card in Bitrix24 is finished, not left hanging.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from bridge.calls.numbers import normalise
from bridge.calls.records import CallRecord, Event, make
from bridge.config import Config
from bridge.directory import Directory
from bridge.http.novofon import BadRequest
from bridge.jobs import Jobs
from bridge.outbox.store import OutboxStore
from bridge.sinks.base import PermanentFailure, RetryLater
from bridge.sources.ami import AmiSupervisor
from bridge.sources.ami_protocol import AmiError, AmiMessage

log = structlog.get_logger("bridge.click_to_call")

REPEAT_WINDOW = 30.0  # Bitrix24 may send the same click twice; a second one within 30 s is ignored
STALE_AFTER = 60.0  # a click that could not be placed within a minute is dropped, not rung late
_CALL_ID = re.compile(r"[\w.:-]{1,100}")


class ClickToCall:
    def __init__(
        self,
        cfg: Config,
        directory: Directory,
        store: OutboxStore,
        ami: AmiSupervisor,
        jobs: Jobs,
        publish: Callable[[list[CallRecord]], None],
    ) -> None:
        self.cfg = cfg
        self.directory = directory
        self.store = store
        self.ami = ami
        self.publish = publish
        self._tz = ZoneInfo(cfg.pbx.timezone)
        self._pending: dict[str, dict[str, str]] = {}  # ChannelId -> call, until the trunk is dialled
        jobs.handle("click2call", self.originate, max_age=STALE_AFTER)
        self.jobs = jobs

    def accept(self, data: dict[str, str]) -> str:
        """Check an ONEXTERNALCALLSTART and commit it as a job; "queued" or "repeat"."""
        call_id, user_id = data.get("CALL_ID", ""), data.get("USER_ID", "")
        phone = normalise(data.get("PHONE_NUMBER", ""), self.cfg.pbx.country_code)
        if not _CALL_ID.fullmatch(call_id):
            raise BadRequest(400, "bad-field", "data[CALL_ID] is missing or malformed")
        if not user_id.isdigit() or len(user_id) > 12:
            raise BadRequest(400, "bad-field", "data[USER_ID] must be a number")
        if not phone.isdigit() or not 3 <= len(phone) <= 16:
            raise BadRequest(400, "bad-field", "data[PHONE_NUMBER] is not a phone number")
        if self.store.seen_recently(f"b24-click:{call_id}", REPEAT_WINDOW):
            return "repeat"
        self.jobs.add("click2call", {"call_id": call_id, "user_id": user_id, "phone": phone})
        return "queued"

    async def originate(self, job: dict[str, Any]) -> None:
        """The click-to-call job: who clicked -> extension; seed the Bitrix24 state; ring."""
        employee = self.directory.by_bitrix_user(str(job["user_id"]))
        if employee is None or not employee.active:
            raise PermanentFailure(f"no extension for Bitrix24 user {job['user_id']} in the directory")
        chan = self.new_channel_id("b24")
        state = {"call_id": job["call_id"], "shown": [], "finished": False, "attached": False}
        self.store.set_state("bitrix24", f"call:out_{chan}", json.dumps(state))
        await self.ring(employee.extension, job["phone"], chan)
        log.info(
            "click_to_call.originated",
            extension=employee.extension,
            pbx_call_id=f"out_{chan}",
            bitrix_call_id=job["call_id"],
        )

    @staticmethod
    def new_channel_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    async def ring(self, extension: str, phone: str, chan: str) -> None:
        """Ring ``extension``; once answered, dial ``phone`` through the trunk. The call's
        pbx_call_id is ``out_<chan>``; an employee who never answers still gets an OUT_END."""
        conn = self.ami.connection
        if conn is None:
            raise RetryLater("AMI is not connected")
        self._pending[chan] = {
            "internal": extension,
            "phone": phone,
            "call_start": datetime.fromtimestamp(time.time(), self._tz).strftime("%Y-%m-%d %H:%M:%S"),
        }
        cli = self.cfg.cli
        try:
            result = await conn.action(
                "Originate",
                {
                    "Channel": f"PJSIP/{extension}",
                    "Context": self.cfg.asterisk.outgoing_context,
                    "Exten": phone,
                    "Priority": "1",
                    "CallerID": f"{cli.callback_callerid or 'Callback'} <{phone}>",
                    "Timeout": "30000",
                    "Async": "true",
                    "ChannelId": chan,
                    "OtherChannelId": f"{chan}-2",
                },
            )
        except AmiError as e:
            self._pending.pop(chan, None)
            raise RetryLater(f"AMI: {e}") from e
        if not result.ok:
            self._pending.pop(chan, None)
            raise PermanentFailure(f"Asterisk refused the call: {result.message}")

    def on_records(self, records: list[CallRecord]) -> None:
        for r in records:
            if r.event is Event.OUT_START:
                self._pending.pop(r.pbx_call_id.removeprefix("out_"), None)

    def on_ami(self, msg: AmiMessage) -> None:
        """The employee's phone hung up before the client was dialled: close the call ourselves."""
        if msg.get("Event") != "Hangup":
            return
        call = self._pending.pop(msg.get("Uniqueid", ""), None)
        if call is None:
            return
        cause = msg.get("Cause", "0")
        record = make(
            Event.OUT_END,
            {
                "call_start": call["call_start"],
                "pbx_call_id": f"out_{msg['Uniqueid']}",
                "caller_id": call["internal"],
                "destination": call["phone"],
                "internal": call["internal"],
                "duration": "0",
                "disposition": "no answer"
                if cause in ("0", "16", "19", "21")
                else "busy"
                if cause == "17"
                else "failed",
                "status_code": cause if cause.isdigit() else "0",
                "is_recorded": "0",
                "call_id_with_rec": "",
            },
            {"direction": "out", "source": "click-to-call"},
        )
        log.info("click_to_call.employee_did_not_answer", extension=call["internal"], cause=cause)
        self.publish([record])
