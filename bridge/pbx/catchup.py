"""What happened while the bridge was not listening (AMI cut, daemon down or restarting).

After every reconnect and at every start:

- calls the tracker knew that ended meanwhile are closed with what is known about their end: the
  CDR (who answered, when it ended), else the recording file's mtime, else the last moment we
  listened (``facts``);
- calls that began while nobody listened are backfilled from Asterisk's CDR as complete records
  (``backfill``), marked reconstructed, never one that was reported live or backfilled before
  (their ids are in ``seen_calls``). CDR lines are written when calls end, so the backfill runs
  again a few seconds and a little longer after each reconnect.

The window starts when we stopped listening: the reconnect's ``lost_at``, or at a start the last
heartbeat the previous run wrote (``pbx_link.listening_until``). A first start ever backfills nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.calls.backfill import Backfill, CdrCall, group
from bridge.calls.records import CallRecord
from bridge.calls.settings import TrackerSettings
from bridge.calls.snapshot import CallSnapshot, EndFacts
from bridge.config import Config
from bridge.pbx.cdr import CdrError, CdrSource, CsvCdr, MysqlCdr
from bridge.pbx.open_calls import LinkState, OpenCallStore
from bridge.pbx.recordings import recording_files

log = structlog.get_logger("bridge.pbx")

PASSES_AFTER = (3.0, 15.0)  # seconds after a reconnect: CDR lines of calls that just ended
SLACK = 1.0  # CDR times are whole seconds (truncated): a call that ended in our last second
SEEN_KEEP = 14 * 86400.0


def cdr_source(cfg: Config) -> CdrSource | None:
    c = cfg.asterisk.cdr
    if not c.backfill:
        return None
    if c.mysql_dsn:
        return MysqlCdr(c.mysql_dsn, c.timezone)
    return CsvCdr(Path(c.csv_path), c.timezone)


class CatchUp:
    def __init__(
        self,
        cfg: Config,
        settings: TrackerSettings,
        calls: OpenCallStore,
        commit: Callable[[list[CallRecord], list[str]], None],
    ) -> None:
        self.source = cdr_source(cfg)
        self.backfill = Backfill(settings)
        self.calls = calls
        self._commit = commit  # records + the ids to remember as seen, in one transaction
        self.recordings = recording_files(cfg)
        self._max_age = cfg.asterisk.cdr.max_age
        self.link = calls.link()
        self.previous_run_until = self.link.listening_until  # None: the first start ever
        self._window: float | None = None  # start of the last outage's window
        self._passes: list[float] = []  # when to look at the CDR again (time.time())

    # -- at a (re)connect ----------------------------------------------------------------------
    def window_start(self, lost_at: float | None, first: bool) -> float | None:
        since = lost_at if lost_at is not None else self.previous_run_until if first else None
        if since is None:
            return None
        return max(since, time.time() - self._max_age)  # a daemon off for a month: the last day

    async def rows(self, since: float | None, gone: list[CallSnapshot]) -> list[CdrCall]:
        """The CDR's calls that ended since ``since`` (or since the oldest vanished call began)."""
        starts = [s.started_at for s in gone]
        if self.source is None or (since is None and not starts):
            return []
        start = min([*starts, *([since] if since is not None else [])]) - SLACK
        try:
            rows = await self.source.rows_since(start)
        except CdrError as e:
            self._failed(str(e))
            return []
        except Exception as e:  # a CDR we cannot make sense of must never stop the AMI resync
            log.exception("cdr.read_failed")
            self._failed(f"{self.source.description}: {type(e).__name__}: {e}")
            return []
        self.link.last_backfill_error = ""
        return group(rows)

    def facts(self, gone: list[CallSnapshot], cdr: list[CdrCall]) -> dict[str, EndFacts]:
        out = {}
        for snap in gone:
            found = self.backfill.match(snap, cdr)
            if found is not None:
                out[snap.linkedid] = self.backfill.facts(found)
                continue
            ended = self._recording_mtime(snap)
            if ended is not None:
                out[snap.linkedid] = EndFacts(ended_at=ended, source="recording")
        return out

    def _recording_mtime(self, snap: CallSnapshot) -> float | None:
        """MixMonitor writes until the call ends: the file's mtime is (about) the end."""
        files = dict(snap.files)
        for uid in snap.recorded:
            named = self.recordings.resolve(files[uid]) if uid in files else None
            path = named or self.recordings.find([uid], [snap.started_at, snap.last_seen])
            try:
                mtime = path.stat().st_mtime if path is not None else None
            except OSError:
                continue
            if mtime is not None and mtime >= snap.last_seen:
                return mtime
        return None

    def run(self, cdr: list[CdrCall], since: float, known: set[str]) -> int:
        """Backfill the calls in ``cdr`` that ended after ``since`` and nobody reported yet."""
        candidates = [c for c in cdr if c.end >= since - SLACK and not (c.ids & known)]
        seen = self.calls.seen(i for c in candidates for i in c.ids)
        n = 0
        for call in candidates:
            if call.ids & seen:
                continue
            file = self._recording(call)
            try:
                records = self.backfill.records(call, file is not None)
                if file is not None:  # the daemon's own path: the pipeline keeps it as it is
                    records = [_with_file(r, str(file)) for r in records]
            except Exception:  # odd CDR lines: skip that call, keep the others
                log.exception("calls.backfill_failed", uniqueid=call.root.uniqueid)
                continue
            if not records:
                continue
            self._commit(records, sorted(call.ids))
            n += 1
            log.warning(
                "calls.backfilled",
                pbx_call_id=records[0].pbx_call_id,
                records=len(records),
                source=self.source.description if self.source else "",
            )
        return n

    def _recording(self, call: CdrCall) -> Path | None:
        """The recording of a call the CDR reports: the file its CDR names (FreePBX's
        recordingfile), else one whose name holds the call's Uniqueid (its first channel's first)."""
        named = next((r.recordingfile for r in call.rows if r.recordingfile), "")
        ids = [call.root.uniqueid, *sorted(call.ids)]
        return self.recordings.find(ids, [call.start, call.end], name=named)

    def outage_over(self, since: float | None, now: float, backfilled: int) -> None:
        if since is not None:
            self._window = since
            self.link.last_outage_from, self.link.last_outage_to = since, now
            self.link.last_outage_backfilled = backfilled
            self._passes = [now + d for d in PASSES_AFTER] if self.source else []
        self.link.backfilled_total += backfilled
        self.heartbeat(now)

    # -- later passes and upkeep ---------------------------------------------------------------
    def due(self, now: float) -> float | None:
        """The window to look at again, if a later pass is due now."""
        if self._passes and now >= self._passes[0] and self._window is not None:
            self._passes.pop(0)
            return self._window
        return None

    def counted(self, backfilled: int) -> None:
        if backfilled:
            self.link.last_outage_backfilled += backfilled
            self.link.backfilled_total += backfilled
            self.calls.save_link(self.link)

    def heartbeat(self, now: float) -> None:
        self.link.listening_until = now
        self.calls.save_link(self.link)

    def forget_old(self, now: float) -> None:
        self.calls.forget_seen(now - SEEN_KEEP)

    def _failed(self, error: str) -> None:
        if error != self.link.last_backfill_error:
            log.error("cdr.unreadable", error=error)
        self.link.last_backfill_error = error

    def status(self, down_since: float | None) -> dict[str, object]:
        link = self.link
        outage = None
        if link.last_outage_from is not None and link.last_outage_to is not None:
            outage = {
                "from": _iso(link.last_outage_from),
                "to": _iso(link.last_outage_to),
                "seconds": round(link.last_outage_to - link.last_outage_from, 1),
                "backfilled_calls": link.last_outage_backfilled,
            }
        return {
            "down_since": _iso(down_since) if down_since is not None else None,
            "last_outage": outage,
            "backfilled_calls_total": link.backfilled_total,
            "cdr": self.source.description if self.source else "off",
            "cdr_error": link.last_backfill_error or None,
        }


def _with_file(r: CallRecord, file: str) -> CallRecord:
    if not r.fields.get("call_id_with_rec"):
        return r
    return CallRecord(r.fields, {**r.meta, "recording_file": file})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


__all__ = ["CatchUp", "LinkState", "cdr_source"]
