"""novofon-bridge asterisk install/uninstall on the lab PBX: an office's Asterisk with its own
phones, contexts and AMI/ARI users, into which the lab installed novofon-bridge with the CLI."""

from __future__ import annotations

import asyncio
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
