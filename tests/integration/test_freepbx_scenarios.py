"""The scenarios of tests/lab (SCENARIOS: forward, IVR, voicemail, pickup, outbound CID and number
forms) are reachable on the FreePBX-style lab profile with the same constants as on the plain one.

These check what the PBX and the provider did (their CDRs, the voicemail spool); the records the
daemon makes of each scenario are asserted by the scenario's own test, on both profiles."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from bridge.pbx.ami import AmiConnection
from tests.conftest import hangup_all
from tests.helpers import until
from tests.lab import lab as L
from tests.lab.calls import call_in, call_out

pytestmark = [pytest.mark.lab, pytest.mark.profiles("freepbx")]
CALLER = "89581114585"


def cdr(lab: L.Lab, inst: L.Instance) -> list[list[str]]:
    path = lab.host_path(inst, "log", "cdr-csv", "Master.csv")
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def rows(lab: L.Lab, inst: L.Instance, **want: str) -> list[list[str]]:
    """CDR lines (src, dst, dcontext, channel, lastapp, disposition, uniqueid) matching ``want``."""
    cols = {"src": 1, "dst": 2, "dcontext": 3, "channel": 5, "lastapp": 7, "disposition": 14, "uniqueid": 16}
    return [r for r in cdr(lab, inst) if all(r[cols[k]] == v for k, v in want.items())]


async def wait_rows(lab: L.Lab, inst: L.Instance, **want: str) -> list[list[str]]:
    return await until(lambda: rows(lab, inst, **want), timeout=30)


async def wait_new_rows(lab: L.Lab, inst: L.Instance, before: int, **want: str) -> list[list[str]]:
    """The matching CDR lines after the first ``before`` ones: Master.csv keeps every call of the lab
    session, the other tests' calls of the same scenario too."""
    return await until(lambda: rows(lab, inst, **want)[before:], timeout=30)


async def test_forward_reaches_the_mobile_through_the_trunk_with_the_outbound_cid(
    lab: L.Lab, provider: AmiConnection
) -> None:
    """Follow-me (ext-findmefollow → Local/…@from-internal → macro-dialout-trunk): the provider is
    called at NUM_MOBILE, from the trunk's outbound caller ID, and the mobile answers."""
    try:
        await call_in(provider, L.DID_FORWARD, talk=1, caller=CALLER)
        await wait_rows(lab, L.PROVIDER, src=L.LAB_OUTBOUND_CID, dst=L.NUM_MOBILE, disposition="ANSWERED")
    finally:
        await hangup_all(lab)


@pytest.mark.parametrize("dialled", ["89001110001", "+79001110001", L.NUM_ANSWER])
async def test_outbound_route_sends_the_trunks_cid_whatever_the_number_form(
    lab: L.Lab, phones: AmiConnection, dialled: str
) -> None:
    sent = {"src": L.LAB_OUTBOUND_CID, "dst": L.NUM_ANSWER, "disposition": "ANSWERED"}
    before = len(rows(lab, L.PROVIDER, **sent))
    try:
        await call_out(phones, "101", dialled, talk=1)
        await wait_rows(lab, L.PBX, dst=dialled, dcontext="from-internal", disposition="ANSWERED")
        # The provider got the number as dialled (it maps 8…/+7… to 7…), from the trunk's outbound
        # caller ID (macro-outbound-callerid: OUTCID_1), and answered.
        await until(lambda: len(rows(lab, L.PROVIDER, **sent)) > before)
    finally:
        await hangup_all(lab)


async def test_ivr_is_answered_by_the_pbx(lab: L.Lab, provider: AmiConnection) -> None:
    before = len(rows(lab, L.PBX, src=CALLER, dcontext="ivr-1"))
    try:
        chan = await call_in(provider, L.DID_IVR, talk=1, caller=CALLER)
        await wait_rows(lab, L.PROVIDER, uniqueid=chan, disposition="ANSWERED")
        (row,) = await wait_new_rows(lab, L.PBX, before, src=CALLER, dcontext="ivr-1")
        assert row[6] == "" and row[7] in ("Playback", "WaitExten")  # no phone was dialled
    finally:
        await hangup_all(lab)


async def test_voicemail_after_the_ring_group_leaves_a_message(lab: L.Lab, provider: AmiConnection) -> None:
    inbox = lab.host_path(L.PBX, "spool", "voicemail", "default", "103", "INBOX")
    before = set(inbox.glob("msg*.txt")) if inbox.exists() else set()
    seen = len(rows(lab, L.PBX, src=CALLER, dst="vmu103", lastapp="VoiceMail"))
    try:
        await call_in(provider, L.DID_VOICEMAIL, talk=16, caller=CALLER)  # greeting (~11 s), beep, a message
        await wait_new_rows(lab, L.PBX, seen, src=CALLER, dst="vmu103", lastapp="VoiceMail")
        new: set[Path] = await until(lambda: set(inbox.glob("msg*.txt")) - before, timeout=30)
        assert f"<{CALLER}>" in "".join(p.read_text() for p in new)  # callerid="Клиент" <89581114585>
    finally:
        await hangup_all(lab)


@pytest.mark.parametrize("code", ["**103", "*8"])
async def test_pickup_codes_answer_the_ringing_call(
    lab: L.Lab, provider: AmiConnection, phones: AmiConnection, code: str
) -> None:
    """DID_LONG rings 103 (which never answers); 102 dials the code and gets the caller."""
    try:
        chan = await call_in(provider, L.DID_LONG, talk=1, caller=CALLER)
        await until(lambda: "PJSIP/103-" in lab.rx(L.PBX, "core show channels concise"))
        await asyncio.sleep(0.5)
        await call_out(phones, "102", code, talk=5)
        await wait_rows(lab, L.PROVIDER, uniqueid=chan, disposition="ANSWERED")
    finally:
        await hangup_all(lab)
