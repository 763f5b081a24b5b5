"""Our Stasis application: the calls the bridge places over ARI.

A call-back (CLI ``callback``, Bitrix24 click-to-call, the Telegram «Перезвонить» button):

1. the employee's phone is originated into the application, with the call id as its channel id
   (so the call's Linkedid, and its pbx_call_id ``out_<call id>``, are known in advance); the phone
   shows the client's number and name;
2. the employee answers (StasisStart): they hear ringing while the client is originated as
   ``Local/NUMBER@<outgoing>/n`` with the employee's channel as originator. The dialplan dials the
   trunk exactly as for the employee's own call, so the records are the same (OUT_START … OUT_END,
   internal = the employee, same Linkedid), and so are the outbound caller ID and the recording;
3. the client answers (StasisStart of the Local channel): both go into a mixing bridge;
4. either side leaves: the other is hung up and the bridge destroyed. Nothing else ends a call —
   no timer, and a lost WebSocket hangs nothing up (the bridge carries on without us).

A test call (CLI ``call``): ``Local/NUMBER@<outgoing>/n`` into the application; answered -> a sound
is played; played -> hung up.

Everything needed to carry a call on lives in Asterisk (channel ids derived from the call id, the
Stasis arguments, the bridge id), so after a reconnect or a daemon restart ``readopt`` rebuilds the
calls from GET /channels and finishes whatever ended meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Any

import structlog

from bridge.pbx.ari import AriBadRequest, AriClient, AriError, Event
from bridge.pbx.follow import TRUNK_CAUSE_GRACE
from bridge.pbx.stasis_call import (
    CALLBACK,
    CLIENT,
    EMPLOYEE,
    FAR,
    FINAL_DIAL,
    TEST,
    TRUNK,
    CallWatcher,
    StasisCall,
    StasisSettings,
)

log = structlog.get_logger("bridge.stasis")

#: The events the application needs (the application's event filter; everything else stays home).
EVENTS = ("StasisStart", "StasisEnd", "ChannelDestroyed", "Dial", "PlaybackFinished", "ApplicationReplaced")
# What may reach a dial string or the Stasis arguments (the entrances check numbers for people
# with bridge/calls/numbers.py; this is the last line, where values become ARI requests).
_NUMBER = re.compile(r"[0-9]{1,20}")
_ENDPOINT = re.compile(r"[A-Za-z0-9_-]{1,40}")
_CALL = re.compile(r"[A-Za-z0-9_-]{1,60}")
_CONTEXT = re.compile(r"[A-Za-z0-9_.-]{1,80}")  # asterisk.outgoing_context, inside the dial string
ORPHAN_AFTER = 60.0  # an empty bridge of ours this old belongs to no call any more
_OUR_BRIDGE = re.compile(r"[a-z0-9]+-[0-9a-f]{16}-b")  # bridge of a call id from new_call_id()


class StasisApp:
    def __init__(self, ari: AriClient, settings: StasisSettings) -> None:
        self.ari = ari
        self.s = settings
        self.calls: dict[str, StasisCall] = {}
        self._by_channel: dict[str, str] = {}  # our channel ids (and trunk legs) -> call id

    @property
    def active(self) -> int:
        return len(self.calls)

    # -- placing calls -------------------------------------------------------------------------
    async def start_callback(
        self,
        call_id: str,
        employee: str,
        client: str,
        did: str = "",
        caller_id: str = "",
        watcher: CallWatcher | None = None,
    ) -> None:
        """Ring ``employee`` (caller ID ``caller_id``); the rest follows from the events."""
        _check(call_id=(_CALL, call_id), employee=(_ENDPOINT, employee), client=(_NUMBER, client))
        if did:
            _check(did=(_NUMBER, did))
        call = self._add(StasisCall(call_id, CALLBACK, employee, client, did, watcher))
        call.alive.add(call.employee_chan)
        try:
            await self.ari.originate(
                f"PJSIP/{employee}",
                app=self.s.app,
                app_args=(EMPLOYEE, client, did, employee),
                channel_id=call.employee_chan,
                caller_id=caller_id,
                timeout=self.s.employee_timeout,
            )
        except AriError:
            self._drop(call)
            raise

    async def start_test(
        self, call_id: str, number: str, caller_id: str, watcher: CallWatcher | None = None
    ) -> None:
        """Call ``number`` through the trunk and play the test sound once it answers."""
        _check(call_id=(_CALL, call_id), number=(_NUMBER, number))
        call = self._add(StasisCall(call_id, TEST, client=number, watcher=watcher))
        try:
            await self._originate_client(call, caller_id, originator=None)
        except AriError:
            self._drop(call)
            raise

    async def hang_up(self, call_id: str) -> None:
        """Hang up what this call placed (Ctrl-C in the CLI). Other calls are never touched."""
        call = self.calls.get(call_id)
        if call is not None:
            call.first_gone = call.first_gone or "us"
            await self._teardown(call)

    async def _originate_client(self, call: StasisCall, caller_id: str, originator: str | None) -> None:
        _check(number=(_NUMBER, call.client), outgoing_context=(_CONTEXT, self.s.outgoing_context))
        call.alive.add(call.client_chan)
        try:
            await self.ari.originate(
                f"Local/{call.client}@{self.s.outgoing_context}/n",
                app=self.s.app,
                app_args=(CLIENT if call.kind == CALLBACK else TEST,),
                channel_id=call.client_chan,
                other_channel_id=call.far_chan,
                originator=originator,
                caller_id=caller_id,
                timeout=self.s.client_timeout,
                # Inherited by the Local channel's dialling half: [outgoing] sets CALLERID(num) from it.
                variables={"_OUTBOUND_CALLERID": call.did} if call.did else None,
                formats="slin",  # no originator (a test call): as AMI's Originate, any codec translates
            )
        except AriError:
            call.alive.discard(call.client_chan)
            raise

    # -- events --------------------------------------------------------------------------------
    async def on_event(self, ev: Event) -> None:
        kind = ev.get("type")
        chan = str((ev.get("channel") or {}).get("id", ""))
        if kind == "Dial":
            self._on_dial(ev)
        elif kind == "StasisStart":
            await self._on_start(chan, [str(a) for a in ev.get("args") or []])
        elif kind == "StasisEnd":
            call = self._call_of(chan)
            if call is not None and call.role(chan) in (EMPLOYEE, CLIENT):
                call.left.add(chan)
                await self._leg_gone(call, call.role(chan))
        elif kind == "ChannelDestroyed":
            await self._on_destroyed(chan, ev.get("cause"))
        elif kind == "PlaybackFinished":
            target = str((ev.get("playback") or {}).get("target_uri", "")).removeprefix("channel:")
            call = self._call_of(target)
            if call is not None and call.kind == TEST:
                call.first_gone = call.first_gone or "us"
                await self._teardown(call)
        elif kind == "ApplicationReplaced":
            log.error("stasis.app_replaced", app=self.s.app, hint="another program took this ARI app name")

    def _on_dial(self, ev: Event) -> None:
        peer = ev.get("peer") or {}
        peer_id, caller_id = str(peer.get("id", "")), str((ev.get("caller") or {}).get("id", ""))
        status = str(ev.get("dialstatus", ""))
        if not caller_id:  # our own originate: the employee's phone
            call = self._call_of(peer_id)
            if call is not None and call.role(peer_id) == EMPLOYEE and status == "RINGING":
                call.step("employee_ringing")
            return
        call = self._call_of(caller_id)
        if call is None or call.role(caller_id) != FAR:
            return
        if not call.trunk:
            call.trunk = peer_id
            self._by_channel[peer_id] = call.call_id
            call.step("trying", str(peer.get("name", "")))
        if peer_id != call.trunk:
            return
        if status == "RINGING":
            call.step("ringing")
        elif status == "ANSWER":
            self._answered(call)
        elif status in FINAL_DIAL:
            call.dialstatus = status

    def _answered(self, call: StasisCall) -> None:
        if call.answered_at is None:
            call.answered_at = time.monotonic()
            call.step("answered")

    async def _on_start(self, chan: str, args: list[str]) -> None:
        call = self._call_of(chan) or self._rebuild(chan, args)
        if call is None:
            log.warning("stasis.unknown_channel", channel=chan, args=args)
            await self._hangup(chan)
            return
        call.up.add(chan)
        call.alive.add(chan)
        role = call.role(chan)
        if call.ending:
            await self._teardown(call)
        elif role == EMPLOYEE:
            call.step("employee_answered")
            await self._ignore(self.ari.ring(chan))  # ringback while the client is being called
            try:
                await self._originate_client(call, f"<{call.employee}>", originator=chan)
            except AriError as e:
                log.warning("stasis.client_not_dialled", call_id=call.call_id, error=str(e))
                call.causes[call.client_chan] = 38  # network out of order: never reached the trunk
                call.first_gone = CLIENT
                await self._teardown(call, reason="congestion")
        elif role == CLIENT and call.kind == TEST:
            self._answered(call)
            try:
                await self.ari.play(chan, self.s.test_media)
            except AriError as e:
                log.warning("stasis.playback_failed", call_id=call.call_id, error=str(e))
                await self._teardown(call)
        elif role == CLIENT:
            self._answered(call)
            await self._bridge(call)

    async def _bridge(self, call: StasisCall, already: frozenset[str] = frozenset()) -> None:
        """Both answered: into one bridge (``already``: those in it, found on a re-adopt)."""
        try:
            await self._ignore(self.ari.ring_stop(call.employee_chan))
            if not call.bridged:
                await self.ari.create_bridge(call.bridge)
                call.bridged = True
            chans = [c for c in (call.employee_chan, call.client_chan) if c not in already]
            await self.ari.add_to_bridge(call.bridge, chans)
        except AriError as e:  # the employee hung up meanwhile (404/409/422)
            log.info("stasis.bridge_failed", call_id=call.call_id, error=str(e))
            await self._teardown(call)

    async def _on_destroyed(self, chan: str, cause: Any) -> None:
        call = self._call_of(chan)
        if call is None:
            return
        role = call.role(chan)
        code = int(cause) if isinstance(cause, int) else None
        if role == TRUNK:
            call.trunk_cause = code
            if call.awaiting_trunk:
                self._maybe_finish(call, waited=True)
            return
        if role not in (EMPLOYEE, CLIENT):
            return
        if code is not None:
            call.causes.setdefault(chan, code)
        call.alive.discard(chan)
        await self._leg_gone(call, role)

    async def _leg_gone(self, call: StasisCall, role: str) -> None:
        if not call.first_gone:
            call.first_gone = role
        if call.gone_at is None:
            call.gone_at = time.monotonic()
        if call.ending:
            self._maybe_finish(call)
        else:
            await self._teardown(call)

    async def _teardown(self, call: StasisCall, reason: str = "normal") -> None:
        """Either side left (or we were told to stop): hang up the rest, destroy the bridge."""
        call.ending = True
        if call.gone_at is None:
            call.gone_at = time.monotonic()
        for chan in (call.employee_chan, call.client_chan):
            if chan and chan in call.alive - call.left and not await self._hangup(chan, reason):
                call.alive.discard(chan)  # already gone: its ChannelDestroyed went past us
        if call.bridged:
            await self._ignore(self.ari.destroy_bridge(call.bridge))
            call.bridged = False
        self._maybe_finish(call)

    def _maybe_finish(self, call: StasisCall, waited: bool = False) -> None:
        if not call.ending or call.alive or call.call_id not in self.calls:
            return
        result = call.result()
        if result.leg == CLIENT and call.trunk and call.trunk_cause is None and not waited:
            # The trunk leg's cause says why the client's leg failed (an unknown number is cause 1
            # there, 20 on our Local channel) and its ChannelDestroyed can come just after ours:
            # wait for it a moment, as the AMI path does (follow.TRUNK_CAUSE_GRACE).
            if not call.awaiting_trunk:
                call.awaiting_trunk = True
                asyncio.get_running_loop().call_later(TRUNK_CAUSE_GRACE, self._maybe_finish, call, True)
            return
        self._drop(call)
        log.info(
            "stasis.call_finished",
            call_id=call.call_id,
            answered=result.answered,
            leg=result.leg,
            end=result.end.value,
            cause=result.cause,
            dialstatus=result.dialstatus,
            talk_s=round(result.talk_seconds, 1),
        )
        if call.watcher is not None:
            call.watcher.finished(result)

    # -- after a (re)connect -------------------------------------------------------------------
    async def readopt(self) -> None:
        """Rebuild our calls from what Asterisk has; finish what ended while we were away."""
        asked = time.monotonic()
        present = {str(c.get("id")): c for c in await self.ari.channels()}
        bridges = {str(b.get("id")): b for b in await self.ari.bridges()}
        for chan, c in present.items():  # channels in our application we did not know (a restart)
            dialplan = c.get("dialplan") or {}
            app, _, args = str(dialplan.get("app_data", "")).partition(",")
            if dialplan.get("app_name") == "Stasis" and app == self.s.app:
                call = self._call_of(chan) or self._rebuild(chan, args.split(","))
                if call is not None:
                    call.up.add(chan)
                    call.alive.add(chan)
        bridged = 0
        for call in [
            c for c in self.calls.values() if c.adopted or c.created < asked
        ]:  # none placed meanwhile
            ours = [c for c in (call.employee_chan, call.client_chan) if c]
            expected = call.alive | call.up  # once the employee answered, the client leg exists
            if call.kind == CALLBACK and call.employee_chan in call.up:
                expected.add(call.client_chan)
            missing = [c for c in ours if c in expected and c not in present]
            call.alive = {c for c in ours if c in present}
            in_bridge = set((bridges.get(call.bridge) or {}).get("channels") or [])
            call.bridged = call.bridge in bridges
            if missing:  # a leg ended while we were away: end the call as it would have ended
                for chan in missing:
                    await self._leg_gone(call, call.role(chan))
            elif call.ending:
                await self._teardown(call)
            elif call.kind == CALLBACK and set(ours) <= call.up:
                call.answered_at = call.answered_at or time.monotonic()
                if not set(ours) <= in_bridge:
                    await self._bridge(call, frozenset(in_bridge))
                bridged += 1
        await self._destroy_orphan_bridges(bridges)
        log.info("stasis.readopted", calls=len(self.calls), bridged=bridged)

    async def _destroy_orphan_bridges(self, bridges: dict[str, dict[str, Any]]) -> None:
        """Bridges of ours whose calls both ended while nobody was listening."""
        for bridge_id, b in bridges.items():
            call_id = bridge_id.removesuffix("-b")
            if (
                _OUR_BRIDGE.fullmatch(bridge_id)
                and not b.get("channels")
                and call_id not in self.calls
                and _age(str(b.get("creationtime", ""))) > ORPHAN_AFTER
            ):
                await self._ignore(self.ari.destroy_bridge(bridge_id))

    def _rebuild(self, chan: str, args: list[str]) -> StasisCall | None:
        """A channel of ours we have no memory of (the daemon restarted): its Stasis arguments say
        what it is. The employee leg carries everything; the client leg names its call by id."""
        role = args[0] if args else ""
        if role == EMPLOYEE and len(args) >= 4:
            call = StasisCall(chan, CALLBACK, employee=args[3], client=args[1], did=args[2])
        elif role == CLIENT and chan.endswith("-c"):
            call = StasisCall(chan.removesuffix("-c"), CALLBACK)
            call.alive.add(call.employee_chan)
            call.up.add(call.employee_chan)  # the client is only ever dialled once the employee answered
        else:
            return None
        call.adopted = True  # found in Asterisk, not being placed: readopt judges it
        log.info("stasis.adopted", call_id=call.call_id, role=role)
        return self._add(call)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _add(self, call: StasisCall) -> StasisCall:
        # Calls leave on their last ChannelDestroyed, and readopt() settles them after a lost
        # connection; one that outlived pbx.max_call_age anyway (a lost event) is let go here.
        cutoff = time.monotonic() - self.s.max_call_age
        for stale in [c for c in self.calls.values() if c.created < cutoff]:
            log.warning("stasis.call_forgotten", call_id=stale.call_id)
            self._drop(stale)
        self.calls[call.call_id] = call
        for chan in (call.employee_chan, call.client_chan, call.far_chan):
            if chan:
                self._by_channel[chan] = call.call_id
        return call

    def _drop(self, call: StasisCall) -> None:
        self.calls.pop(call.call_id, None)
        for chan in (call.employee_chan, call.client_chan, call.far_chan, call.trunk):
            if chan and self._by_channel.get(chan) == call.call_id:
                del self._by_channel[chan]

    def _call_of(self, chan: str) -> StasisCall | None:
        call_id = self._by_channel.get(chan)
        return self.calls.get(call_id) if call_id else None

    async def _hangup(self, chan: str, reason: str = "normal") -> bool:
        try:
            return await self.ari.hangup(chan, reason)
        except AriError as e:
            log.warning("stasis.hangup_failed", channel=chan, error=str(e))
            return True

    @staticmethod
    async def _ignore(action: Any) -> None:
        try:
            await action
        except AriError as e:
            log.info("stasis.action_failed", error=str(e))


def _check(**values: tuple[re.Pattern[str], str]) -> None:
    for name, (pattern, value) in values.items():
        if not pattern.fullmatch(value):
            raise AriBadRequest(f"недопустимое значение {name}={value[:40]!a}: вызов не сделан")


def _age(creationtime: str) -> float:
    """Seconds since an ARI timestamp ("2026-11-29T14:50:12.098+0000"); 0 when unreadable."""
    try:
        return time.time() - datetime.strptime(creationtime, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return 0.0
