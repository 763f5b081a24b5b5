"""Channel events: what the tracker consumes, independent of the wire protocol that carried them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    NEW = "new"  # a channel appeared
    STATE = "state"  # channel state changed (Ringing, Up, ...)
    CALLERID = "callerid"  # the channel's caller number/name changed
    DIAL_BEGIN = "dial_begin"  # channel `uniqueid` started dialling `dest_uniqueid`
    DIAL_END = "dial_end"  # ... and that attempt ended with `dial_status`
    BRIDGE = "bridge"  # channel entered a bridge (its linkedid may have changed: transfers)
    TRANSFER = "transfer"  # an attended transfer joined channel `uniqueid` with `dest_uniqueid`
    RECORDING = "recording"  # MixMonitor started on the channel (``recording_file``: its file, when known)
    HANGUP = "hangup"  # the channel is gone, with `cause`
    HANGUP_REQUEST = "hangup_request"  # the channel's far end asked to hang up (a caller's BYE/CANCEL)
    SOFT_HANGUP_REQUEST = "soft_hangup_request"  # Asterisk itself hangs it up (dialplan, Dial, Queue)


@dataclass(frozen=True)
class ChannelEvent:
    kind: Kind
    ts: float  # Unix time from Asterisk's own clock ("Timestamp:" header)
    uniqueid: str
    linkedid: str
    channel: str = ""
    state: int = 0  # Asterisk channel state: 4 Ring, 5 Ringing, 6 Up
    caller_num: str = ""
    caller_name: str = ""
    context: str = ""
    exten: str = ""
    cause: int = 0
    dest_uniqueid: str = ""
    dest_channel: str = ""
    dial_status: str = ""
    dial_string: str = ""
    # The channel's connected line: on an outgoing trunk leg, the caller ID it presents to the
    # called party (what the dialplan set in CALLERID(num) before Dial).
    connected_num: str = ""
    recording_file: str = ""  # RECORDING: the file MixMonitor writes, as Asterisk names it


@dataclass(frozen=True, slots=True)
class LiveChannel:
    """A channel as listed by a resync (CoreShowChannels) after a reconnect."""

    uniqueid: str
    linkedid: str
    channel: str
    state: int
    caller_num: str
    caller_name: str
    context: str
    exten: str
    age: float  # seconds since the channel was created
    bridged: bool
    recording: bool = False  # MixMonitor is running on it (its MIXMONITOR_FILENAME is set)
    did: str = ""  # the number the caller dialled (CALLERID(dnid)), read for an adopted trunk channel
    connected_num: str = ""  # the channel's connected line number (ConnectedLineNum)
    recording_file: str = ""  # the value of its MIXMONITOR_FILENAME, read for an adopted channel
