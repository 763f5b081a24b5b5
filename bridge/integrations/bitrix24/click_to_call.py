"""Click-to-call from a Bitrix24 CRM card (ONEXTERNALCALLSTART): ring the employee, then the client,
and report that call's lifecycle on the CALL_ID Bitrix24 gave — never registering a second call.

The call is placed by the one originate module (bridge/pbx/originate.py) with a ChannelId we choose,
so its pbx_call_id (``out_<ChannelId>``) is known before it starts; this integration's state for it
is seeded with Bitrix24's CALL_ID first.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from bridge.calls.numbers import normalise
from bridge.directory import Directory
from bridge.errors import BadRequest, PermanentFailure
from bridge.integrations.bitrix24.state import seed_call
from bridge.outbox.jobs import Jobs
from bridge.outbox.state import StateStore
from bridge.pbx.originate import Originator

log = structlog.get_logger("bridge.click_to_call")

JOB = "click2call"
REPEAT_WINDOW = 30.0  # Bitrix24 may send the same click twice; a second one within 30 s is ignored
STALE_AFTER = 60.0  # a click that could not be placed within a minute is dropped, not rung late
_CALL_ID = re.compile(r"[\w.:-]{1,100}")


class ClickToCall:
    def __init__(
        self, directory: Directory, state: StateStore, jobs: Jobs, calls: Originator, country_code: str
    ) -> None:
        self.directory = directory
        self.state = state
        self.jobs = jobs
        self.calls = calls
        self.country_code = country_code

    def accept(self, data: dict[str, str]) -> str:
        """Check an ONEXTERNALCALLSTART and commit it as a job; "queued" or "repeat"."""
        call_id, user_id = data.get("CALL_ID", ""), data.get("USER_ID", "")
        phone = normalise(data.get("PHONE_NUMBER", ""), self.country_code)
        if not _CALL_ID.fullmatch(call_id):
            raise BadRequest(400, "bad-field", "data[CALL_ID] is missing or malformed")
        if not user_id.isdigit() or len(user_id) > 12:
            raise BadRequest(400, "bad-field", "data[USER_ID] must be a number")
        if not phone.isdigit() or not 3 <= len(phone) <= 16:
            raise BadRequest(400, "bad-field", "data[PHONE_NUMBER] is not a phone number")
        job = {"call_id": call_id, "user_id": user_id, "phone": phone}
        line = normalise(data.get("LINE_NUMBER", ""), self.country_code)
        if line.isdigit() and 5 <= len(line) <= 15:  # the line the employee called from: our DID
            job["did"] = line
        added = self.jobs.add(JOB, job, once=f"b24-click:{call_id}", window=REPEAT_WINDOW)
        return "queued" if added else "repeat"

    async def originate(self, job: dict[str, Any]) -> None:
        """The click-to-call job: who clicked -> extension; seed the Bitrix24 state; ring."""
        employee = self.directory.by_bitrix_user(str(job["user_id"]))
        if employee is None or not employee.active:
            raise PermanentFailure(f"no extension for Bitrix24 user {job['user_id']} in the directory")
        chan = self.calls.new_channel_id("b24")
        seed_call(self.state, f"out_{chan}", str(job["call_id"]))
        await self.calls.ring(employee.extension, str(job["phone"]), chan, did=str(job.get("did") or ""))
        log.info(
            "click_to_call.originated",
            extension=employee.extension,
            pbx_call_id=f"out_{chan}",
            bitrix_call_id=job["call_id"],
        )
