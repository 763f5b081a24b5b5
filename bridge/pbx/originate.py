"""Call control on the PBX: one module for every call the bridge places.

Every call (CLI ``call`` and ``callback``, Bitrix24 click-to-call, the Telegram «Перезвонить»
button) goes over ARI when ``asterisk.ari`` is enabled and has a password, over AMI otherwise:

- The CLI: ``AriActions`` (bridge/pbx/ari_actions.py) — a Stasis application of the command's
  own — or ``PbxActions`` here — an AMI connection of its own, Originate with Async=true and a
  ChannelId we choose, followed by its Linkedid. Either way a call is given up only while it
  rings: once the client answers no timer applies, and Ctrl-C hangs up what the command placed
  (and nothing else).
- ``Originator`` (the daemon): rings the employee, then the client, over the daemon's ARI
  application (or its AMI connection). The records come from the tracker as for any call; when the
  client was never dialled (the employee was busy, did not answer, rejected, hung up) the
  Originator closes the call itself with an OUT_END that says so, so every card and message is
  closed with the employee's own outcome.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from bridge.calls.numbers import InvalidNumber, check_extension, check_phone, normalise, parse_phone, pretty
from bridge.calls.records import CallRecord, Event, make
from bridge.config import Config
from bridge.errors import PermanentFailure, RetryLater
from bridge.pbx.ami import AmiConnection, AmiSupervisor
from bridge.pbx.ami_protocol import AmiError, AmiMessage, UnsafeAction
from bridge.pbx.ari import AriDialFailed, AriError, AriSettings, AriSupervisor, AriUnavailable
from bridge.pbx.follow import (
    CallFollower,
    CallResult,
    Outcome,
    Printer,
    describe,
    employee_disposition,
    employee_end,
)
from bridge.pbx.permissions import PERMISSION_DENIED, ActionRefused, refused
from bridge.pbx.pipeline import ami_settings
from bridge.pbx.stasis import StasisApp
from bridge.pbx.stasis_call import StasisSettings

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


def new_call_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def ari_settings(cfg: Config, app: str | None = None) -> AriSettings:
    a = cfg.asterisk.ari
    return AriSettings(a.url, a.username, a.password, app or a.app, cfg.asterisk.ami.connect_timeout)


def stasis_settings(cfg: Config, app: str) -> StasisSettings:
    return StasisSettings(
        app,
        outgoing_context=cfg.asterisk.outgoing_context,
        employee_timeout=cfg.pbx.employee_ring_timeout,
        client_timeout=max(cfg.cli.call_timeout, 30.0) + 30.0,
        test_media=f"sound:{cfg.cli.test_call_data}",
        max_call_age=cfg.pbx.max_call_age,
    )


def callback_caller_id(cfg: Config, client: str, name: str = "") -> str:
    """What the employee's phone shows: the client's number and, when known, the CRM name."""
    label = name or cfg.cli.callback_callerid or "Обратный звонок"
    return f"{label} <{client}>"


async def wait_ringing(answered: asyncio.Event, done: asyncio.Event, timeout: float) -> bool:
    """Wait until the call is answered or over, at most ``timeout`` s; False: still ringing."""
    waits = [asyncio.ensure_future(answered.wait()), asyncio.ensure_future(done.wait())]
    try:
        finished, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(finished)


# -- the CLI -------------------------------------------------------------------------------------


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
                user = self.conn.settings.username
                follower.finish(f"Asterisk отказал в вызове: {refused('Originate', result, user)}")
                return follower.outcome
            if not await wait_ringing(follower.answered, follower.done, timeout):
                await self._hangup(follower)
                follower.finish(f"никто не ответил за {timeout:.0f} с — вызов сброшен")
            await follower.done.wait()  # once answered, no timer applies
            return follower.outcome
        except asyncio.CancelledError:  # Ctrl-C or SIGTERM: hang up what this command placed
            await self._hangup(follower)
            follower.finish("прервано: вызовы этой команды сброшены")
            raise
        finally:
            self._followers.remove(follower)

    async def _hangup(self, follower: CallFollower) -> None:
        root = follower.channels.get(follower.linkedid)
        if root:
            try:
                await self.conn.action("Hangup", {"Channel": root})
            except AmiError as e:
                log.warning("originate.hangup_failed", channel=root, error=str(e))

    async def test_call(self, number: str, say: Printer, timeout: float | None = None) -> Outcome:
        """Call ``number`` through the trunk (Local/NUMBER@<outgoing_context>), play the test prompt."""
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
            "CallerID": callback_caller_id(self.cfg, client),
            "Timeout": str(int(self.cfg.pbx.employee_ring_timeout * 1000)),
        }
        if did:
            fields["Variable"] = f"OUTBOUND_CALLERID={did}"
        outcome = await self._originate(follower, fields, timeout or cli.call_timeout + 60)
        if "employee_answered" not in outcome.steps and not outcome.answered and outcome.cause is not None:
            end = employee_end(outcome.cause, answered=False)
            outcome.reason = describe(CallResult(False, "employee", end, outcome.cause), employee)
        return outcome

    async def status(self) -> PbxStatus:
        regs = await self.conn.action("PJSIPShowRegistrationsOutbound")
        chans = await self.conn.action("CoreShowChannels")
        for action, answer in (("PJSIPShowRegistrationsOutbound", regs), ("CoreShowChannels", chans)):
            if answer.message == PERMISSION_DENIED:  # a missing class in manager.conf, said as such
                raise ActionRefused(action, answer, self.conn.settings.username)
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


# -- the daemon ----------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A call the Originator placed whose client was not dialled yet (no OUT_START so far)."""

    internal: str
    phone: str
    call_start: str
    placed_at: float
    channels: set[str] = field(default_factory=set)  # live channels of the call (by Linkedid)
    answered: bool = False  # the employee's phone answered
    cause: int | None = None  # the employee's channel's hangup cause
    # The number the client would have seen (--from / the line, else pbx.default_did): an outbound
    # record's caller_id is never the extension (that is ``internal``).
    caller_id: str = ""


