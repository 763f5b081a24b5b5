"""Call control on the PBX: one module for every call the bridge places.

- ``PbxActions`` (the CLI): test calls, call-backs and status over an AMI connection of its own;
  each call is originated with Async=true and a ChannelId we choose, so every event of the call
  can be matched by its Linkedid from the first one on, and followed live until it ends.
- ``Originator`` (the daemon: Bitrix24 click-to-call, the Telegram «Перезвонить» button): rings
  the employee, then the client, over the daemon's AMI connection; an employee who never answers
  still gets an OUT_END, so every card and message is closed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from bridge.calls.numbers import InvalidNumber, check_extension, check_phone, parse_phone, pretty
from bridge.calls.records import CallRecord, Event, make
from bridge.config import Config
from bridge.errors import PermanentFailure, RetryLater
from bridge.pbx.ami import AmiConnection, AmiSupervisor
from bridge.pbx.ami_protocol import AmiError, AmiMessage, UnsafeAction
from bridge.pbx.follow import CallFollower, Outcome, Printer
from bridge.pbx.pipeline import ami_settings

log = structlog.get_logger("bridge.originate")

_CHANNEL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def checked_test_number(cfg: Config, number: str) -> str:
    """The CLI's ``call NUMBER``, checked and normalised (InvalidNumber otherwise)."""
    return parse_phone(number, cfg.pbx.country_code, "номер для тестового звонка")


def checked_callback(cfg: Config, employee: str, client: str, did: str | None) -> tuple[str, str, str | None]:
    """The CLI's ``callback --employee --client --from``, checked and normalised (InvalidNumber)."""
    return (
        check_extension(employee, cfg.asterisk.internal_extensions, "--employee"),
        parse_phone(client, cfg.pbx.country_code, "--client"),
        parse_phone(did, cfg.pbx.country_code, "--from") if did else None,
    )


class PbxActions:
    """Test calls, call-backs and status over one AMI connection of their own."""

    def __init__(self, cfg: Config, conn: AmiConnection, followers: list[CallFollower]) -> None:
        self.cfg = cfg
        self.conn = conn
        self._followers = followers  # shared with the connection's event handler

    @classmethod
    async def open(cls, cfg: Config) -> PbxActions:
        followers: list[CallFollower] = []

        def dispatch(msg: AmiMessage) -> None:
            for follower in followers:
                follower.on_event(msg)

        conn = await AmiConnection.open(ami_settings(cfg), dispatch)
        return cls(cfg, conn, followers)

    async def close(self) -> None:
        await self.conn.close()

    async def _originate(self, follower: CallFollower, fields: dict[str, str], timeout: float) -> Outcome:
        self._followers.append(follower)
        try:
            result = await self.conn.action(
                "Originate",
                {
                    **fields,
                    "Async": "true",
                    "ChannelId": follower.linkedid,
                    "OtherChannelId": f"{follower.linkedid}-2",  # a Local channel's second half
                },
            )
            if not result.ok:
                follower.finish(f"Asterisk отказал в вызове: {result.message}")
                return follower.outcome
            try:
                async with asyncio.timeout(timeout):
                    await follower.done.wait()
            except TimeoutError:
                root = follower.channels.get(follower.linkedid)
                if root:
                    await self.conn.action("Hangup", {"Channel": root})
                follower.finish(f"вызов не завершился за {timeout:.0f} с и был сброшен")
            return follower.outcome
        finally:
            self._followers.remove(follower)

    async def test_call(self, number: str, say: Printer, timeout: float | None = None) -> Outcome:
        """Call ``number`` through the trunk (Local/NUMBER@outgoing) and play the test prompt."""
        number = checked_test_number(self.cfg, number)
        cli = self.cfg.cli
        follower = CallFollower(new_call_id("nbcall"), self.cfg, say)
        say(f"тестовый звонок на {pretty(number)} (Local/{number}@{self.cfg.asterisk.outgoing_context})")
        return await self._originate(
            follower,
            {
                "Channel": f"Local/{number}@{self.cfg.asterisk.outgoing_context}",
                "Application": cli.test_call_application,
                "Data": cli.test_call_data,
                "CallerID": f"novofon-bridge <{number}>",
                "Timeout": str(int(cli.call_timeout * 1000)),
            },
            timeout or cli.call_timeout + 30,
        )

    async def callback(
        self, employee: str, client: str, did: str | None, say: Printer, timeout: float | None = None
    ) -> Outcome:
        """Ring the employee's phone first; once they answer, call the client through the trunk."""
        employee, client, did = checked_callback(self.cfg, employee, client, did)
        cli = self.cfg.cli
        follower = CallFollower(new_call_id("nbcb"), self.cfg, say, employee_leg=True)
        say(f"обратный звонок: сначала сотрудник {employee}, затем клиент {pretty(client)}")
        fields = {
            "Channel": f"PJSIP/{employee}",
            "Context": self.cfg.asterisk.outgoing_context,
            "Exten": client,
            "Priority": "1",
            "CallerID": f"{cli.callback_callerid or 'Обратный звонок'} <{client}>",
            "Timeout": "30000",
        }
        if did:
            fields["Variable"] = f"OUTBOUND_CALLERID={did}"
        outcome = await self._originate(follower, fields, timeout or cli.call_timeout + 60)
        if "employee_answered" not in outcome.steps and not outcome.answered:
            outcome.reason = f"сотрудник {employee} не ответил: {outcome.reason}"
        return outcome

    async def status(self) -> PbxStatus:
        regs = await self.conn.action("PJSIPShowRegistrationsOutbound")
        chans = await self.conn.action("CoreShowChannels")
        registrations = {
            e.get("ObjectName", "?"): e.get("Status", "?")
            for e in regs.events
            if e.get("Event") == "OutboundRegistrationDetail"
        }
        live = [e for e in chans.events if e.get("Event") == "CoreShowChannel"]
        calls: dict[str, list[str]] = {}
        for e in live:
            calls.setdefault(e.get("Linkedid", e.get("Uniqueid", "?")), []).append(
                f"{e.get('Channel', '?')} {e.get('ChannelStateDesc', '')} {e.get('Duration', '')}".strip()
            )
        return PbxStatus(self.conn.protocol.banner_seen.result(), registrations, calls)


