"""Asterisk's own call detail records, for calls the bridge did not see live.

Two sources (``asterisk.cdr``):

- ``cdr_csv``'s Master.csv (the default; Debian's stock cdr.conf writes it, times in UTC with
  ``usegmtime=yes``, the Uniqueid column with ``loguniqueid=yes``). Only the file's tail is read:
  lines are appended when calls end, so reading stops at lines that ended well before ``since``.
- FreePBX's MariaDB/MySQL database ``asteriskcdrdb`` (table ``cdr``, with ``linkedid``, ``did``
  and ``recordingfile``), through PyMySQL (pure Python, maintained, no C library to build) run in a worker
  thread so that the event loop never waits on the database.

Both are read off the event loop; every failure is a ``CdrError`` with a message for a sysadmin.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse
from zoneinfo import ZoneInfo

from bridge.calls.backfill import CdrRow

CHUNK = 256 * 1024
MAX_TAIL = 64 * 1024 * 1024  # never read more than this much of a huge Master.csv
REORDER_MARGIN = 3600.0  # lines are appended at each call's end: allow that much disorder
MAX_ROWS = 20000
_UNIQUEID = re.compile(r"^[\w.-]*\d+\.\d+$")


class CdrError(Exception):
    """The CDR source cannot be read; the message says what to check."""


class CdrSource(Protocol):
    description: str

    async def rows_since(self, since: float) -> list[CdrRow]: ...

    async def probe(self) -> str: ...


def _parse_time(text: str, tz: ZoneInfo) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).timestamp()
    except ValueError:
        return None


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


class CsvCdr:
    """cdr_csv's Master.csv."""

    def __init__(self, path: Path, timezone: str = "UTC") -> None:
        self.path = path
        self.tz = ZoneInfo(timezone)
        self.description = f"cdr_csv {path}"

    async def rows_since(self, since: float) -> list[CdrRow]:
        return await asyncio.to_thread(self.read, since)

    async def probe(self) -> str:
        rows = await asyncio.to_thread(self.read, 0.0, 200)
        last = max((r.end for r in rows), default=None)
        when = datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M:%S") if last else "строк пока нет"
        return f"{self.path} читается (последний звонок: {when})"

    def read(self, since: float, limit: int | None = None) -> list[CdrRow]:
        """Lines of calls that ended after ``since`` (``limit``: only that many of the newest)."""
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                pos, data = size, b""
                while pos > 0 and size - pos < MAX_TAIL:
                    step = min(CHUNK, pos)
                    pos -= step
                    f.seek(pos)
                    data = f.read(step) + data
                    rows = self._parse(data if pos == 0 else data.split(b"\n", 1)[-1])
                    if limit is not None and len(rows) >= limit:
                        break
                    if rows and min(r.end for r in rows) < since - REORDER_MARGIN:
                        break
        except FileNotFoundError:
            raise CdrError(
                f"{self.path}: файла нет — включён ли cdr_csv (modules.conf, cdr.conf [csv]) и есть ли "
                "папка cdr-csv в astlogdir? Путь задаётся asterisk.cdr.csv_path"
            ) from None
        except OSError as e:
            raise CdrError(
                f"{self.path}: не читается ({e.strerror}); у службы должно быть право чтения"
            ) from None
        rows = self._parse(data)
        if limit is not None:
            return rows[-limit:]
        return [r for r in rows if r.end >= since][-MAX_ROWS:]

    def _parse(self, data: bytes) -> list[CdrRow]:
        out = []
        text = data.replace(b"\0", b"").decode("utf-8", "replace")
        for line in text.split("\n"):
            try:
                cols = next(csv.reader([line]), [])
            except csv.Error:
                continue  # a torn or hand-edited line: skipped, the others still count
            row = self._row(cols)
            if row is not None:
                out.append(row)
        return out

    def _row(self, c: Sequence[str]) -> CdrRow | None:
        # accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start,
        # answer, end, duration, billsec, disposition, amaflags, uniqueid (loguniqueid=yes),
        # userfield (loguserfield=yes), then peeraccount, linkedid, sequence (newcdrcolumns=yes).
        if len(c) < 17 or not _UNIQUEID.match(c[16]):
            return None
        start, end = _parse_time(c[9], self.tz), _parse_time(c[11], self.tz)
        if start is None or end is None:
            return None
        return CdrRow(
            uniqueid=c[16],
            channel=c[5],
            dstchannel=c[6],
            src=c[1],
            dst=c[2],
            start=start,
            end=end,
            answer=_parse_time(c[10], self.tz),
            billsec=_int(c[13]),
            disposition=c[14],
            lastapp=c[7],
            lastdata=c[8],
            clid=c[4],
            linkedid=c[19] if len(c) >= 21 else "",
            sequence=_int(c[20]) if len(c) >= 21 else 0,
        )


