"""Replay AMI transcripts recorded from the real lab (tests/transcripts/*.ami) through our parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bridge.calls.events import ChannelEvent
from bridge.calls.records import CallRecord
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.pbx.ami_events import to_channel_event
from bridge.pbx.ami_protocol import AmiMessage, Framer, parse_message

DIR = Path(__file__).resolve().parent / "transcripts"
NAMES = sorted(p.stem for p in DIR.glob("*.ami"))


def raw(name: str) -> bytes:
    return (DIR / f"{name}.ami").read_bytes()


def messages(data: bytes, chunk: int | None = None) -> Iterator[AmiMessage]:
    framer = Framer()
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        for block in framer.feed(data[i : i + step]):
            yield parse_message(block)


def events(name: str, chunk: int | None = None) -> list[ChannelEvent]:
    out = []
    for msg in messages(raw(name), chunk):
        ev = to_channel_event(msg, 0.0)
        if ev is not None:
            out.append(ev)
    return out


def replay(name: str, tracker: Tracker | None = None, chunk: int | None = None) -> list[CallRecord]:
    tracker = tracker or Tracker(TrackerSettings())
    records: list[CallRecord] = []
    for ev in events(name, chunk):
        records.extend(tracker.feed(ev))
    return records
