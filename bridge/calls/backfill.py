"""Calls the bridge did not see live, rebuilt from Asterisk's own CDR. Pure: rows in, records out.

A CDR line is one party pair of a call (caller -> each phone a ring group rang, a Local channel's
inner Dial -> the phone, ...). cdr_csv has no Linkedid: lines are grouped by the caller's Uniqueid,
and a Local channel's inner half (``Local/…;2``) joins the line of the same moment whose callee is
its outer half (``Local/…;1``; the names restart with Asterisk). FreePBX's database has
``linkedid``, which is used when present.

The CDR does not say who ended an unanswered ring: a ring that lasted (nearly) the Dial or Queue
timeout was the PBX giving up (``no answer``); a shorter one was the caller hanging up (``cancel``).

Transfers and pickups leave one line per phone the caller talked to: a later answered line to
another phone is that employee taking the call over (INTERNAL, ANSWER, and the END names them).
A pickup swaps the picking phone into the ringing Dial: the rung phone's line is "answered" for
0 s (Pickup()) or unanswered (chan_pjsip's pickupexten), and the next line of the same Dial (same
lastdata) names the phone that picked up. cdr_csv
overwrites the line's dst with the extension a blind transfer dialled: the DID is then unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.calls.model import Role, classify_channel
from bridge.calls.numbers import normalise
from bridge.calls.outside import outbound_caller_id
from bridge.calls.records import CallRecord, Disposition, Event, make
from bridge.calls.settings import TrackerSettings
from bridge.calls.snapshot import CallSnapshot, EndFacts

# Q.850 cause each disposition is reported with (what a live call of that kind carries).
STATUS_CODE = {"answered": "16", "busy": "17", "no answer": "19", "cancel": "16", "failed": "34"}
_LOCAL = re.compile(r"^(Local/.+);([12])$")
LOCAL_PAIR_WINDOW = 60.0  # seconds between the lines of a Local channel's two halves
_CLID = re.compile(r'^"?(.*?)"?\s*<[^>]*>$')


@dataclass(frozen=True)
class CdrRow:
    uniqueid: str
    channel: str
    dstchannel: str
    src: str
    dst: str
    start: float
    end: float
    answer: float | None = None
    billsec: int = 0
    disposition: str = ""  # ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION
    lastapp: str = ""
    lastdata: str = ""
    clid: str = ""
    linkedid: str = ""
    did: str = ""
    sequence: int = 0
    recordingfile: str = ""  # FreePBX's CDR(recordingfile): the recording's file name


@dataclass(frozen=True)
class CdrCall:
    rows: tuple[CdrRow, ...]

    @property
    def root(self) -> CdrRow:
        """The caller's line: the call's own Linkedid, else the earliest that is no Local inner half."""
        for r in self.rows:
            if r.linkedid and r.uniqueid == r.linkedid:
                return r
        outer = [r for r in self.rows if not r.channel.startswith("Local/")] or list(self.rows)
        return min(outer, key=lambda r: (r.start, r.sequence))

    @property
    def linkedid(self) -> str:
        root = self.root
        return root.linkedid or root.uniqueid

    @property
    def ids(self) -> frozenset[str]:
        return frozenset({r.uniqueid for r in self.rows} | {r.linkedid for r in self.rows if r.linkedid})

    @property
    def start(self) -> float:
        return self.root.start

    @property
    def end(self) -> float:
        return max(r.end for r in self.rows)


def group(rows: Iterable[CdrRow]) -> list[CdrCall]:
    """CDR lines -> calls (see the module's docstring), in the order the calls started."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    rows = list(rows)
    outer: dict[str, list[CdrRow]] = {}  # a Local channel's outer half (;1) -> the lines naming it
    for r in rows:
        key = f"u:{r.uniqueid}"
        find(key)
        if r.linkedid:
            union(key, f"k:{r.linkedid}")
        m = _LOCAL.match(r.dstchannel)
        if m and m.group(2) == "1":
            outer.setdefault(m.group(1), []).append(r)
    for r in rows:
        m = _LOCAL.match(r.channel)
        if not m:
            continue
        # Local channel names restart with Asterisk: the outer half is the one of the same moment.
        near = [o for o in outer.get(m.group(1), []) if abs(o.start - r.start) <= LOCAL_PAIR_WINDOW]
        if near:
            best = min(near, key=lambda o: abs(o.start - r.start))
            union(f"u:{r.uniqueid}", f"u:{best.uniqueid}")
    calls: dict[str, list[CdrRow]] = {}
    for r in rows:
        calls.setdefault(find(f"u:{r.uniqueid}"), []).append(r)
    out = [CdrCall(tuple(sorted(rs, key=lambda r: (r.start, r.sequence)))) for rs in calls.values()]
    return sorted(out, key=lambda c: c.start)


class Backfill:
    """Turns CDR calls into Novofon records (complete calls, marked reconstructed)."""

    def __init__(self, settings: TrackerSettings) -> None:
        self.s = settings
        self._internal = re.compile(settings.internal_pattern)
        self._tz = ZoneInfo(settings.timezone)

    def _role(self, channel: str) -> tuple[Role, str]:
        return classify_channel(channel, self.s.trunk_endpoints, self._internal)

    def _num(self, number: str) -> str:
        return normalise(number, self.s.country_code)

    def direction(self, call: CdrCall) -> str:
        """'in', 'out', or '' for a call Novofon would not report (internal-only, unknown)."""
        role, _ = self._role(call.root.channel)
        if role is Role.TRUNK:
            return "in"
        if role is Role.INTERNAL and any(self._role(r.dstchannel)[0] is Role.TRUNK for r in call.rows):
            return "out"
        return ""

    def facts(self, call: CdrCall) -> EndFacts:
        """How ``call`` went, in the tracker's terms (for a call it knew that ended unseen)."""
        direction = self.direction(call)
        answered: CdrRow | None = None
        answered_by = ""
        if direction == "out":
            for r in call.rows:
                if self._role(r.dstchannel)[0] is Role.TRUNK and _answered(r) and answered is None:
                    answered = r
            rung = list(dict.fromkeys(e for r in call.rows if (e := self._role(r.dstchannel)[1])))
        else:
            steps = self._steps(call)
            rung = [ext for kind, ext in steps if kind == "ring"]
            answers = [(r, ext) for kind, ext, r in self._answers(call) if kind == "answer"]
            if answers:  # answered first at ..., by whoever had the call last (a transfer's target)
                answered, answered_by = answers[0][0], answers[-1][1]
            else:  # an inbound call forwarded out through the trunk (to a mobile) is answered there
                trunk_rows = (r for r in call.rows if self._role(r.dstchannel)[0] is Role.TRUNK)
                answered = next((r for r in trunk_rows if _answered(r)), None)
        disposition = "" if answered else self._missed(call, direction)
        return EndFacts(
            ended_at=call.end,
            answered_at=answered.answer if answered else None,
            answered_by=answered_by if direction != "out" else "",
            rung=tuple(rung),
            disposition=disposition,
            source="cdr",
            forwarded_to=self._forwarded_to(call)
            if direction == "in" and answered and not answered_by
            else "",
        )

    def _answers(self, call: CdrCall) -> list[tuple[str, str, CdrRow]]:
        """Each line to a phone, in time order: ("ring", ext, line) for a phone that rang,
        ("answer", ext, line) for one that talked (a pickup's phone answers without ringing)."""
        rows = call.rows
        out: list[tuple[str, str, CdrRow]] = []
        picked: set[int] = set()
        for i, r in enumerate(rows):
            role, ext = self._role(r.dstchannel)
            if role is not Role.INTERNAL:
                continue
            if i not in picked:
                out.append(("ring", ext, r))
            swap = self._picked_up(rows, i)
            if swap is not None:  # a pickup's swap: this phone never talked
                picked.add(swap)
                continue
            if _answered(r):
                out.append(("answer", ext, r))
        # In time order: every phone of a ring group rang before the first one answered.
        return sorted(out, key=lambda step: step[2].start if step[0] == "ring" else step[2].answer or 0)

    def _picked_up(self, rows: tuple[CdrRow, ...], i: int) -> int | None:
        """The line of the phone that picked up the call ringing on line ``i``, if any: the next
        line of the same Dial (same channel and lastdata) to another phone, from the moment that
        ring ended. The rung line is "answered" for 0 s when the dialplan's Pickup() took it, "NO
        ANSWER" when chan_pjsip did (features.conf's pickupexten, FreePBX's *8): then the picking
        line must start after the ring did, or it is another phone of a ring-all Dial."""
        r = rows[i]
        if _answered(r) and r.answer != r.end:
            return None  # this phone talked
        for j in range(i + 1, len(rows)):
            o = rows[j]
            if (
                o.channel == r.channel
                and o.lastdata == r.lastdata
                and self._role(o.dstchannel)[0] is Role.INTERNAL
                and o.start - r.end <= 1
                and (
                    _answered(r) or (r.disposition == "NO ANSWER" and o.start > r.start and o.start >= r.end)
                )
            ):
                return j
        return None

    def _steps(self, call: CdrCall) -> list[tuple[str, str]]:
        """The rings and answers Novofon reports, without repeats: a phone rings once; an answer
        after the first is a take-over by another phone."""
        steps: list[tuple[str, str]] = []
        rung: set[str] = set()
        current = ""
        for kind, ext, _ in self._answers(call):
            if kind == "ring" and ext not in rung:
                rung.add(ext)
                steps.append(("ring", ext))
            elif kind == "answer" and ext != current:
                current = ext
                steps.append(("answer", ext))
        return steps

    def _missed(self, call: CdrCall, direction: str) -> str:
        root = call.root
        if direction == "out":
            own = [r for r in call.rows if self._role(r.dstchannel)[0] is Role.TRUNK]
        else:
            own = [r for r in call.rows if r.channel == root.channel] or [root]
        statuses = {r.disposition for r in own}
        if "NO ANSWER" in statuses:
            rang = max(r.end for r in own) - min(r.start for r in own)
            timeout = _timeout(own[0].lastapp, own[0].lastdata)
            # Whole seconds, counted from the channel's creation (before the Dial): a ring the PBX
            # ended at its timeout always counts at least the timeout.
            gave_up = timeout is not None and rang >= timeout
            return Disposition.NO_ANSWER.value if gave_up else Disposition.CANCEL.value
        if "BUSY" in statuses:
            return Disposition.BUSY.value
        if statuses & {"FAILED", "CONGESTION"}:
            return Disposition.FAILED.value
        return Disposition.CANCEL.value

    def records(self, call: CdrCall, recorded: bool) -> list[CallRecord]:
        """The complete call as Novofon would have reported it; [] for calls Novofon skips."""
        direction = self.direction(call)
        if not direction:
            return []
        root, f = call.root, self.facts(call)
        start = datetime.fromtimestamp(root.start, self._tz).strftime("%Y-%m-%d %H:%M:%S")
        disposition = "answered" if f.answered_at is not None else f.disposition
        duration = round(f.ended_at - f.answered_at) if f.ended_at and f.answered_at is not None else 0
        rec_id = root.uniqueid if recorded and f.answered_at is not None else ""
        name = _caller_name(root.clid)
        meta = {"direction": direction, "reconstructed": "1", "source": "cdr"}
        if name:
            meta["caller_name"] = name
        values = {
            "call_start": start,
            "pbx_call_id": f"{direction}_{call.linkedid}",
            "caller_id": self._num(root.src),
            "called_did": "",
            "internal": "",
            "destination": "",
            "duration": str(max(0, duration)),
            "disposition": disposition,
            "status_code": STATUS_CODE.get(disposition, "0"),
            "is_recorded": "1" if rec_id else "0",
            "call_id_with_rec": rec_id,
        }
        out: list[CallRecord] = []
        if direction == "in":
            dialled = root.dst[:1].isdigit() and not self._internal.match(root.dst)  # not a transfer's
            did = root.did or (root.dst if dialled else self.s.default_did)
            values["called_did"] = self._num(did)
            steps = self._steps(call)
            answers = [ext for kind, ext in steps if kind == "answer"]
            values["internal"] = answers[-1] if answers else (f.rung[0] if f.rung else "")
            out.append(make(Event.START, values, meta))
            for kind, ext in steps:
                step = {**values, "internal": ext}
                if kind == "ring":
                    out.append(make(Event.INTERNAL, step, meta))
                else:
                    out.append(make(Event.ANSWER, {**step, "destination": ext}, meta))
            if f.answered_at is not None and not answers:  # forwarded to a mobile, or unseen
                answered_by = f.answered_by or self._forwarded_to(call) or values["internal"]
                out.append(make(Event.ANSWER, {**values, "destination": answered_by}, meta))
            out.append(make(Event.END, values, meta))
        else:
            trunk = next(r for r in call.rows if self._role(r.dstchannel)[0] is Role.TRUNK)
            values["internal"] = self._role(root.channel)[1]
            values["destination"] = self._num(trunk.dst)
            out.append(make(Event.OUT_START, values, meta))
            outbound = {**values, "caller_id": self._outbound_caller_id(root.src, values["destination"])}
            if f.answered_at is not None:
                out.append(make(Event.ANSWER, outbound, meta))
            out.append(make(Event.OUT_END, outbound, meta))
        if rec_id:
            out.append(make(Event.RECORD, values, meta))
        return out

    def _forwarded_to(self, call: CdrCall) -> str:
        """The outside number that answered an inbound call forwarded through the trunk, if any."""
        for r in call.rows:
            if r.disposition == "ANSWERED" and self._role(r.dstchannel)[0] is Role.TRUNK:
                return self._num(r.dst)
        return ""

    def _outbound_caller_id(self, src: str, destination: str) -> str:
        """As the tracker decides it, from the caller number the CDR shows (CALLERID(num) as the
        dialplan set it)."""
        return outbound_caller_id(src, destination, self.s.default_did, self._internal, self.s.country_code)

    @staticmethod
    def match(snapshot: CallSnapshot, calls: Iterable[CdrCall]) -> CdrCall | None:
        """The CDR call of a call the tracker knew (by any of its ids)."""
        ids = set(snapshot.ids)
        return next((c for c in calls if c.ids & ids), None)


def _answered(r: CdrRow) -> bool:
    return r.disposition == "ANSWERED" and r.answer is not None


def _timeout(app: str, data: str) -> float | None:
    """Ring timeout of a Dial(targets,timeout,...) or Queue(name,options,url,announce,timeout,...)."""
    args = data.split(",")
    pos = {"dial": 1, "queue": 4}.get(app.lower())
    if pos is None or len(args) <= pos:
        return None
    try:
        return float(args[pos])
    except ValueError:
        return None


def _caller_name(clid: str) -> str:
    m = _CLID.match(clid.strip())
    name = (m.group(1) if m else "").strip().strip('"')
    return "" if name in ("", "<unknown>") else name
