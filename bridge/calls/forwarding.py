"""Calls that leave the office through the trunk: an inbound call forwarded to an outside number
(follow-me, forwarding to a mobile) stays one inbound call answered by that number; an outbound
call's caller ID is what its trunk leg presents. A mixin of the Tracker (same state, same rules:
pure, no I/O), kept apart so that the tracker's core stays short.
"""

from __future__ import annotations

import re

from bridge.calls.events import ChannelEvent
from bridge.calls.model import Call, Channel, Direction
from bridge.calls.numbers import is_ascii_digits
from bridge.calls.outside import dialled_number, outbound_caller_id
from bridge.calls.records import CallRecord, Event
from bridge.calls.report import record
from bridge.calls.settings import TrackerSettings


class Forwarding:
    settings: TrackerSettings
    _internal: re.Pattern[str]

    def _forward_begins(self, dest: Channel, ev: ChannelEvent) -> None:
        """An inbound call dials out through the trunk (follow-me, forwarding to a mobile): still
        the same inbound call; remember the number that leg dials."""
        dest.exten = dialled_number(ev.dial_string, dest.caller_num, self.settings.country_code)

    def _forward_ends(self, call: Call, dest: Channel, ev: ChannelEvent, out: list[CallRecord]) -> None:
        if ev.dial_status != "ANSWER":
            call.dial_results.append(ev.dial_status)
        elif call.trunk is not None and ev.uniqueid == call.trunk.uniqueid:
            self._answer_forwarded(call, self._forward_number(dest), ev.ts, out)  # the caller dialled it
        else:
            # Dialled through a Local channel (follow-me, a ring group's outside number): the number
            # picked up, but the caller talks to it only once the caller's own Dial says ANSWER.
            # FreePBX's "Confirm Calls" asks the mobile to press 1 first: a mobile's own voicemail
            # that picks up and never confirms is no answer.
            dest.answered = True

    def _forward_connected(self, call: Call, ts: float, out: list[CallRecord]) -> None:
        """The caller's own Dial of a Local channel answered: the outside number that picked up (if
        that is what answered, not an office phone) answered the call now."""
        leg = next((c for c in call.channels.values() if c.answered), None)
        if leg is not None:
            self._answer_forwarded(call, self._forward_number(leg), ts, out)

    def _forward_number(self, dest: Channel) -> str:
        if is_ascii_digits(dest.exten):  # what _forward_begins found
            return dest.exten
        return dialled_number("", dest.caller_num, self.settings.country_code)  # an adopted leg

    def _answer_forwarded(self, call: Call, number: str, ts: float, out: list[CallRecord]) -> None:
        """Answered by the outside number: ANSWER names it in ``destination``; ``internal`` stays the
        employee whose phone rang before (if any): whose forwarding it is."""
        if call.answered_at is not None:
            return
        call.answered_at = ts
        out.append(record(call, Event.ANSWER, destination=number))

    def _connected_line(self, chan: Channel, number: str) -> None:
        """A channel's connected line changed; on an outbound call's trunk leg that is the caller ID
        the called party sees (the dialplan's CALLERID(num) before Dial)."""
        if not number or number == chan.connected_num:
            return
        chan.connected_num = number
        call = chan.call
        if call.direction is Direction.OUTBOUND and chan is call.trunk:
            call.caller_id = self._outbound_caller_id(call)

    def _outbound_caller_id(self, call: Call) -> str:
        s, presented = self.settings, call.trunk.connected_num if call.trunk else ""
        return outbound_caller_id(presented, call.destination, s.default_did, self._internal, s.country_code)
