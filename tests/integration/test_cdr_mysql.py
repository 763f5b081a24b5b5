"""FreePBX's CDR database on a real MariaDB: the lab's calls, as FreePBX would have stored them
(local times, linkedid, did), read back by the backfill and reported as the tracker did live."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
import pytest

from bridge.calls.backfill import Backfill, group
from bridge.calls.settings import TrackerSettings
from bridge.pbx.cdr import CdrError, CsvCdr, MysqlCdr, mysql_params
from tests.lab.mariadb import PASSWORD, mariadb
from tests.transcripts import DIR, NAMES, replay

pytestmark = pytest.mark.lab

TZ = ZoneInfo("Europe/Moscow")  # FreePBX stores the server's local time
SAME = ("event", "pbx_call_id", "call_start", "caller_id", "called_did", "destination", "disposition")


def freepbx_rows() -> list[dict[str, Any]]:
    """Every transcript's cdr_csv lines as FreePBX's cdr_adaptive_odbc would have written them."""
    out: list[dict[str, Any]] = []
    for name in NAMES:
        # FreePBX's did column keeps the number dialled (FROM_DID), even after a blind transfer
        # overwrote dst with the extension.
        did = replay(name)[0].fields.get("called_did", "")
        for call in group(CsvCdr(DIR / f"{name}.cdr.csv").read(0)):
            root = call.root
            for seq, r in enumerate(call.rows):
                out.append(
                    {
                        "calldate": dt.datetime.fromtimestamp(r.start, TZ).replace(tzinfo=None),
                        "clid": r.clid,
                        "src": r.src,
                        "dst": r.dst,
                        "channel": r.channel,
                        "dstchannel": r.dstchannel,
                        "lastapp": r.lastapp,
                        "lastdata": r.lastdata,
                        "duration": round(r.end - r.start),
                        "billsec": r.billsec,
                        "disposition": r.disposition,
                        "uniqueid": r.uniqueid,
                        "linkedid": call.linkedid,
                        "did": did if root.channel.startswith("PJSIP/novofon") else "",
                        "sequence": seq,
                    }
                )
    return out


async def test_freepbx_cdr_database_backfills_as_the_tracker_reported_live(tmp_path: Path) -> None:
    with mariadb(tmp_path) as dsn:
        rows = freepbx_rows()
        db = pymysql.connect(**mysql_params(dsn))
        try:
            with db.cursor() as cur:
                cols = list(rows[0])
                cur.executemany(
                    f"INSERT INTO cdr ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    [tuple(r[c] for c in cols) for r in rows],
                )
            db.commit()
        finally:
            db.close()
        source = MysqlCdr(dsn, "Europe/Moscow")
        first = min(r["calldate"] for r in rows).replace(tzinfo=TZ).timestamp()
        calls = group(await source.rows_since(first - 60))
        later = await source.rows_since(
            max(r["calldate"] for r in rows).replace(tzinfo=TZ).timestamp() + 3600
        )
        with pytest.raises(CdrError) as err:
            await MysqlCdr(dsn.replace(PASSWORD, "wrong-password-x"), "Europe/Moscow").rows_since(0)
    assert later == []
    assert "wrong-password-x" not in str(err.value) and "нет подключения" in str(err.value)
    backfill = Backfill(TrackerSettings())
    calls = [c for c in calls if backfill.direction(c)]  # not an attended transfer's consultation
    assert len(calls) == len(NAMES)
    for call in calls:
        (name,) = [n for n in NAMES if replay(n)[0].pbx_call_id.endswith(call.linkedid)]
        live = replay(name)
        recorded = any(r.fields.get("is_recorded") == "1" for r in live)
        back = backfill.records(call, recorded)
        assert [r.fields["event"] for r in back] == [r.fields["event"] for r in live], name
        for got, want in zip(back, live, strict=True):
            assert {k: got.fields[k] for k in SAME if k in want.fields} == {
                k: want.fields[k] for k in SAME if k in want.fields
            }, name
