"""The call tracker: channel events in, Novofon call records out. Pure: no I/O, no clock.

A call is every channel that shares a Linkedid (the Uniqueid of the call's first channel). The
first channel decides the direction: a trunk channel that starts a call is an inbound call; a call
whose channels dial the trunk is outbound; a call that never touches the trunk is internal-only
and produces no records (Novofon does not report those either).

State lives in two dicts (channels by Uniqueid, calls by Linkedid). A call is dropped as soon as
its last channel hangs up; ``sweep`` closes calls whose Hangup never came (a lost event) and
``resync`` reconciles with the list of live channels after an AMI reconnect or a start.

With ``persist=True`` the tracker also keeps track of which calls changed: ``take_changes`` hands
out their snapshots (and the calls that ended), which the pipeline commits together with the
records; ``restore`` takes them back after a restart, so no record of a call is emitted twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.calls.disposition import PBX_GAVE_UP
from bridge.calls.events import ChannelEvent, Kind, LiveChannel
from bridge.calls.forwarding import Forwarding
from bridge.calls.model import (
    CAUSE_UNKNOWN,
    Call,
    Channel,
    Direction,
    Role,
    call_from,
    classify_channel,
    local_member,
    snapshot_of,
    uniqueid_order,
)
from bridge.calls.numbers import normalise
from bridge.calls.outside import dial_target
from bridge.calls.records import CallRecord, Event
from bridge.calls.report import end_records, record
from bridge.calls.settings import TrackerSettings
from bridge.calls.snapshot import CallSnapshot, Changes, EndedCall, EndFacts
from bridge.calls.takeover import TakeOvers

__all__ = ["Call", "Channel", "Direction", "Role", "Tracker", "TrackerSettings", "classify_channel"]

STATE_UP = 6
CAUSE_ANSWERED_ELSEWHERE = 26
PBX_REFUSAL_CAUSES = frozenset({17, 34})  # user busy, circuit/channel congestion


class Tracker(TakeOvers, Forwarding):
    def __init__(self, settings: TrackerSettings | None = None, persist: bool = False) -> None:
        self.settings = s = settings or TrackerSettings()
        self._internal = re.compile(s.internal_pattern)
        self._tz = ZoneInfo(s.timezone)
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}
        self._dirty: dict[str, Call] | None = {} if persist else None
        self._ended: list[EndedCall] = []
        self._handlers = {
            Kind.NEW: self._on_new,
            Kind.STATE: self._on_state,
            Kind.CALLERID: self._on_callerid,
            Kind.DIAL_BEGIN: self._on_dial_begin,
            Kind.DIAL_END: self._on_dial_end,
            Kind.BRIDGE: self._on_bridge,
            Kind.TRANSFER: self._on_transfer,
            Kind.RECORDING: self._on_recording,
            Kind.HANGUP: self._on_hangup,
            Kind.HANGUP_REQUEST: self._on_hangup_request,
            Kind.SOFT_HANGUP_REQUEST: self._on_hangup_request,
        }

    # -- public API ----------------------------------------------------------------------------
    @property
    def active_calls(self) -> int:
        return len({id(c) for c in self._calls.values()})

    @property
    def active_channels(self) -> int:
        return len(self._channels)

    def knows_channel(self, uniqueid: str) -> bool:
        return uniqueid in self._channels

    def known_ids(self) -> set[str]:
        """Every Linkedid and Uniqueid of the calls open now (a CDR backfill skips them)."""
        ids = set(self._calls)
        for call in self._calls.values():
            ids.update(call.members)
        return ids

    def feed(self, ev: ChannelEvent) -> list[CallRecord]:
        out: list[CallRecord] = []
        self._handlers[ev.kind](ev, out)
        return out

    def sweep(self, now: float) -> list[CallRecord]:
        """Close calls that saw no event for longer than ``max_call_age`` (a lost Hangup)."""
        out: list[CallRecord] = []
        stale = {id(c): c for c in self._calls.values() if now - c.last_seen > self.settings.max_call_age}
        for call in stale.values():
            call.reconstructed = True
            for chan in list(call.channels.values()):
                self._drop_channel(chan, now, CAUSE_UNKNOWN, out)
        return out

    # -- persistence ---------------------------------------------------------------------------
    @property
    def has_changes(self) -> bool:
        return bool(self._dirty or self._ended)

    def take_changes(self) -> Changes:
        """Snapshots of the reported calls that changed, and the calls that ended, since last time."""
        if self._dirty is None:
            return Changes()
        saved = tuple(
            snapshot_of(c)
            for key, c in self._dirty.items()
            if c.direction is not Direction.UNKNOWN and self._calls.get(key) is c
        )
        changes = Changes(saved, tuple(self._ended))
        self._dirty.clear()
        self._ended.clear()
        return changes

    def requeue(self, changes: Changes) -> None:
        """The commit of ``changes`` failed: hand them out again next time."""
        if self._dirty is None:
            return
        for snap in changes.saved:
            call = self._calls.get(snap.linkedid)
            if call is not None:
                self._dirty[call.linkedid] = call
        self._ended[:0] = changes.ended

    def restore(self, snapshots: Iterable[CallSnapshot]) -> int:
        """Take back the open calls of an earlier run (before the first resync)."""
        n = 0
        for snap in snapshots:
            if snap.linkedid in self._calls or any(c.uniqueid in self._channels for c in snap.channels):
                continue
            call = call_from(snap)
            for key in (call.linkedid, *call.aliases):
                self._calls[key] = call
            self._channels.update(call.channels)
            n += 1
        return n

    def vanished(self, live: Iterable[str]) -> list[CallSnapshot]:
        """The open calls none of whose channels is among the ``live`` Uniqueids: they ended while
        nobody listened (the pipeline looks up how, then passes that to ``resync``)."""
        alive = set(live)
        calls = {id(c): c for c in self._calls.values()}.values()
        return [snapshot_of(c) for c in calls if c.channels and not alive & c.channels.keys()]

    def resync(
        self,
        live: Iterable[LiveChannel],
        now: float,
        lost_at: float | None,
        facts: Mapping[str, EndFacts] | None = None,
    ) -> list[CallRecord]:
        """Reconcile with the channels Asterisk reports after a (re)connect or a start.

        Channels we knew that are gone hung up while we were not listening. A call all of whose
        channels are gone ends when ``facts`` (CDR, the recording's file) say, else at ``lost_at``;
        its END is marked reconstructed. Channels we did not know (the daemon started mid-call, or
        the call began while the link was down) are adopted, each call's first channel first.
        """
        out: list[CallRecord] = []
        facts = facts or {}
        live_by_id = {c.uniqueid: c for c in live}
        default_end = lost_at if lost_at is not None else now
        gone: dict[int, list[Channel]] = {}
        # Calls that ended here: what is left of them (the far leg of a call forwarded to a mobile,
        # still hanging up) is no new call to adopt.
        ended: set[str] = set()
        for uid, chan in self._channels.items():
            if uid not in live_by_id:
                gone.setdefault(id(chan.call), []).append(chan)
        for chans in gone.values():
            call = chans[0].call
            call.reconstructed = True
            end = default_end
            if len(chans) == len(call.channels):  # the whole call ended unseen
                end = self._apply_facts(call, facts.get(call.linkedid), default_end, out)
            for chan in chans:
                self._drop_channel(chan, end, CAUSE_UNKNOWN, out)
            if self._calls.get(call.linkedid) is not call:
                ended.update((call.linkedid, *call.aliases))
        # Adopt unknown channels: each call's first channel (Uniqueid == Linkedid) first, then by
        # age and Uniqueid sequence (ages have a one-second resolution).
        order = sorted(
            live_by_id.values(),
            key=lambda c: (c.uniqueid != c.linkedid, -c.age, uniqueid_order(c.uniqueid)),
        )
        for lc in order:
            if lc.uniqueid in self._channels or lc.linkedid in ended:
                continue
            ev = ChannelEvent(
                Kind.NEW,
                now - lc.age,
                lc.uniqueid,
                lc.linkedid,
                lc.channel,
                lc.state,
                lc.caller_num,
                lc.caller_name,
                lc.context,
                lc.did or lc.exten,
                connected_num=lc.connected_num,
            )
            self._on_new(ev, out, adopted=True)
            if lc.recording:
                file = lc.recording_file
                self._on_recording(
                    ChannelEvent(Kind.RECORDING, now, lc.uniqueid, lc.linkedid, recording_file=file), out
                )
        for lc in live_by_id.values():
            live_chan = self._channels.get(lc.uniqueid)
            if live_chan is None or lc.state != STATE_UP:
                continue
            if live_chan.call.answered_at is not None:
                self._resync_take_over(live_chan, out)
                continue
            call = live_chan.call
            if (call.direction is Direction.INBOUND and live_chan.role is Role.INTERNAL) or (
                call.direction is Direction.OUTBOUND and live_chan is call.trunk
            ):
                self._answer(call, live_chan.extension, max(now - lc.age, call.started_at), out)
            elif (
                call.direction is Direction.INBOUND
                and live_chan.role is Role.TRUNK
                and live_chan is not call.trunk
            ):
                number = self._forward_number(live_chan)
                self._answer_forwarded(call, number, max(now - lc.age, call.started_at), out)
        return out

    def _apply_facts(
        self, call: Call, f: EndFacts | None, default_end: float, out: list[CallRecord]
    ) -> float:
        """What the CDR or the recording says about a call that ended unseen; returns its end."""
        if f is None:
            return default_end
        if call.direction is Direction.INBOUND:
            for ext in (*f.rung, f.answered_by):
                if ext and ext not in call.rung:
                    self._ring(call, ext, out)
        if call.answered_at is None and f.forwarded_to and not f.answered_by and f.answered_at is not None:
            self._answer_forwarded(call, f.forwarded_to, max(f.answered_at, call.started_at), out)
        if call.answered_at is None and (f.answered_by or f.answered_at is not None):
            at = f.answered_at if f.answered_at is not None else call.last_seen
            ext = f.answered_by or call.internal
            self._answer(call, ext, max(at, call.started_at), out)
        elif f.answered_by:
            self._take_over(call, f.answered_by, out)  # transferred while nobody listened
        if call.answered_at is None and f.disposition:
            call.end_disposition = f.disposition
        end = f.ended_at if f.ended_at is not None else default_end
        return max(end, call.answered_at or call.started_at)

    # -- classification ------------------------------------------------------------------------
    def _classify(self, name: str) -> tuple[Role, str]:
        return classify_channel(name, self.settings.trunk_endpoints, self._internal)

    def _num(self, number: str) -> str:
        return normalise(number, self.settings.country_code)

    def _time(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self._tz).strftime("%Y-%m-%d %H:%M:%S")

    # -- event handlers ------------------------------------------------------------------------
    def _on_new(self, ev: ChannelEvent, out: list[CallRecord], adopted: bool = False) -> None:
        if ev.uniqueid in self._channels:
            return
        call = self._calls.get(ev.linkedid)
        if call is None:
            call = Call(ev.linkedid, ev.ts, ev.ts, self._time(ev.ts), reconstructed=adopted)
            self._calls[ev.linkedid] = call
        call.last_seen = ev.ts
        self._mark(call)
        role, ext = self._classify(ev.channel)
        chan = Channel(
            ev.uniqueid, ev.channel, role, ext, call, ev.caller_num, ev.exten, connected_num=ev.connected_num
        )
        self._channels[ev.uniqueid] = chan
        first = not call.channels
        call.channels[ev.uniqueid] = chan
        call.members.append(ev.uniqueid)
        if not first:
            if adopted and role is Role.TRUNK and call.direction is Direction.UNKNOWN:
                self._start_outbound(call, chan, ev.caller_num, ev.ts, out)
            elif (
                adopted
                and role is Role.INTERNAL
                and call.direction is Direction.INBOUND
                and ext not in call.rung
            ):
                self._ring(call, ext, out)  # an employee's phone ringing (or talking) in an adopted call
            elif adopted and role is Role.OTHER and call.direction is Direction.INBOUND:
                self._adopt_member(call, ev.channel, out)
            return
        if role is Role.TRUNK and adopted and ev.uniqueid != ev.linkedid:
            # The trunk leg of a call whose first channel is gone (an outbound call whose employee
            # hung up while nobody listened): not an inbound call; the CDR backfill reports it.
            pass
        elif role is Role.TRUNK:
            call.direction = Direction.INBOUND
            call.trunk = chan
            call.caller_id = self._num(ev.caller_num)
            call.caller_name = _name(ev.caller_name)
            did = ev.exten if ev.exten and ev.exten[0].isdigit() else self.settings.default_did
            call.called_did = self._num(did)
            out.append(record(call, Event.START))
        elif role is Role.INTERNAL:
            call.root_internal = ext

    def _on_state(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        self._touch(ev)  # answers are taken from DialEnd, which names who answered whom

    def _on_callerid(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is not None:
            chan.caller_num = ev.caller_num
            self._connected_line(chan, ev.connected_num)

    def _on_dial_begin(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        dest = self._channels.get(ev.dest_uniqueid)
        if dest is None:
            return
        call = dest.call
        call.last_seen = ev.ts
        self._mark(call)
        if dest.role is Role.INTERNAL:
            if call.direction is Direction.INBOUND and dest.extension not in call.rung:
                self._ring(call, dest.extension, out)
        elif dest.role is Role.TRUNK and call.direction is Direction.UNKNOWN:
            number = dial_target(ev.dial_string)
            caller = self._channels.get(ev.uniqueid)
            number = number or ev.exten or (caller.exten if caller else "")
            self._start_outbound(call, dest, number, ev.ts, out)
        elif dest.role is Role.TRUNK and call.direction is Direction.INBOUND and dest is not call.trunk:
            self._forward_begins(dest, ev)

    def _adopt_member(self, call: Call, name: str, out: list[CallRecord]) -> None:
        """An adopted Local channel of a ring group or queue member: that employee's phone rang,
        even when its own channel is gone (a colleague picked the call up while nobody listened)."""
        ext = local_member(name, self._internal)
        if ext and ext not in call.rung:
            self._ring(call, ext, out)

    def _ring(self, call: Call, extension: str, out: list[CallRecord]) -> None:
        call.rung.append(extension)
        call.internal = call.internal or extension
        out.append(record(call, Event.INTERNAL, internal=extension))

    def _start_outbound(
        self, call: Call, trunk: Channel, number: str, ts: float, out: list[CallRecord]
    ) -> None:
        call.direction = Direction.OUTBOUND
        call.trunk = trunk
        call.destination = self._num(number)
        call.caller_id = self._outbound_caller_id(call)
        root = next(iter(call.channels.values()))
        call.internal = call.root_internal or (
            root.caller_num if self._internal.match(root.caller_num) else ""
        )
        out.append(record(call, Event.OUT_START))

    def _on_dial_end(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        dest = self._channels.get(ev.dest_uniqueid)
        if dest is None:
            return
        self._follow_pickup(ev, dest, out)
        call = dest.call
        call.last_seen = ev.ts
        self._mark(call)
        status = ev.dial_status
        if (
            call.direction is Direction.INBOUND
            and call.trunk is not None
            and ev.uniqueid == call.trunk.uniqueid
        ):
            call.outer_results.append(status)
            if status == "ANSWER" and dest.role is Role.OTHER:
                self._forward_connected(call, ev.ts, out)
        if call.direction is Direction.INBOUND and dest.role is Role.TRUNK and dest is not call.trunk:
            self._forward_ends(call, dest, ev, out)
            return
        relevant = (call.direction is Direction.INBOUND and dest.role is Role.INTERNAL) or (
            call.direction is Direction.OUTBOUND and dest is call.trunk
        )
        if not relevant:
            return
        if status == "ANSWER":
            self._answer(call, dest.extension, ev.ts, out)
        else:
            call.dial_results.append(status)

    def _answer(self, call: Call, extension: str, ts: float, out: list[CallRecord]) -> None:
        if call.answered_at is not None:
            self._take_over(call, extension, out)
            return
        call.answered_at = ts
        if call.direction is Direction.INBOUND:
            call.internal = extension
            out.append(record(call, Event.ANSWER, destination=extension))
        else:
            out.append(record(call, Event.ANSWER, destination=call.destination))

    def _on_bridge(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is None or not ev.linkedid or ev.linkedid == chan.call.linkedid:
            return
        # The Linkedid changed (a transfer merged two calls): follow the channel to its new call,
        # or let the new Linkedid name the channel's current call.
        target = self._calls.get(ev.linkedid)
        if target is None:
            self._calls[ev.linkedid] = chan.call
            chan.call.aliases.append(ev.linkedid)
        elif target is not chan.call:
            self._move(chan, target, ev.ts, out)

    def _move(self, chan: Channel, target: Call, ts: float, out: list[CallRecord]) -> None:
        """``chan`` now belongs to ``target``; the call it leaves ends when it was the last one."""
        old = chan.call
        del old.channels[chan.uniqueid]
        chan.call = target
        target.channels[chan.uniqueid] = chan
        target.members.append(chan.uniqueid)
        self._mark(target)
        if not old.channels:
            self._finish(old, ts, out)

    def _on_recording(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is not None and ev.recording_file:
            chan.call.files.setdefault(chan.uniqueid, ev.recording_file)
        if chan is not None and not chan.recording:
            chan.recording = True
            chan.call.recorded.append(chan.uniqueid)

    def _on_hangup_request(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is None:
            return
        call = chan.call
        call.requests_seen = True
        if (
            ev.kind is Kind.HANGUP_REQUEST
            and chan is call.trunk
            and call.direction is Direction.INBOUND
            and call.answered_at is None
            and not _pbx_refused(call, ev.cause)
            and not (ev.state == STATE_UP and _pbx_gave_up(call))
        ):
            call.caller_hung_up = True  # the caller's own side hung up while it rang

    def _on_hangup(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._channels.get(ev.uniqueid)
        if chan is not None:
            self._drop_channel(chan, ev.ts, ev.cause, out)

    # -- lifecycle -----------------------------------------------------------------------------
    def _mark(self, call: Call) -> None:
        if self._dirty is not None:
            self._dirty[call.linkedid] = call

    def _touch(self, ev: ChannelEvent) -> Channel | None:
        chan = self._channels.get(ev.uniqueid)
        if chan is not None:
            chan.call.last_seen = ev.ts
            if self._dirty is not None:
                self._dirty[chan.call.linkedid] = chan.call
        return chan

    def _drop_channel(self, chan: Channel, ts: float, cause: int, out: list[CallRecord]) -> None:
        del self._channels[chan.uniqueid]
        call = chan.call
        call.channels.pop(chan.uniqueid, None)
        call.last_seen = ts
        self._mark(call)
        chan.cause = cause
        if chan.uniqueid == call.linkedid:
            call.root_cause = cause
        if chan is call.trunk and call.ended_at is None:
            call.ended_at = ts
        if not call.channels:
            self._finish(call, ts, out)

    def _finish(self, call: Call, ts: float, out: list[CallRecord]) -> None:
        for key in (call.linkedid, *call.aliases):
            if self._calls.get(key) is call:
                del self._calls[key]
        if self._dirty is not None:
            self._dirty.pop(call.linkedid, None)
            reported = call.direction is not Direction.UNKNOWN
            self._ended.append(
                EndedCall(call.linkedid, (call.linkedid, *call.aliases, *call.members), reported)
            )
        try:
            if call.direction is not Direction.UNKNOWN:  # internal-only calls are not reported
                out.extend(end_records(call, ts))
        finally:
            # Channel.call <-> Call.trunk is a reference cycle: break it so the call is freed now,
            # by reference counting, not whenever the cyclic GC next runs (bench: flat memory).
            call.trunk = None


def _pbx_refused(call: Call, cause: int) -> bool:
    """The HangupRequest on the caller's channel is the PBX's own refusal, not the caller: after
    the ringing ended (NOANSWER, BUSY, ...) FreePBX plays Busy()/Congestion(), which chan_pjsip
    answers with 486/503 and then requests the hangup itself, with that cause (17 / 34)."""
    return cause in PBX_REFUSAL_CAUSES and _pbx_gave_up(call)


def _pbx_gave_up(call: Call) -> bool:
    """A Dial/Queue of the call's own channel ended unanswered (no answer, busy...). When the PBX
    then answered the caller itself (voicemail, an announcement: the caller's channel is Up), the
    caller hanging up there did not cancel a ringing call: the ringing had already ended."""
    return any(status in PBX_GAVE_UP for status in call.outer_results)


def _name(caller_name: str) -> str:
    return "" if caller_name in ("", "<unknown>") else caller_name
