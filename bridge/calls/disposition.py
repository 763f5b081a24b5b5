"""Novofon's disposition of a finished call: decided from who ended the ringing.

``cancel`` is the caller hanging up while it rang; the PBX giving up (a Dial or Queue timeout,
then voicemail or a hang-up) is ``no answer``. Which channel hung up last says nothing about that:
when a Local ring group's outer Dial times out, its inner legs end with CANCEL; when a Queue times
out, Asterisk even reports QueueCallerAbandon. What does tell:

1. a HangupRequest on the caller's own channel before anyone answered: its far end (the caller)
   hung up: ``cancel``;
2. otherwise, when (Soft)HangupRequest events reach us at all, the caller did not hang up: the
   ring ended by the PBX, and the dials of the caller's own channel (the outer Dial/Queue) say
   why: NOANSWER -> ``no answer``, BUSY -> ``busy``, ...;
3. with an older manager.conf that filters those events out: the outer dials alone, where a CANCEL
   that follows a NOANSWER is a Queue cleaning up after its timeout, not the caller.
"""

from __future__ import annotations

from bridge.calls.model import Call, Direction
from bridge.calls.records import Disposition

# Asterisk hangup causes with a Novofon disposition of their own.
CAUSE_DISPOSITION = {1: Disposition.UNALLOCATED, 17: Disposition.BUSY, 3: Disposition.UNALLOCATED}
# Dial() results of an unanswered attempt.
DIAL_DISPOSITION = {
    "CANCEL": Disposition.CANCEL,
    "NOANSWER": Disposition.NO_ANSWER,
    "BUSY": Disposition.BUSY,
    "CONGESTION": Disposition.FAILED,
    "CHANUNAVAIL": Disposition.FAILED,
}
PBX_GAVE_UP = ("NOANSWER", "BUSY", "CONGESTION", "CHANUNAVAIL")


def disposition(call: Call, cause: int) -> Disposition:
    if call.answered_at is not None:
        return Disposition.ANSWERED
    if call.end_disposition:
        return Disposition(call.end_disposition)
    if call.direction is Direction.OUTBOUND:
        results = call.dial_results
        if cause in CAUSE_DISPOSITION:
            return CAUSE_DISPOSITION[cause]
        return DIAL_DISPOSITION.get(results[-1], Disposition.FAILED) if results else Disposition.CANCEL
    return _inbound(call)


def _inbound(call: Call) -> Disposition:
    if call.caller_hung_up:
        return Disposition.CANCEL
    results = call.outer_results or call.dial_results
    if call.requests_seen:
        for status in PBX_GAVE_UP:
            if status in results:
                return DIAL_DISPOSITION[status]
        return Disposition.NO_ANSWER
    # No (Soft)HangupRequest events: an older manager.conf. The outer dials decide.
    if "NOANSWER" in results:
        return Disposition.NO_ANSWER
    for status in DIAL_DISPOSITION:
        if status in results:
            return DIAL_DISPOSITION[status]
    return Disposition.CANCEL
