"""novofon-bridge asterisk install/uninstall on the lab PBX: an office's Asterisk with its own
phones, contexts and AMI/ARI users, into which the lab installed novofon-bridge with the CLI."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bridge.app import App
from bridge.pbx.ami import AmiConnection
from bridge.pbx.conf import BEGIN, END
from tests.conftest import arx, hangup_all, lab_config
from tests.helpers import MemorySink
from tests.lab import lab as L
from tests.lab.calls import call_in

pytestmark = pytest.mark.lab

RELOADS = ("module reload res_pjsip.so", "dialplan reload", "manager reload", "module reload res_ari.so")


async def reload(lab: L.Lab) -> None:
    for command in RELOADS:
        await arx(lab, L.PBX, command)


async def test_install_keeps_the_office_config_tracks_calls_and_uninstall_restores_it(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    etc = lab.host_path(L.PBX, "etc")
    for name, office in lab.pristine.items():  # as installed when the lab started
        now = (etc / name).read_bytes()
        if name == "http.conf":
            assert now == office  # the office's HTTP server is on: nothing to add
        else:
            assert now.startswith(office + b"\n" + BEGIN.encode()) and now.endswith(END.encode() + b"\n")
    try:
        out = await asyncio.to_thread(lab.bridge_cli, "uninstall")
        assert "pjsip.conf: убран блок novofon-bridge" in out
        assert {name: (etc / name).read_bytes() for name in lab.pristine} == lab.pristine
        assert not list(etc.glob("novofon-bridge_*.conf"))
        await reload(lab)
        assert "Unable to find object novofon" in await arx(lab, L.PBX, "pjsip show endpoint novofon")
        assert "no existence of 'from-novofon'" in await arx(lab, L.PBX, "dialplan show from-novofon")
        assert "no manager called novofon-bridge" in await arx(lab, L.PBX, "manager show user novofon-bridge")
        # The office's own phones, contexts and users are all still there.
        assert "101/sip:101@" in await arx(lab, L.PBX, "pjsip show contacts")
        assert "night-service" in await arx(lab, L.PBX, "dialplan show night-service")
        assert "username: panel" in await arx(lab, L.PBX, "manager show user panel")

        # Installed again while Asterisk runs, as a sysadmin does, then reloaded.
        out = await asyncio.to_thread(lab.install_bridge)
        assert 'pjsip.conf: в конец добавлена строка #include "novofon-bridge_pjsip.conf"' in out
        await reload(lab)
        await asyncio.to_thread(lab.wait_registered, 30)
        assert "Ничего не изменено" in await asyncio.to_thread(lab.bridge_cli, "install")

        # A call through the trunk is tracked by the daemon logged in as the installed AMI user.
        sink = MemorySink()
        app = App(lab_config(lab, tmp_path), extra_sinks=[sink])
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        try:
            await asyncio.wait_for(app.ami.connected.wait(), 20)
            await call_in(provider, L.DID_101, talk=1)
            records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
            assert [r.fields["event"] for r in records] == [
                "NOTIFY_START",
                "NOTIFY_INTERNAL",
                "NOTIFY_ANSWER",
                "NOTIFY_END",
                "NOTIFY_RECORD",
            ]
            assert records[3].fields["disposition"] == "answered" and records[3].fields["internal"] == "101"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await hangup_all(lab)
    finally:
        if not (etc / "novofon-bridge_pjsip.conf").exists():  # leave the lab as other tests expect it
            await asyncio.to_thread(lab.install_bridge)
            await reload(lab)
            await asyncio.to_thread(lab.wait_registered, 30)


def freepbx_layout() -> dict[str, str]:
    """The shape of a FreePBX 17 /etc/asterisk (generated files that include the admin's
    *_custom.conf ones), holding the same office: transport, phones, an inbound route."""
    office = L.office_config()
    pjsip_types = ("registration", "auth", "aor", "endpoint", "identify")
    files = {
        "pjsip.conf": "#include pjsip_custom.conf\n#include pjsip.transports.conf\n"
        + "".join(f"#include pjsip.{t}.conf\n" for t in pjsip_types)
        + "[global]\ntype=global\nuser_agent=FPBX-17.0\n",
        "pjsip_custom.conf": "",
        "pjsip.transports.conf": f"[0.0.0.0-udp]\ntype=transport\nprotocol=udp\nbind={L.PBX_IP}:5060\n",
        **{f"pjsip.{t}.conf": f"#include pjsip.{t}_custom.conf\n" for t in pjsip_types},
        **{f"pjsip.{t}_custom.conf": "" for t in pjsip_types},
        "extensions.conf": "#include extensions_custom.conf\n"
        + "[from-internal]"
        + office["extensions.conf"].split("[from-internal]", 1)[1]
        + "\n[from-pstn]\nexten => _X.,1,Goto(ext-did,${EXTEN},1)\n\n[ext-did]\n"
        + f"exten => {L.DID_101},1,Dial(PJSIP/101,{L.RING_TIMEOUT})\n",
        "extensions_custom.conf": "[from-internal-custom]\n",
        "manager.conf": office["manager.conf"]
        + "#include manager_additional.conf\n#include manager_custom.conf\n",
        "manager_additional.conf": "",
        "manager_custom.conf": "",
        "ari_general_custom.conf": "",
        "ari.conf": "[general]\nenabled = yes\n#include ari_general_custom.conf\n"
        "#include ari_additional_custom.conf\n",
        "http.conf": office["http.conf"],
    }
    # The phones as FreePBX writes them: one object per section, each in its type's file.
    phones = office["pjsip.conf"].split("[phone](!)", 1)[1]
    files["pjsip.endpoint.conf"] += "[phone](!)" + phones
    return files


async def test_freepbx_mode_on_a_freepbx_shaped_asterisk(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    etc = lab.host_path(L.PBX, "etc")
    saved = tmp_path / "lab-etc"
    await asyncio.to_thread(lab.stop, L.PBX)
    shutil.copytree(etc, saved)
    try:
        for name in [*L.Lab.ADMIN_FILES, *(p.name for p in etc.glob("novofon-bridge_*.conf"))]:
            (etc / name).unlink(missing_ok=True)
        for name, text in freepbx_layout().items():
            (etc / name).write_text(text)
        before = {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file()}
        out = await asyncio.to_thread(lab.bridge_cli, "install", "--freepbx")
        assert "pjsip.endpoint_custom.conf: в конец добавлены разделы novofon-bridge" in out
        changed = {p.name for p in etc.iterdir() if p.is_file() and before.get(p.name) != p.read_bytes()}
        assert changed == {
            *(f"pjsip.{t}_custom.conf" for t in ("registration", "auth", "aor", "endpoint", "identify")),
            "extensions_custom.conf",
            "manager_custom.conf",
            "ari_additional_custom.conf",  # did not exist: created
        }
        for name in changed:  # the sysadmin's edits: the trunk's login and password, in the blocks
            text = (etc / name).read_text().replace("YOUR_SIP_LOGIN_HERE", L.TRUNK_LOGIN)
            text = text.replace("YOUR_SIP_PASSWORD_HERE", L.TRUNK_PASSWORD).replace(
                "sip.novofon.ru", L.PROVIDER_IP
            )
            (etc / name).write_text(text)
        await asyncio.to_thread(lab.start, L.PBX)
        await asyncio.to_thread(lab.wait_registered, 30)
        assert "from-pstn" in await arx(lab, L.PBX, "pjsip show endpoint novofon")

        sink = MemorySink()
        app = App(lab_config(lab, tmp_path), extra_sinks=[sink])
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        try:
            await asyncio.wait_for(app.ami.connected.wait(), 20)
            await call_in(provider, L.DID_101, talk=1)
            records = await sink.wait_events("NOTIFY_END")
            assert [r.fields["event"] for r in records] == [
                "NOTIFY_START",
                "NOTIFY_INTERNAL",
                "NOTIFY_ANSWER",
                "NOTIFY_END",
            ]
            assert (
                records[-1].fields["disposition"] == "answered"
                and records[0].fields["called_did"] == L.DID_101
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await hangup_all(lab)

        await asyncio.to_thread(lab.bridge_cli, "uninstall")
        assert {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file()} == before
        await reload(lab)
        assert "Unable to find object novofon" in await arx(lab, L.PBX, "pjsip show endpoint novofon")
    finally:
        await asyncio.to_thread(lab.stop, L.PBX)
        shutil.rmtree(etc)
        shutil.copytree(saved, etc)
        await asyncio.to_thread(lab.start, L.PBX)
        await asyncio.to_thread(lab.wait_registered, 30)


FREEPBX_CUSTOM = {
    *(f"pjsip.{t}_custom.conf" for t in ("registration", "auth", "aor", "endpoint", "identify")),
    "extensions_custom.conf",
    "manager_custom.conf",
    "ari_additional_custom.conf",
}


@pytest.mark.profiles("freepbx")
async def test_install_freepbx_on_the_freepbx_profile_keeps_every_line_and_uninstall_restores_it(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    """The FreePBX-style lab, installed with ``install --freepbx`` when it started: only the
    admin's *_custom.conf files got a block; uninstall gives back every file byte for byte; a
    ring group call (Local channels, FreePBX's inbound route) is tracked after a reinstall."""
    etc = lab.host_path(L.PBX, "etc")
    files = {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file()}
    ours = {name for name in files if name not in lab.pristine or files[name] != lab.pristine[name]}
    assert ours == FREEPBX_CUSTOM
    for name in ours:
        block = files[name][len(lab.pristine.get(name, b"")) :]
        assert files[name].startswith(lab.pristine.get(name, b""))
        assert BEGIN.encode() in block and block.endswith(END.encode() + b"\n")
    try:
        out = await asyncio.to_thread(lab.bridge_cli, "uninstall")
        assert "pjsip.endpoint_custom.conf: убран блок novofon-bridge" in out
        after = {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file()}
        assert after == lab.pristine  # the office's files exactly, and nothing else left behind
        await reload(lab)
        assert "Unable to find object novofon" in await arx(lab, L.PBX, "pjsip show endpoint novofon")
        assert "no manager called novofon-bridge" in await arx(lab, L.PBX, "manager show user novofon-bridge")
        # FreePBX's own dialplan, phones and AMI user are all still there.
        assert "macro-dial" in await arx(lab, L.PBX, "dialplan show 600@ext-group")
        assert "101/sip:101@" in await arx(lab, L.PBX, "pjsip show contacts")
        assert "username: admin" in await arx(lab, L.PBX, "manager show user admin")

        # Installed again while Asterisk runs, as the FreePBX admin does, then reloaded.
        out = await asyncio.to_thread(lab.install_bridge)
        assert "extensions_custom.conf: в конец добавлены разделы novofon-bridge" in out
        await reload(lab)
        await asyncio.to_thread(lab.wait_registered, 30)
        assert "Ничего не изменено" in await asyncio.to_thread(lab.bridge_cli, "install", "--freepbx")
        assert "from-pstn" in await arx(lab, L.PBX, "pjsip show endpoint novofon")

        sink = MemorySink()
        app = App(lab_config(lab, tmp_path), extra_sinks=[sink])
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        try:
            await asyncio.wait_for(app.ami.connected.wait(), 20)
            await call_in(provider, L.DID_GROUP, talk=1)
            records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
            assert [r.fields["event"] for r in records] == [
                "NOTIFY_START",
                "NOTIFY_INTERNAL",
                "NOTIFY_INTERNAL",
                "NOTIFY_ANSWER",
                "NOTIFY_END",
                "NOTIFY_RECORD",
            ]
            assert {r.fields["internal"] for r in records[1:3]} == {"101", "102"}
            end = records[4].fields
            assert (end["called_did"], end["disposition"], end["internal"]) == (
                L.DID_GROUP,
                "answered",
                "101",
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await hangup_all(lab)
    finally:
        if not (etc / "manager_custom.conf").read_bytes():  # leave the lab as other tests expect it
            await asyncio.to_thread(lab.install_bridge)
            await reload(lab)
            await asyncio.to_thread(lab.wait_registered, 30)
