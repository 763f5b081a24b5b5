"""Who has an answered call now: transfers and pickups. A mixin of the Tracker (same state, same
rules: pure, no I/O), kept apart so that the tracker's core stays short.

Blind transfer (REFER to an extension): the caller's own channel dials the new employee, so
DialBegin/DialEnd of the same call tell it; the answer after the first one is a take-over.
Attended transfer (REFER with Replaces): the consultation's callee is joined to the caller;
its channel's Linkedid changes without an event, AttendedTransfer names both channels.
Pickup: Asterisk swaps the picking phone's channel into the ringing one (a masquerade), and
the Dial that rang reports its answer with the picking phone's Uniqueid, still in its own call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.calls.events import ChannelEvent
from bridge.calls.model import Call, Channel, Direction, Role
from bridge.calls.records import CallRecord, Event
from bridge.calls.report import record


class TakeOvers:
    _channels: dict[str, Channel]

    if TYPE_CHECKING:  # the Tracker's own bookkeeping

        def _touch(self, ev: ChannelEvent) -> Channel | None: ...
        def _move(self, chan: Channel, target: Call, ts: float, out: list[CallRecord]) -> None: ...
        def _ring(self, call: Call, extension: str, out: list[CallRecord]) -> None: ...
        def _mark(self, call: Call) -> None: ...

    def _on_transfer(self, ev: ChannelEvent, out: list[CallRecord]) -> None:
        target = self._touch(ev)
        transferee = self._channels.get(ev.dest_uniqueid)
        if target is None or transferee is None:
            return
        call = transferee.call
        if target.call is not call:
            if call.direction is Direction.UNKNOWN:  # the REFER came on the consultation's line
                target, transferee, call = transferee, target, target.call
            if call.direction is Direction.UNKNOWN or target.call.direction is not Direction.UNKNOWN:
                return  # two internal calls, or two reported ones: the Linkedids tell
            self._move(target, call, ev.ts, out)
        call.last_seen = ev.ts
        if call.answered_at is not None and target.role is Role.INTERNAL:
            self._take_over(call, target.extension, out)

    def _follow_pickup(self, ev: ChannelEvent, dest: Channel, out: list[CallRecord]) -> None:
        """A Dial's answer from a channel of an internal-only call is a pickup: that phone's call
        (its dialling of the pickup code) joins the call that rang."""
        caller = self._channels.get(ev.uniqueid)
        if (
            caller is not None
            and caller.call is not dest.call
            and caller.call.direction is not Direction.UNKNOWN
            and dest.call.direction is Direction.UNKNOWN
        ):
            self._move(dest, caller.call, ev.ts, out)

    def _resync_take_over(self, chan: Channel, out: list[CallRecord]) -> None:
        """After an outage: an employee's phone talks in an answered inbound call whose employee
        has no channel left in it: the call was transferred while nobody listened."""
        call = chan.call
        if chan.role is Role.INTERNAL and not any(
            c.extension == call.internal for c in call.channels.values()
        ):
            self._take_over(call, chan.extension, out)

    def _take_over(self, call: Call, extension: str, out: list[CallRecord]) -> None:
        """Another employee took over an answered inbound call (a transfer): INTERNAL when their
        phone never rang on it, ANSWER; the END names whoever has the call last."""
        if call.direction is not Direction.INBOUND or not extension or extension == call.internal:
            return
        if extension not in call.rung:
            self._ring(call, extension, out)
        call.internal = extension
        self._mark(call)  # the snapshot committed with this ANSWER names the new employee
        out.append(record(call, Event.ANSWER, destination=extension))