@dataclass
class PbxStatus:
    banner: str
    registrations: dict[str, str]
    calls: dict[str, list[str]]


def new_call_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class Originator:
    """The daemon's call placing: ring an employee's phone, then dial the client through the trunk.

    The call's pbx_call_id is ``out_<chan>`` (the ChannelId we choose), known before it starts, so
    the integration that asked (Bitrix24, Telegram) can keep its own state for it in advance.
    """

    def __init__(self, cfg: Config, ami: AmiSupervisor, publish: Callable[[list[CallRecord]], None]) -> None:
        self.cfg = cfg
        self.ami = ami
        self.publish = publish
        self._tz = ZoneInfo(cfg.pbx.timezone)
        self._pending: dict[str, dict[str, str]] = {}  # ChannelId -> call, until the trunk is dialled

    @staticmethod
    def new_channel_id(prefix: str) -> str:
        return new_call_id(prefix)

    async def ring(self, extension: str, phone: str, chan: str) -> None:
        """Ring ``extension``; once answered, dial ``phone`` through the trunk. The call's
        pbx_call_id is ``out_<chan>``; an employee who never answers still gets an OUT_END.

        Whatever asked (a Bitrix24 click, a Telegram press, a job read back from the database),
        the extension, the number and the channel id are checked here, where they reach AMI:
        a bad one is a PermanentFailure and nothing is sent."""
        try:
            check_extension(extension, self.cfg.asterisk.internal_extensions)
            check_phone(phone, "номер клиента")
        except InvalidNumber as e:
            raise PermanentFailure(str(e)) from None
        if not _CHANNEL_ID.fullmatch(chan):
            raise PermanentFailure(f"недопустимый ChannelId {chan[:40]!r}")
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
        except UnsafeAction as e:  # a config value (callback_callerid, outgoing_context) is unsafe
            self._pending.pop(chan, None)
            raise PermanentFailure(f"AMI: {e}") from e
        except AmiError as e:
            self._pending.pop(chan, None)
            raise RetryLater(f"AMI: {e}") from e
        if not result.ok:
            self._pending.pop(chan, None)
            raise PermanentFailure(f"Asterisk refused the call: {result.message}")

    def on_records(self, records: list[CallRecord]) -> None:
        """The trunk was dialled: the tracker follows the call from here on."""
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
        disposition = (
            "no answer" if cause in ("0", "16", "19", "21") else "busy" if cause == "17" else "failed"
        )
        record = make(
            Event.OUT_END,
            {
                "call_start": call["call_start"],
                "pbx_call_id": f"out_{msg['Uniqueid']}",
                "caller_id": call["internal"],
                "destination": call["phone"],
                "internal": call["internal"],
                "duration": "0",
                "disposition": disposition,
                "status_code": cause if cause.isdigit() else "0",
                "is_recorded": "0",
                "call_id_with_rec": "",
            },
            {"direction": "out", "source": "click-to-call"},
        )
        log.info("originate.employee_did_not_answer", extension=call["internal"], cause=cause)
        self.publish([record])
