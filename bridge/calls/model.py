"""The tracker's state: channels and calls, and what a channel's name says about its role."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from bridge.calls.snapshot import CallSnapshot, ChannelSnapshot

CAUSE_UNKNOWN = 0


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
    connected_num: str = ""  # ConnectedLineNum: what an outgoing trunk leg presents as its caller ID
    answered: bool = False  # a forwarded trunk leg the outside number picked up (see Tracker)


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
    dial_results: list[str] = field(default_factory=list)  # DialEnd statuses towards the callee side
    # DialEnd statuses of the dials the call's first channel made itself (the outer Dial or Queue):
    # a Local ring group's inner legs say CANCEL when the outer Dial gives up; the outer one knows.
    outer_results: list[str] = field(default_factory=list)
    caller_hung_up: bool = False  # the first channel got a HangupRequest from its far end
    requests_seen: bool = False  # (Soft)HangupRequest events reach us (manager.conf lets them through)
    trunk: Channel | None = None  # the trunk leg: the caller (inbound) or the callee (outbound)
    root_internal: str = ""  # extension whose phone started the call, if any
    channels: dict[str, Channel] = field(default_factory=dict)
    recorded: list[str] = field(default_factory=list)
    # Uniqueid of a recorded channel -> the file MixMonitor writes, as Asterisk named it
    files: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)  # other Linkedids naming this call (transfers)
    root_cause: int = CAUSE_UNKNOWN  # hangup cause of the call's first channel
    reconstructed: bool = False
    members: list[str] = field(default_factory=list)  # Uniqueid of every channel the call ever had
    end_disposition: str = ""  # what the CDR says about an unanswered call that ended unseen

    @property
    def pbx_call_id(self) -> str:
        return f"{self.direction.value}_{self.linkedid}"


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


def local_member(name: str, internal: re.Pattern[str]) -> str:
    """The extension a Local channel rings, when its name says so: a ring group's or a queue's
    member (FreePBX: ``Local/103@from-ring-group-0000001a;1``, ``Local/103@from-queue-…;2``, a
    call forward's ``Local/102@from-internal-…``); "" for any other channel."""
    tech, _, rest = name.partition("/")
    exten, at, _ = rest.partition("@")
    return exten if tech == "Local" and at and internal.match(exten) else ""


def uniqueid_order(uniqueid: str) -> tuple[float, int]:
    """Creation order of Asterisk Uniqueids ("[system-]<epoch>.<sequence>"), finer than a channel's
    age in whole seconds; unknown shapes sort last."""
    stamp = uniqueid.rpartition("-")[2]
    secs, _, seq = stamp.partition(".")
    try:
        return float(secs), int(seq or 0)
    except ValueError:
        return float("inf"), 0


def snapshot_of(call: Call) -> CallSnapshot:
    return CallSnapshot(
        linkedid=call.linkedid,
        started_at=call.started_at,
        last_seen=call.last_seen,
        call_start=call.call_start,
        direction=call.direction.value,
        caller_id=call.caller_id,
        caller_name=call.caller_name,
        called_did=call.called_did,
        destination=call.destination,
        internal=call.internal,
        root_internal=call.root_internal,
        answered_at=call.answered_at,
        rung=tuple(call.rung),
        dial_results=tuple(call.dial_results),
        outer_results=tuple(call.outer_results),
        caller_hung_up=call.caller_hung_up,
        requests_seen=call.requests_seen,
        recorded=tuple(call.recorded),
        files=tuple(call.files.items()),
        aliases=tuple(call.aliases),
        reconstructed=call.reconstructed,
        trunk=call.trunk.uniqueid if call.trunk else "",
        members=tuple(call.members),
        channels=tuple(
            ChannelSnapshot(
                c.uniqueid,
                c.name,
                c.role.value,
                c.extension,
                c.caller_num,
                c.exten,
                c.recording,
                c.connected_num,
                c.answered,
            )
            for c in call.channels.values()
        ),
    )


def call_from(snap: CallSnapshot) -> Call:
    call = Call(
        snap.linkedid,
        snap.started_at,
        snap.last_seen,
        snap.call_start,
        direction=Direction(snap.direction),
        caller_id=snap.caller_id,
        caller_name=snap.caller_name,
        called_did=snap.called_did,
        destination=snap.destination,
        internal=snap.internal,
        root_internal=snap.root_internal,
        answered_at=snap.answered_at,
        rung=list(snap.rung),
        dial_results=list(snap.dial_results),
        outer_results=list(snap.outer_results),
        caller_hung_up=snap.caller_hung_up,
        requests_seen=snap.requests_seen,
        recorded=list(snap.recorded),
        files=dict(snap.files),
        aliases=list(snap.aliases),
        reconstructed=snap.reconstructed,
        members=list(snap.members),
    )
    for c in snap.channels:
        chan = Channel(
            c.uniqueid,
            c.name,
            Role(c.role),
            c.extension,
            call,
            c.caller_num,
            c.exten,
            c.recording,
            connected_num=c.connected_num,
            answered=c.answered,
        )
        call.channels[c.uniqueid] = chan
        if c.uniqueid == snap.trunk:
            call.trunk = chan
    return call
