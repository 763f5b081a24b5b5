"""The CDR backfill on lines cdr_csv wrote for real lab calls (tests/transcripts/NAME.cdr.csv, from
the same calls as NAME.ami): a call nobody saw live is reported as the tracker would have."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.calls.backfill import Backfill, CdrCall, CdrRow, group
from bridge.calls.records import CallRecord
from bridge.calls.settings import TrackerSettings
from bridge.pbx.cdr import CsvCdr
from tests.transcripts import DIR, NAMES, replay

SAME = ("event", "pbx_call_id", "call_start", "caller_id", "called_did", "destination", "disposition")


def cdr_calls(name: str) -> list[CdrCall]:
    return group(CsvCdr(DIR / f"{name}.cdr.csv").read(0.0))


def reported(name: str) -> list[CdrCall]:
    """The CDR calls Novofon reports (an attended transfer's consultation call is internal-only)."""
    return [c for c in cdr_calls(name) if Backfill(TrackerSettings()).direction(c)]


# cdr_csv overwrites the caller's dst with the extension a blind transfer dialled: the DID is lost.
DID_LOST = {"inbound_blind_transfer"}


def backfilled(name: str) -> list[CallRecord]:
    (call,) = reported(name)
    live = replay(name)
    recorded = any(r.fields.get("is_recorded") == "1" for r in live)
    return Backfill(TrackerSettings()).records(call, recorded)


@pytest.mark.parametrize("name", NAMES)
def test_a_backfilled_call_is_the_call_the_tracker_reported_live(name: str) -> None:
    live, back = replay(name), backfilled(name)
    assert [r.fields["event"] for r in back] == [r.fields["event"] for r in live]
    same = [k for k in SAME if not (k == "called_did" and name in DID_LOST)]
    for got, want in zip(back, live, strict=True):
        assert {k: got.fields[k] for k in same if k in want.fields} == {
            k: want.fields[k] for k in same if k in want.fields
        }
        assert got.reconstructed and got.meta["source"] == "cdr"
        assert got.meta["direction"] == want.meta["direction"]
    ends = [(b, w) for b, w in zip(back, live, strict=True) if w.fields["event"].endswith("END")]
    for got, want in ends:
        assert got.fields["is_recorded"] == want.fields["is_recorded"]
        assert got.fields["call_id_with_rec"] == want.fields["call_id_with_rec"]
        assert abs(int(got.fields["duration"]) - int(want.fields["duration"])) <= 1
        if not name.startswith("inbound_local_group"):  # which phone rang first is a race there
            assert got.fields["internal"] == want.fields["internal"]
    assert {r.fields.get("internal") for r in back} == {r.fields.get("internal") for r in live}


def test_lines_of_a_local_ring_group_make_one_call() -> None:
    (call,) = cdr_calls("inbound_local_group_timeout")
    assert len(call.rows) == 4
    assert call.root.channel.startswith("PJSIP/novofon-") and call.linkedid == call.root.uniqueid


def test_lines_of_many_calls_group_per_call() -> None:
    lines = b"".join((DIR / f"{n}.cdr.csv").read_bytes() for n in NAMES)
    calls = group(CsvCdr(Path("Master.csv"))._parse(lines))
    assert len(calls) == len(NAMES) + 1  # and inbound_attended_transfer's consultation 105 -> 101
    assert [c.start for c in calls] == sorted(c.start for c in calls)


def test_internal_only_calls_are_not_backfilled() -> None:
    (call,) = cdr_calls("inbound_answered")
    row = call.root
    internal = CdrCall((type(row)(**{**row.__dict__, "channel": "PJSIP/102-00000099"}),))
    assert Backfill(TrackerSettings()).records(internal, recorded=False) == []


def test_facts_of_a_call_the_tracker_knew() -> None:
    """A ring group answered by 101 while nobody listened: who rang, who answered, when it ended."""
    (call,) = cdr_calls("inbound_ring_group")
    f = Backfill(TrackerSettings()).facts(call)
    assert (f.rung, f.answered_by, f.source) == (("101", "102"), "101", "cdr")
    assert f.ended_at is not None and f.answered_at is not None and f.ended_at - f.answered_at == 2
    missed = Backfill(TrackerSettings()).facts(cdr_calls("inbound_queue_timeout")[0])
    assert (missed.answered_at, missed.disposition, missed.rung) == (None, "no answer", ("103",))


def test_a_blind_transfer_keeps_no_extension_as_the_did() -> None:
    """The caller's line says dst=101 after the transfer: never reported as the number dialled."""
    (start, *_) = backfilled("inbound_blind_transfer")
    assert start.fields["called_did"] == ""  # TrackerSettings.default_did


def test_the_consultation_of_an_attended_transfer_is_not_reported() -> None:
    consultation = [
        c for c in cdr_calls("inbound_attended_transfer") if c not in reported("inbound_attended_transfer")
    ]
    assert [c.root.channel[:10] for c in consultation] == ["PJSIP/105-"]
    assert Backfill(TrackerSettings()).records(consultation[0], recorded=False) == []


# The FreePBX-style profile (tests/lab/freepbx.py): its cdr_csv lines have no DID (dst is the ring
# group or the extension; FreePBX keeps the DID in its database's did column), so called_did is
# left out. A blind transfer runs sub-record-check's ResetCDR(), which restarts the caller's line:
# its start and answer are the transfer's moment, so call_start and duration are not compared.
FREEPBX_TAKE_OVERS = [
    "freepbx/inbound_blind_transfer",
    "freepbx/inbound_attended_transfer",
    "freepbx/inbound_pickup_directed",
    "freepbx/inbound_pickup_group",
]


@pytest.mark.parametrize("name", FREEPBX_TAKE_OVERS)
def test_freepbx_transfers_and_pickups_backfill_as_reported_live(name: str) -> None:
    keys = ("event", "internal", "destination", "disposition", "is_recorded", "call_id_with_rec")
    live, back = replay(name), backfilled(name)
    assert [{k: r.fields.get(k) for k in keys} for r in back] == [
        {k: r.fields.get(k) for k in keys} for r in live
    ]


def test_a_pickup_by_pickupexten_leaves_the_rung_line_unanswered() -> None:
    """FreePBX's *8 is features.conf's pickupexten, which chan_pjsip performs itself: the rung
    phone's line says NO ANSWER (not "answered" for 0 s as after Pickup()); the picking phone's
    line follows in the same Dial. It answered; it never rang."""
    (call,) = cdr_calls("freepbx/inbound_pickup_group")
    rung, picker = (r for r in call.rows if r.dstchannel.startswith("PJSIP/10"))
    assert (rung.disposition, picker.disposition) == ("NO ANSWER", "ANSWERED")
    f = Backfill(TrackerSettings()).facts(call)
    assert (f.rung, f.answered_by) == (("103",), "101")


def test_phones_of_one_ring_all_dial_are_no_pickup() -> None:
    """Dial(PJSIP/101&PJSIP/102): 101's line ends unanswered the moment 102 answers; both lines
    started with the Dial, so 102 rang (it did not pick 101's call up)."""
    t = 1_800_000_000.0
    common = {
        "uniqueid": "pbx-1.0",
        "channel": "PJSIP/novofon-00000001",
        "src": "89581114585",
        "dst": "74950000100",
        "start": t,
        "lastapp": "Dial",
        "lastdata": "PJSIP/101&PJSIP/102,30",
        "linkedid": "pbx-1.0",
    }
    rows = (
        CdrRow(**common, dstchannel="PJSIP/101-00000002", end=t + 4, disposition="NO ANSWER", sequence=1),
        CdrRow(**common, dstchannel="PJSIP/102-00000003", end=t + 9, answer=t + 4, billsec=5,
               disposition="ANSWERED", sequence=2),
    )  # fmt: skip
    f = Backfill(TrackerSettings()).facts(CdrCall(rows))
    assert (f.rung, f.answered_by) == (("101", "102"), "102")