COLUMNS = (
    "calldate",
    "clid",
    "src",
    "dst",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "linkedid",
    "did",
    "sequence",
    "recordingfile",
)


def mysql_params(dsn: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/asteriskcdrdb[?unix_socket=/path]`` -> PyMySQL's kwargs."""
    u = urlparse(dsn)
    if u.scheme not in ("mysql", "mariadb") or not u.path.strip("/"):
        raise CdrError(
            "asterisk.cdr.mysql_dsn: ожидается mysql://ПОЛЬЗОВАТЕЛЬ:ПАРОЛЬ@ХОСТ:ПОРТ/asteriskcdrdb"
        )
    params: dict[str, Any] = {
        "host": u.hostname or "localhost",
        "port": u.port or 3306,
        "user": unquote(u.username or ""),
        "password": unquote(u.password or ""),
        "database": unquote(u.path.strip("/")),
        "charset": "utf8mb4",
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    socket = parse_qs(u.query).get("unix_socket")
    if socket:
        params["unix_socket"] = socket[0]
    return params


def mysql_query(since: float, tz: ZoneInfo) -> tuple[str, tuple[str, str]]:
    """The query for calls that ended after ``since``: calldate is a call's start (in the database
    server's time zone), so start a day earlier and keep the lines whose end is late enough."""
    start = datetime.fromtimestamp(since, tz) - timedelta(seconds=86400)
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM cdr"
        " WHERE calldate >= %s AND calldate + INTERVAL duration SECOND >= %s"
        f" ORDER BY calldate, sequence LIMIT {MAX_ROWS}"
    )
    fmt = "%Y-%m-%d %H:%M:%S"
    return sql, (start.strftime(fmt), datetime.fromtimestamp(since, tz).strftime(fmt))


def mysql_row(r: dict[str, Any], tz: ZoneInfo) -> CdrRow | None:
    calldate = r.get("calldate")
    if isinstance(calldate, datetime):
        start = calldate.replace(tzinfo=tz).timestamp()
    else:
        parsed = _parse_time(str(calldate or ""), tz)
        if parsed is None:
            return None
        start = parsed
    duration, billsec = _int(r.get("duration")), _int(r.get("billsec"))
    end = start + duration
    disposition = str(r.get("disposition") or "")
    return CdrRow(
        uniqueid=str(r.get("uniqueid") or ""),
        channel=str(r.get("channel") or ""),
        dstchannel=str(r.get("dstchannel") or ""),
        src=str(r.get("src") or ""),
        dst=str(r.get("dst") or ""),
        start=start,
        end=end,
        answer=end - billsec if disposition == "ANSWERED" else None,
        billsec=billsec,
        disposition=disposition,
        lastapp=str(r.get("lastapp") or ""),
        lastdata=str(r.get("lastdata") or ""),
        clid=str(r.get("clid") or ""),
        linkedid=str(r.get("linkedid") or ""),
        did=str(r.get("did") or ""),
        sequence=_int(r.get("sequence")),
        recordingfile=str(r.get("recordingfile") or ""),
    )


class MysqlCdr:
    """FreePBX's ``asteriskcdrdb.cdr`` (MariaDB/MySQL)."""

    def __init__(self, dsn: str, timezone: str = "UTC") -> None:
        self._params = mysql_params(dsn)
        self.tz = ZoneInfo(timezone)
        p = self._params
        where = p.get("unix_socket") or f"{p['host']}:{p['port']}"
        self.description = f"MySQL {p['database']}.cdr на {where}"  # never the password

    def _connect(self) -> Any:
        try:
            import pymysql
            import pymysql.cursors
        except ImportError:
            raise CdrError("для asterisk.cdr.mysql_dsn нужен PyMySQL (pip install PyMySQL)") from None
        try:
            return pymysql.connect(cursorclass=pymysql.cursors.DictCursor, **self._params)
        except pymysql.MySQLError as e:
            raise CdrError(f"{self.description}: нет подключения ({e.args[-1] if e.args else e})") from None

    def _fetch(self, since: float) -> list[CdrRow]:
        import pymysql

        db = self._connect()
        try:
            with db.cursor() as cur:
                cur.execute(*mysql_query(since, self.tz))
                rows = [mysql_row(r, self.tz) for r in cur.fetchall()]
        except pymysql.MySQLError as e:
            raise CdrError(f"{self.description}: запрос не удался ({e.args[-1] if e.args else e})") from None
        finally:
            db.close()
        return [r for r in rows if r is not None and r.end >= since]

    async def rows_since(self, since: float) -> list[CdrRow]:
        return await asyncio.to_thread(self._fetch, since)

    async def probe(self) -> str:
        rows = await asyncio.to_thread(self._fetch, datetime.now().timestamp() - 86400)
        return f"{self.description} читается ({len(rows)} строк за сутки)"
