"""Reading Asterisk's CDR: the tail of a long Master.csv, FreePBX's database query and rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.pbx import cdr as cdr_mod
from bridge.pbx.cdr import CdrError, CsvCdr, mysql_params, mysql_query, mysql_row
from tests.transcripts import DIR

UTC = ZoneInfo("UTC")


def line(uid: str, start: str, end: str) -> str:
    return (
        f'"","79000000001","74950000101","from-novofon","""A"" <79000000001>","PJSIP/novofon-1",'
        f'"PJSIP/101-2","Dial","PJSIP/101,30","{start}","{start}","{end}",3,2,"ANSWERED",'
        f'"DOCUMENTATION","{uid}",""\n'
    )


def test_only_the_tail_of_a_long_master_csv_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "Master.csv"
    old = line("pbx-1.1", "2020-01-01 10:00:00", "2020-01-01 10:00:05") * 20000  # ~5 MB of history
    new = line("pbx-9.9", "2026-11-29 12:00:00", "2026-11-29 12:00:05")
    path.write_text(old + new)
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *a: object, **kw: object) -> object:
        f = real_open(self, *a, **kw)  # type: ignore[call-overload]
        real_read = f.read

        def read(n: int = -1) -> bytes:
            data: bytes = real_read(n)
            reads.append(len(data))
            return data

        f.read = read
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    since = dt.datetime(2026, 11, 29, 11, 0, tzinfo=UTC).timestamp()
    rows = CsvCdr(path).read(since)
    assert [r.uniqueid for r in rows] == ["pbx-9.9"]
    assert sum(reads) <= 2 * cdr_mod.CHUNK  # not the 5 MB


def test_times_are_read_in_the_cdr_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    path.write_text(line("pbx-9.9", "2026-11-29 12:00:00", "2026-11-29 12:00:05"))
    (utc,) = CsvCdr(path).read(0)
    (msk,) = CsvCdr(path, "Europe/Moscow").read(0)
    assert utc.start == dt.datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp()
    assert utc.start - msk.start == 3 * 3600


def test_lines_without_a_uniqueid_are_skipped_and_newcdrcolumns_give_the_linkedid(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    no_uid = line("x", "2026-11-29 12:00:00", "2026-11-29 12:00:05").replace('"x",""', "")
    with_linked = line("pbx-5.6", "2026-11-29 12:00:00", "2026-11-29 12:00:05").rstrip("\n")
    path.write_text(no_uid + with_linked + ',"","pbx-5.5","7"\n')
    (row,) = CsvCdr(path).read(0)
    assert (row.uniqueid, row.linkedid, row.sequence) == ("pbx-5.6", "pbx-5.5", 7)


async def test_a_missing_file_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(CdrError, match="cdr_csv"):
        await CsvCdr(tmp_path / "nope.csv").rows_since(0)
    ok = await CsvCdr(DIR / "inbound_answered.cdr.csv").probe()
    assert "читается" in ok and "2026-11-29" in ok


def test_mysql_dsn_becomes_pymysql_arguments_and_never_a_description_with_the_password() -> None:
    p = mysql_params("mysql://freepbxuser:p%40ss@10.0.0.5:3307/asteriskcdrdb")
    assert (p["host"], p["port"], p["user"], p["password"], p["database"]) == (
        "10.0.0.5",
        3307,
        "freepbxuser",
        "p@ss",
        "asteriskcdrdb",
    )
    sock = mysql_params("mysql://u:p@localhost/asteriskcdrdb?unix_socket=/run/mysqld/mysqld.sock")
    assert sock["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert "p@ss" not in cdr_mod.MysqlCdr("mysql://u:p%40ss@db/asteriskcdrdb").description
    with pytest.raises(CdrError):
        mysql_params("postgres://u:p@h/db")


def test_mysql_query_is_parameterised_and_in_the_servers_time_zone() -> None:
    since = dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()
    sql, args = mysql_query(since, ZoneInfo("Europe/Moscow"))
    assert sql.startswith("SELECT calldate, clid, src, dst, channel, dstchannel, lastapp, lastdata,")
    assert "linkedid" in sql and "did" in sql and "FROM cdr WHERE calldate >= %s" in sql
    assert "2026" not in sql  # values only as parameters
    assert args == ("2026-11-28 15:00:00", "2026-11-29 15:00:00")


def test_a_freepbx_row_becomes_a_cdr_row() -> None:
    row = mysql_row(
        {
            "calldate": dt.datetime(2026, 11, 29, 15, 0, 0),
            "clid": '"Ivan" <79161234567>',
            "src": "79161234567",
            "dst": "101",
            "channel": "PJSIP/novofon-00000001",
            "dstchannel": "PJSIP/101-00000002",
            "lastapp": "Dial",
            "lastdata": "PJSIP/101,20",
            "duration": 30,
            "billsec": 25,
            "disposition": "ANSWERED",
            "uniqueid": "1764417600.1",
            "linkedid": "1764417600.1",
            "did": "74951234567",
            "sequence": 3,
        },
        ZoneInfo("Europe/Moscow"),
    )
    assert row is not None
    assert row.end - row.start == 30 and row.answer == row.end - 25
    assert (row.did, row.linkedid, row.sequence) == ("74951234567", "1764417600.1", 3)
    assert row.start == dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


def test_torn_and_binary_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    good = line("pbx-9.9", "2026-11-29 12:00:00", "2026-11-29 12:00:05")
    path.write_bytes(b'"","7900\x00000","x\n' + b'"unterminated,"a\n' + good.encode() + b"\xff\xfe\n")
    assert [r.uniqueid for r in CsvCdr(path).read(0)] == ["pbx-9.9"]
