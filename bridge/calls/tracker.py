"""The call tracker: channel events in, Novofon call records out. Pure: no I/O, no clock.

A call is every channel that shares a Linkedid (the Uniqueid of the call's first channel). The
first channel decides the direction: a trunk channel that starts a call is an inbound call; a call
whose channels dial the trunk is outbound; a call that never touches the trunk is internal-only
and produces no records (Novofon does not report those either).

State lives in two dicts (channels by Uniqueid, calls by Linkedid). A call is dropped as soon as
its last channel hangs up; ``sweep`` closes calls whose Hangup never came (a lost event) and
``resync`` reconciles with the list of live channels after an AMI reconnect.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.calls.events import ChannelEvent, Kind, LiveChannel
from bridge.calls.numbers import normalise
from bridge.calls.records import CallRecord, Disposition, Event, make

STATE_UP = 6
CAUSE_UNKNOWN = 0
CAUSE_ANSWERED_ELSEWHERE = 26

# Asterisk hangup causes with a Novofon disposition of their own.
_CAUSE_DISPOSITION = {1: Disposition.UNALLOCATED, 17: Disposition.BUSY, 3: Disposition.UNALLOCATED}
# Dial() results of an unanswered attempt, in the order that explains a missed call best.
_DIAL_DISPOSITION = {
    "CANCEL": Disposition.CANCEL,
    "NOANSWER": Disposition.NO_ANSWER,
    "BUSY": Disposition.BUSY,
    "CONGESTION": Disposition.FAILED,
    "CHANUNAVAIL": Disposition.FAILED,
}


@dataclass(frozen=True)
class TrackerSettings:
    trunk_endpoints: frozenset[str] = frozenset({"novofon"})
    internal_pattern: str = r"^[1-9][0-9]{1,3}$"
    timezone: str = "Europe/Moscow"
    country_code: str = "7"
    default_did: str = ""
    max_call_age: float = 4 * 3600.0


class Direction(enum.Enum):
    UNKNOWN = "unknown"  # not decided yet (an internal phone picked up the receiver)
    INBOUND = "in"
    OUTBOUND = "out"


class Role(enum.Enum):
    TRUNK = "trunk"
    INTERNAL = "internal"
    OTHER = "other"  # Local/ channels, anything else


@dataclass(slots=True)
class Channel:
    uniqueid: str
    name: str
    role: Role
    extension: str  # for internal phones: the extension number, else ""
    call: Call
    caller_num: str = ""
    exten: str = ""
    recording: bool = False
    cause: int | None = None


@dataclass(slots=True)
class Call:
    linkedid: str
    started_at: float
    last_seen: float
    call_start: str  # started_at formatted for the records, computed once
    direction: Direction = Direction.UNKNOWN
    caller_id: str = ""
    caller_name: str = ""
    called_did: str = ""
    destination: str = ""
    internal: str = ""
    answered_at: float | None = None
    ended_at: float | None = None
    rung: list[str] = field(default_factory=list)
    dial_results: list[str] = field(default_factory=list)
    trunk: Channel | None = None  # the trunk leg: the caller (inbound) or the callee (outbound)
    root_internal: str = ""  # extension whose phone started the call, if any
    channels: dict[str, Channel] = field(default_factory=dict)
    recorded: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # other Linkedids naming this call (transfers)
    root_cause: int = CAUSE_UNKNOWN  # hangup cause of the call's first channel
    reconstructed: bool = False

    @property
    def pbx_call_id(self) -> str:
        return f"{self.direction.value}_{self.linkedid}"


class Tracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = s = settings or TrackerSettings()
        self._internal = re.compile(s.internal_pattern)
        self._tz = ZoneInfo(s.timezone)
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}
        self._handlers = {
            Kind.NEW: self._on_new,
            Kind.STATE: self._on_state,
            Kind.CALLERID: self._on_callerid,
            Kind.DIAL_BEGIN: self._on_dial_begin,
            Kind.DIAL_END: self._on_dial_end,
            Kind.BRIDGE: self._on_bridge,
            Kind.RECORDING: self._on_recording,
            Kind.HANGUP: self._on_hangup,
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

    def resync(self, live: Iterable[LiveChannel], now: float, lost_at: float | None) -> list[CallRecord]:
        """Reconcile with the channels Asterisk reports after a (re)connect.

        Channels we knew that are gone hung up while we were not listening: they are closed at
        ``lost_at`` with an unknown cause, and their calls' END records are marked reconstructed.
        Channels we did not know (the daemon started mid-call) are adopted.
        """
        out: list[CallRecord] = []
        live_by_id = {c.uniqueid: c for c in live}
        ended_at = lost_at if lost_at is not None else now
        for chan in [c for uid, c in self._channels.items() if uid not in live_by_id]:
            chan.call.reconstructed = True
            self._drop_channel(chan, ended_at, CAUSE_UNKNOWN, out)
        # Adopt unknown channels, oldest first so that each call's first channel comes first.
        for lc in sorted(live_by_id.values(), key=lambda c: -c.age):
            if lc.uniqueid in self._channels:
                continue
            ts = now - lc.age
            self._on_new(
                ChannelEvent(
                    Kind.NEW,
                    ts,
                    lc.uniqueid,
                    lc.linkedid,
                    lc.channel,
                    lc.state,
                    lc.caller_num,
                    lc.caller_name,
                    lc.context,
                    lc.exten,
                ),
                out,
                adopted=True,
            )
            if lc.recording:
                self._on_recording(ChannelEvent(Kind.RECORDING, now, lc.uniqueid, lc.linkedid), out)
        for lc in live_by_id.values():
            live_chan = self._channels.get(lc.uniqueid)
            if live_chan is None or lc.state != STATE_UP or live_chan.call.answered_at is not None:
                continue
            call = live_chan.call
            if (call.direction is Direction.INBOUND and live_chan.role is Role.INTERNAL) or (
                call.direction is Direction.OUTBOUND and live_chan is call.trunk
            ):
                self._answer(call, live_chan, now - lc.age, out)
        return out

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
        role, ext = self._classify(ev.channel)
        chan = Channel(ev.uniqueid, ev.channel, role, ext, call, ev.caller_num, ev.exten)
        self._channels[ev.uniqueid] = chan
        first = not call.channels
        call.channels[ev.uniqueid] = chan
        if not first:
            if adopted and role is Role.TRUNK and call.direction is not Direction.INBOUND:
                self._start_outbound(call, chan, ev.caller_num, ev.ts, out)
            return
        if role is Role.TRUNK:
            call.direction = Direction.INBOUND
            call.trunk = chan
            call.caller_id = self._num(ev.caller_num)
            call.caller_name = _name(ev.caller_name)
            did = ev.exten if ev.exten and ev.exten[0].isdigit() else self.settings.default_did
            call.called_did = self._num(did)
            out.append(self._record(call, Event.START))
        elif role is Role.INTERNAL:
            call.root_internal = ext

    def _on_state(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        self._touch(ev)  # answers are taken from DialEnd, which names who answered whom

    def _on_callerid(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is not None:
            chan.caller_num = ev.caller_num

    def _on_dial_begin(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        dest = self._channels.get(ev.dest_uniqueid)
        if dest is None:
            return
        call = dest.call
        call.last_seen = ev.ts
        if dest.role is Role.INTERNAL:
            if call.direction is Direction.INBOUND and dest.extension not in call.rung:
                call.rung.append(dest.extension)
                call.internal = call.internal or dest.extension
                out.append(self._record(call, Event.INTERNAL, internal=dest.extension))
        elif dest.role is Role.TRUNK and call.direction is Direction.UNKNOWN:
            number = ev.dial_string.partition("@")[0] if "@" in ev.dial_string else ""
            caller = self._channels.get(ev.uniqueid)
            number = number or ev.exten or (caller.exten if caller else "")
            self._start_outbound(call, dest, number, ev.ts, out)

    def _start_outbound(
        self, call: Call, trunk: Channel, number: str, ts: float, out: list[CallRecord]
    ) -> None:
        call.direction = Direction.OUTBOUND
        call.trunk = trunk
        call.destination = self._num(number)
        root = next(iter(call.channels.values()))
        call.internal = call.root_internal or (
            root.caller_num if self._internal.match(root.caller_num) else ""
        )
        out.append(self._record(call, Event.OUT_START))

    def _on_dial_end(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        dest = self._channels.get(ev.dest_uniqueid)
        if dest is None:
            return
        call = dest.call
        call.last_seen = ev.ts
        status = ev.dial_status
        relevant = (call.direction is Direction.INBOUND and dest.role is Role.INTERNAL) or (
            call.direction is Direction.OUTBOUND and dest is call.trunk
        )
        if not relevant:
            return
        if status == "ANSWER":
            self._answer(call, dest, ev.ts, out)
        else:
            call.dial_results.append(status)

    def _answer(self, call: Call, dest: Channel, ts: float, out: list[CallRecord]) -> None:
        if call.answered_at is not None:
            return
        call.answered_at = ts
        if call.direction is Direction.INBOUND:
            call.internal = dest.extension
            out.append(self._record(call, Event.ANSWER, destination=dest.extension))
        else:
            out.append(
                self._record(call, Event.ANSWER, caller_id=call.internal, destination=call.destination)
            )

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
            old = chan.call
            del old.channels[chan.uniqueid]
            chan.call = target
            target.channels[chan.uniqueid] = chan
            if not old.channels:
                self._finish(old, ev.ts, out)

    def _on_recording(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._touch(ev)
        if chan is not None and not chan.recording:
            chan.recording = True
            chan.call.recorded.append(chan.uniqueid)

    def _on_hangup(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        chan = self._channels.get(ev.uniqueid)
        if chan is not None:
            self._drop_channel(chan, ev.ts, ev.cause, out)

    # -- lifecycle -----------------------------------------------------------------------------
    def _touch(self, ev: ChannelEvent) -> Channel | None:
        chan = self._channels.get(ev.uniqueid)
        if chan is not None:
            chan.call.last_seen = ev.ts
        return chan

    def _drop_channel(self, chan: Channel, ts: float, cause: int, out: list[CallRecord]) -> None:
        del self._channels[chan.uniqueid]
        call = chan.call
        call.channels.pop(chan.uniqueid, None)
        call.last_seen = ts
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
        try:
            if call.direction is not Direction.UNKNOWN:  # internal-only calls are not reported
                self._report_end(call, ts, out)
        finally:
            # Channel.call <-> Call.trunk is a reference cycle: break it so the call is freed now,
            # by reference counting, not whenever the cyclic GC next runs (bench: flat memory).
            call.trunk = None

    def _report_end(self, call: Call, ts: float, out: list[CallRecord]) -> None:
        end = call.ended_at or ts
        duration = round(end - call.answered_at) if call.answered_at is not None else 0
        # The trunk leg's cause is what the network said; when Asterisk itself cancelled that leg
        # (Dial timeout: cause 0) the first channel's cause (the dialplan's Hangup(19)) tells why.
        cause = (call.trunk.cause if call.trunk else None) or call.root_cause
        rec_id = call.recorded[0] if call.recorded and call.answered_at is not None else ""
        values = {
            "duration": str(max(0, duration)),
            "disposition": self._disposition(call, cause).value,
            "status_code": str(cause),
            "is_recorded": "1" if rec_id else "0",
            "call_id_with_rec": rec_id,
        }
        if call.direction is Direction.INBOUND:
            out.append(self._record(call, Event.END, **values))
        else:
            out.append(self._record(call, Event.OUT_END, caller_id=call.internal, **values))
        if rec_id:
            out.append(self._record(call, Event.RECORD, call_id_with_rec=rec_id))

    def _disposition(self, call: Call, cause: int) -> Disposition:
        if call.answered_at is not None:
            return Disposition.ANSWERED
        results = call.dial_results
        if call.direction is Direction.OUTBOUND:
            if cause in _CAUSE_DISPOSITION:
                return _CAUSE_DISPOSITION[cause]
            return _DIAL_DISPOSITION.get(results[-1], Disposition.FAILED) if results else Disposition.CANCEL
        for status in _DIAL_DISPOSITION:  # CANCEL first: the caller gave up before anyone answered
            if status in results:
                return _DIAL_DISPOSITION[status]
        return Disposition.CANCEL

    def _record(self, call: Call, event: Event, **extra: str) -> CallRecord:
        values = {
            "call_start": call.call_start,
            "pbx_call_id": call.pbx_call_id,
            "caller_id": call.caller_id,
            "called_did": call.called_did,
            "internal": call.internal,
            "destination": call.destination,
        }
        values.update(extra)
        meta = {"direction": call.direction.value}
        if call.caller_name:
            meta["caller_name"] = call.caller_name
        if call.reconstructed:
            meta["reconstructed"] = "1"
        return make(event, values, meta)


def classify_channel(name: str, trunks: frozenset[str], internal: re.Pattern[str]) -> tuple[Role, str]:
    """Role of a channel from its name ("PJSIP/novofon-0000002a" -> trunk); extension if internal."""
    tech, _, rest = name.partition("/")
    if tech != "PJSIP":
        return Role.OTHER, ""
    endpoint = rest.rpartition("-")[0] or rest
    if endpoint in trunks:
        return Role.TRUNK, ""
    if internal.match(endpoint):
        return Role.INTERNAL, endpoint
    return Role.OTHER, ""


def _name(caller_name: str) -> str:
    return "" if caller_name in ("", "<unknown>") else caller_name