class Originator:
    """The daemon's call placing: ring an employee's phone, then dial the client through the trunk.

    The call's pbx_call_id is ``out_<chan>`` (the channel id we choose), known before it starts, so
    the integration that asked (Bitrix24, Telegram) can keep its own state for it in advance.
    """

    def __init__(
        self,
        cfg: Config,
        ami: AmiSupervisor,
        publish: Callable[[list[CallRecord]], None],
        ari: AriSupervisor | None = None,
        stasis: StasisApp | None = None,
    ) -> None:
        self.cfg = cfg
        self.ami = ami
        self.ari = ari
        self.stasis = stasis
        self.publish = publish
        self._tz = ZoneInfo(cfg.pbx.timezone)
        self._pending: dict[str, _Pending] = {}  # channel id (= Linkedid) -> call, until the trunk is dialled

    @staticmethod
    def new_channel_id(prefix: str) -> str:
        return new_call_id(prefix)

    async def ring(self, extension: str, phone: str, chan: str, did: str = "", name: str = "") -> None:
        """Ring ``extension`` (its screen shows ``phone`` and ``name``); once answered, dial ``phone``
        through the trunk, showing ``did`` to the client when given. The call's pbx_call_id is
        ``out_<chan>``; an employee who never answers still gets an OUT_END.

        Whatever asked (a Bitrix24 click, a Telegram press, a job read back from the database),
        the extension, the numbers and the channel id are checked here, where they reach the PBX
        (ARI or AMI): a bad one is a PermanentFailure and nothing is sent."""
        try:
            check_extension(extension, self.cfg.asterisk.internal_extensions)
            check_phone(phone, "номер клиента")
            if did:
                check_phone(did, "номер линии (DID)")
        except InvalidNumber as e:
            raise PermanentFailure(str(e)) from None
        if not _CHANNEL_ID.fullmatch(chan):
            raise PermanentFailure(f"недопустимый ChannelId {chan[:40]!r}")
        now = time.time()
        self._forget_older_than(now - self.cfg.pbx.max_call_age)
        start = datetime.fromtimestamp(now, self._tz).strftime("%Y-%m-%d %H:%M:%S")
        line = did or normalise(self.cfg.pbx.default_did, self.cfg.pbx.country_code)
        self._pending[chan] = _Pending(extension, phone, start, now, caller_id=line)
        caller_id = callback_caller_id(self.cfg, phone, name)
        try:
            if self.stasis is not None:
                await self._ring_ari(self.stasis, extension, phone, chan, did, caller_id)
            else:
                await self._ring_ami(extension, phone, chan, did, caller_id)
        except RetryLater:
            self._pending.pop(chan, None)
            raise
        except PermanentFailure as e:
            pending = self._pending.pop(chan, None)
            if pending is not None:  # close the card and the message: the employee's phone failed
                log.warning("originate.refused", extension=extension, error=str(e))
                self.publish([self._employee_end(chan, pending, refused=True)])
            raise

    async def _ring_ari(
        self, stasis: StasisApp, extension: str, phone: str, chan: str, did: str, caller_id: str
    ) -> None:
        if self.ari is None or not self.ari.connected.is_set():
            raise RetryLater("ARI: нет подключения к Asterisk (события приложения не идут)")
        try:
            await stasis.start_callback(chan, extension, phone, did, caller_id)
        except AriUnavailable as e:
            raise RetryLater(str(e)) from e
        except AriDialFailed as e:
            raise PermanentFailure(f"телефон сотрудника {extension} недоступен: {e}") from e
        except AriError as e:
            raise PermanentFailure(str(e)) from e

    async def _ring_ami(self, extension: str, phone: str, chan: str, did: str, caller_id: str) -> None:
        conn = self.ami.connection
        if conn is None:
            raise RetryLater("AMI is not connected")
        fields = {
            "Channel": f"PJSIP/{extension}",
            "Context": self.cfg.asterisk.outgoing_context,
            "Exten": phone,
            "Priority": "1",
            "CallerID": caller_id,
            "Timeout": str(int(self.cfg.pbx.employee_ring_timeout * 1000)),
            "Async": "true",
            "ChannelId": chan,
            "OtherChannelId": f"{chan}-2",
        }
        if did:
            fields["Variable"] = f"OUTBOUND_CALLERID={did}"
        try:
            result = await conn.action("Originate", fields)
        except UnsafeAction as e:  # a config value (callback_callerid, outgoing_context) is unsafe
            raise PermanentFailure(f"AMI: {e}") from e
        except AmiError as e:
            raise RetryLater(f"AMI: {e}") from e
        if not result.ok:
            raise PermanentFailure(
                f"Asterisk refused the call: {refused('Originate', result, conn.settings.username)}"
            )

    def on_records(self, records: list[CallRecord]) -> None:
        """The trunk was dialled: the tracker follows the call from here on."""
        for r in records:
            if r.event is Event.OUT_START:
                self._pending.pop(r.pbx_call_id.removeprefix("out_"), None)

    def on_ami(self, msg: AmiMessage) -> None:
        """Follow each pending call's channels; when all are gone and the trunk was never dialled,
        close the call with the employee's own outcome (busy, no answer, rejected, hung up)."""
        name = msg.get("Event")
        if name == "DialEnd":  # our originate towards the employee's phone (no caller channel)
            pending = self._pending.get(msg.get("DestUniqueid", ""))
            if pending is not None:
                pending.answered = msg.get("DialStatus") == "ANSWER"
            return
        chan = msg.get("Linkedid", "")
        pending = self._pending.get(chan)
        if pending is None:
            return
        uid = msg.get("Uniqueid", "")
        if name == "Newchannel":
            pending.channels.add(uid)
        elif name == "Hangup":
            if uid == chan:
                cause = msg.get("Cause", "")
                pending.cause = int(cause) if cause.isdigit() else None
            pending.channels.discard(uid)
            if not pending.channels:
                del self._pending[chan]
                self.publish([self._employee_end(chan, pending)])

    def _employee_end(self, chan: str, call: _Pending, refused: bool = False) -> CallRecord:
        end = employee_end(call.cause, call.answered) if not refused else employee_end(38, False)
        log.info("originate.client_not_dialled", extension=call.internal, end=end.value, cause=call.cause)
        return make(
            Event.OUT_END,
            {
                "call_start": call.call_start,
                "pbx_call_id": f"out_{chan}",
                "caller_id": call.caller_id,
                "destination": call.phone,
                "internal": call.internal,
                "duration": "0",
                "disposition": employee_disposition(end).value,
                "status_code": str(call.cause or 0),
                "is_recorded": "0",
                "call_id_with_rec": "",
            },
            {"direction": "out", "source": "click-to-call", "callback_leg": "employee", "leg_end": end.value},
        )

    def _forget_older_than(self, cutoff: float) -> None:
        """Calls whose end we never heard of (AMI was down meanwhile) are not kept forever."""
        for chan in [c for c, p in self._pending.items() if p.placed_at < cutoff]:
            del self._pending[chan]
