"""Recordings for CRMs: expiring signed links in the records' meta, and the route that serves them."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bridge.app import App
from bridge.calls.records import Event
from bridge.config import HttpConfig
from bridge.integrations.novofon.recordings import RecordingLinks
from bridge.integrations.novofon.settings import NovofonSettings
from tests.helpers import MemorySink, base_url, offline_config, until
from tests.transcripts import replay

KEY = "recordings-key-0123456789"


async def test_a_record_carries_a_link_that_serves_its_file_until_it_expires(tmp_path: Path) -> None:
    folder = tmp_path / "monitor"
    folder.mkdir()
    records = replay("inbound_answered")
    rec_id = next(r.fields["call_id_with_rec"] for r in records if r.event is Event.RECORD)
    (folder / f"{rec_id}.wav").write_bytes(b"RIFF" + b"\1" * 1000)
    cfg = offline_config(
        tmp_path,
        http=HttpConfig(port=0),
        novofon=NovofonSettings(recordings_url="https://pbx.example.ru", recordings_key=KEY),
    )
    cfg = dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, recordings_dir=str(folder)))
    sink = MemorySink()
    app = App(cfg, extra_sinks=[sink])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        await until(lambda: app.http_server is not None and app.http_server.port != 0, interval=0.01)
        app.publish(records)
        got = await sink.wait_events("NOTIFY_RECORD")
        url = next(r.meta["recording_url"] for r in got if r.event is Event.RECORD)
        assert url.startswith(f"https://pbx.example.ru/recordings/{rec_id}.wav?exp=")
        local = base_url(app) + "".join(urlsplit(url)[2:3]) + "?" + urlsplit(url).query
        async with aiohttp.ClientSession() as s:
            async with s.get(local) as resp:
                assert resp.status == 200 and await resp.read() == b"RIFF" + b"\1" * 1000
            async with s.get(local.replace("sig=", "sig=0")) as resp:
                assert resp.status == 403 and (await resp.json())["error"] == "bad-link"
            links = RecordingLinks("https://pbx.example.ru", KEY, 60, folder)
            old = links.link(folder / f"{rec_id}.wav", now=0)
            assert old is not None
            async with s.get(base_url(app) + old.removeprefix("https://pbx.example.ru")) as resp:
                assert resp.status == 403 and (await resp.json())["error"] == "link-expired"
            for bad in ("..%2Fconfig.yaml", "nothere.wav", ".hidden.wav"):
                async with s.get(f"{base_url(app)}/recordings/{bad}?exp=9999999999&sig=x") as resp:
                    assert resp.status in (403, 404)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def test_no_link_for_a_file_outside_the_recordings_folder(tmp_path: Path) -> None:
    links = RecordingLinks("https://pbx.example.ru/", KEY, 3600, tmp_path / "monitor")
    assert links.link(tmp_path / "secret.wav") is None
    assert links.link(tmp_path / "monitor" / "a b.wav") is None
    url = links.link(tmp_path / "monitor" / "in-1.wav", now=1000)
    assert url is not None and url.startswith("https://pbx.example.ru/recordings/in-1.wav?exp=4600&sig=")


async def test_a_recording_in_freepbxs_dated_folders_has_a_link_that_serves_it(tmp_path: Path) -> None:
    folder = tmp_path / "monitor"
    day = folder / "2026" / "11" / "29"
    day.mkdir(parents=True)
    (day / "in-74950000120-+79001110001-1.12.wav").write_bytes(b"RIFF-dated")
    (tmp_path / "secret.wav").write_bytes(b"secret")
    (day / "escape.wav").symlink_to(tmp_path / "secret.wav")  # inside by name, outside in fact
    links = RecordingLinks("https://pbx.example.ru", KEY, 3600, folder)
    url = links.link(day / "in-74950000120-+79001110001-1.12.wav")
    assert url is not None
    assert url.startswith(
        "https://pbx.example.ru/recordings/2026/11/29/in-74950000120-%2B79001110001-1.12.wav?exp="
    )
    assert links.link(day / "escape.wav") is None
    assert links.link(folder / ".." / "secret.wav") is None
    cfg = offline_config(
        tmp_path,
        http=HttpConfig(port=0),
        novofon=NovofonSettings(recordings_url="https://pbx.example.ru", recordings_key=KEY),
    )
    cfg = dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, recordings_dir=str(folder)))
    app = App(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        await until(lambda: app.http_server is not None and app.http_server.port != 0, interval=0.01)
        path, query = urlsplit(url)[2], urlsplit(url).query
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base_url(app)}{path}?{query}") as resp:
                assert resp.status == 200 and await resp.read() == b"RIFF-dated"
            exp = query.split("&")[0]
            # a signature made for one path never opens another; no way out of the folder
            for other in ("2026/11/29/escape.wav", "2026/11/../../../secret.wav", "2026/%2E%2E/x.wav"):
                name = other
                forged = links._sign(name, int(exp.removeprefix("exp=")))
                async with s.get(f"{base_url(app)}/recordings/{other}?{exp}&sig={forged}") as resp:
                    assert resp.status in (403, 404), other
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
