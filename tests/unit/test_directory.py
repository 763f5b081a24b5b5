"""The employee directory, filled from config.yaml and from Bitrix24 (events and user.get sync)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge import logs
from bridge.app import App
from bridge.cli.main import main
from bridge.config import Config, DirectoryConfig, EmployeeConfig
from bridge.directory import Directory, Employee
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.store import OutboxStore
from tests.fakes.bitrix import FakeBitrix
from tests.helpers import base_url, offline_config, running_app, until, with_sinks

APP_TOKEN = "bitrix-application-token-1"


def bx_user(uid: int, ext: str, name: str, tg: str = "", active: bool = True) -> dict[str, object]:
    first, last = name.split()
    return {
        "ID": str(uid),
        "NAME": first,
        "LAST_NAME": last,
        "UF_PHONE_INNER": ext,
        "ACTIVE": active,
        "UF_USR_TELEGRAM": tg,
    }


def test_directory_basics(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite3")
    d = Directory(store.db)
    d.upsert(Employee("101", "Иван", "11", "555"))
    d.upsert(Employee("102", "Пётр", "12", source="bitrix24"))
    assert (d.telegram_chat("101"), d.bitrix_user("102"), d.telegram_chat("102")) == ("555", "12", None)
    d.set_telegram("102", "777")  # linked by the employee
    d.upsert(Employee("102", "Пётр Петров", "12", "", source="bitrix24"))  # Bitrix24 has no Telegram field
    assert d.telegram_chat("102") == "777" and d.get("102").name == "Пётр Петров"  # type: ignore[union-attr]
    assert d.by_bitrix_user("11").extension == "101"  # type: ignore[union-attr]
    code = d.new_link_code("101", now=1000.0)
    assert d.use_link_code(code, now=1001.0) == "101"
    assert d.use_link_code(code, now=1002.0) is None  # once
    assert d.use_link_code(d.new_link_code("101", now=0.0), now=10**6) is None  # expired
    assert d.deactivate_others("bitrix24", keep=set()) == 1 and d.bitrix_user("102") is None
    assert len(d) == 1
    store.close()


def config(tmp: Path, bitrix_url: str) -> Config:
    cfg = with_sinks(
        offline_config(tmp),
        bitrix24=Bitrix24Settings(
            enabled=True,
            webhook_url=bitrix_url,
            application_token=APP_TOKEN,
            telegram_field="UF_USR_TELEGRAM",
            rate=50,
        ),
    )
    return dataclasses.replace(
        cfg, directory=DirectoryConfig({"103": EmployeeConfig(name="Секретарь", telegram_chat_id="303")})
    )


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[tuple[App, str]]:
    async with running_app(cfg) as app:
        yield app, base_url(app) + cfg.sinks.bitrix24.events_path


@pytest.fixture
async def bitrix() -> AsyncIterator[FakeBitrix]:
    bx = FakeBitrix()
    bx.users = [
        bx_user(1, "101", "Иван Петров", tg="555"),
        bx_user(2, "", "Без Номера"),
        *[bx_user(100 + i, str(200 + i), f"Сотрудник Номер{i}") for i in range(60)],
    ]
    await bx.start()
    yield bx
    await bx.stop()


async def test_startup_sync_pages_through_all_users(tmp_path: Path, bitrix: FakeBitrix) -> None:
    async with running(config(tmp_path, bitrix.webhook_url)) as (app, _):
        await until(lambda: len(app.directory) == 62, timeout=10)  # 61 with extensions + config's 103
        assert app.directory.telegram_chat("101") == "555"
        assert app.directory.get("259").name == "Сотрудник Номер59"  # type: ignore[union-attr]
        assert app.directory.telegram_chat("103") == "303"  # static entries stay
    assert [m for m, _ in bitrix.log].count("user.get") == 2  # two pages of 50


async def test_user_events_update_the_directory(tmp_path: Path, bitrix: FakeBitrix) -> None:
    async with running(config(tmp_path, bitrix.webhook_url)) as (app, url), aiohttp.ClientSession() as s:
        await until(lambda: len(app.directory) == 62, timeout=10)
        bitrix.users.append(bx_user(7, "107", "Новый Сотрудник", tg="707"))
        form = {
            "event": "ONUSERADD",
            "data[FIELDS][ID]": "7",
            "ts": "1700000000",
            "auth[domain]": "example.bitrix24.ru",
            "auth[member_id]": "x",
            "auth[application_token]": APP_TOKEN,
        }
        async with s.post(url, data=form) as resp:
            assert resp.status == 200 and (await resp.json()) == {"result": "queued"}
        await until(lambda: app.directory.telegram_chat("107") == "707", timeout=10)
        bitrix.users[0]["NAME"] = "Иоанн"
        async with s.post(url, data={**form, "event": "ONUSERUPDATE", "data[FIELDS][ID]": "1"}) as resp:
            assert resp.status == 200
        await until(lambda: app.directory.get("101").name == "Иоанн Петров", timeout=10)  # type: ignore[union-attr]
        # A wrong token changes nothing.
        async with s.post(
            url, data={**form, "auth[application_token]": "nope", "data[FIELDS][ID]": "2"}
        ) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "bad-token"
        async with s.post(url, data={**form, "data[FIELDS][ID]": "x; DROP"}) as resp:
            assert resp.status == 400
        jobs = app.store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        assert jobs == 0


async def test_employees_cli(tmp_path: Path, bitrix: FakeBitrix, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(
        f"storage:\n  dir: {tmp_path}\n"
        f"sinks:\n  bitrix24:\n    enabled: true\n    webhook_url: {bitrix.webhook_url}\n"
        "    telegram_field: UF_USR_TELEGRAM\n"
        "directory:\n  employees:\n    '103': {name: Секретарь, telegram_chat_id: '303'}\n"
    )
    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, main, ["employees", "sync", "-c", str(cfg_file)])
    assert code == 0
    assert "пользователей 62, сотрудников с внутренним номером 61, отключено 0" in capsys.readouterr().out
    assert main(["employees", "-c", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "   101  Иван Петров  telegram: 555  bitrix24: 1  [bitrix24]" in out
    assert "   103  Секретарь  telegram: 303  bitrix24: —  [config]" in out


def test_link_code_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(f"storage:\n  dir: {tmp_path}\ndirectory:\n  employees:\n    '101': {{name: Иван}}\n")
    assert main(["employees", "link", "101", "-c", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    code = out.split("/start ")[1].strip()
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    assert Directory(store.db).use_link_code(code) == "101"
    store.close()
    assert main(["employees", "link", "999", "-c", str(cfg_file)]) == 1


# -- a Bitrix24 user claiming a config.yaml extension (takeover) ----------------------------------


def test_config_entries_win_over_bitrix24_claims(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite3")
    d = Directory(store.db)
    d.upsert(Employee("101", "Иван", "", "901", source="config"))
    assert not d.upsert(Employee("101", "Захватчик", "666", "999", source="bitrix24"))
    assert d.get("101") == Employee("101", "Иван", "", "901", True, "config")  # unchanged
    assert d.by_bitrix_user("666") is None and d.telegram_chat("101") == "901"
    (c,) = d.conflicts()
    assert (c.extension, c.source, c.claimant, c.name, c.owner) == (
        "101",
        "bitrix24",
        "666",
        "Захватчик",
        "config",
    )
    # The same claim again is one conflict, not two.
    d.upsert(Employee("101", "Захватчик", "666", "999", source="bitrix24"))
    assert len(d.conflicts()) == 1
    # The admin says it is the same person: config.yaml still wins, and it is no conflict.
    d.upsert(Employee("101", "Иван", "666", "901", source="config"))
    assert not d.upsert(Employee("101", "Иван Б24", "666", "", source="bitrix24"))
    assert d.conflicts() == [] and d.get("101").name == "Иван"  # type: ignore[union-attr]
    store.close()


def test_an_extension_changing_hands_never_keeps_the_old_chat(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite3")
    d = Directory(store.db)
    d.upsert(Employee("102", "Бывший", "12", "777", source="bitrix24"))
    d.upsert(Employee("102", "Новый", "", "", source="config"))  # the admin gives 102 to someone else
    assert d.telegram_chat("102") is None
    d.upsert(Employee("101", "Иван", "", "901", source="config"))
    d.deactivate_others("config", keep=set())  # 101 and 102 left config.yaml: Bitrix24 may take them
    assert d.upsert(Employee("101", "Пётр", "13", "", source="bitrix24"))
    assert d.telegram_chat("101") is None and d.bitrix_user("101") == "13"
    store.close()


async def test_a_bitrix24_takeover_is_refused_reported_and_cannot_ring(
    tmp_path: Path, bitrix: FakeBitrix, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("json", "info")
    bitrix.users.append(bx_user(66, "103", "Чужой Сотрудник", tg="666"))  # config.yaml's 103
    async with running(config(tmp_path, bitrix.webhook_url)) as (app, url), aiohttp.ClientSession() as s:
        await until(lambda: app.directory.conflicts(), timeout=10)
        e = app.directory.get("103")
        assert e == Employee("103", "Секретарь", "", "303", True, "config")
        assert app.directory.bitrix_user("103") is None and app.directory.by_bitrix_user("66") is None
        # Click-to-call from the claimant's CRM card rings nobody.
        form = {
            "event": "ONEXTERNALCALLSTART",
            "data[CALL_ID]": "externalCall.1",
            "data[USER_ID]": "66",
            "data[PHONE_NUMBER]": "79001234567",
            "auth[application_token]": APP_TOKEN,
        }
        async with s.post(url, data=form) as resp:
            assert resp.status == 200
        await until(lambda: app.jobs.counts().get("dead"), timeout=10)
        (job,) = app.jobs.list("dead")
        assert "no extension for Bitrix24 user 66" in (job.last_error or "")
    log = capsys.readouterr().err
    assert '"event": "directory.conflict"' in log and '"extension": "103"' in log


async def test_employees_cli_lists_conflicts(
    tmp_path: Path, bitrix: FakeBitrix, capsys: pytest.CaptureFixture[str]
) -> None:
    bitrix.users.append(bx_user(66, "103", "Чужой Сотрудник"))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(
        f"storage:\n  dir: {tmp_path}\n"
        f"sinks:\n  bitrix24:\n    enabled: true\n    webhook_url: {bitrix.webhook_url}\n"
        "directory:\n  employees:\n    '103': {name: Секретарь, telegram_chat_id: '303'}\n"
    )
    code = await asyncio.to_thread(main, ["employees", "sync", "-c", str(cfg_file)])
    assert code == 0
    assert "конфликтов: 1" in capsys.readouterr().out
    assert main(["employees", "-c", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "   103  Секретарь  telegram: 303  bitrix24: —  [config]" in out
    assert "Конфликты (1)" in out
    assert (
        "пользователь Bitrix24 66 (Чужой Сотрудник) указал этот номер, но он закреплён в config.yaml" in out
    )
    assert 'bitrix_user_id: "66"' in out
    # The user corrects their number in Bitrix24: the conflict is gone after the next sync.
    bitrix.users[-1]["UF_PHONE_INNER"] = "166"
    assert await asyncio.to_thread(main, ["employees", "sync", "-c", str(cfg_file)]) == 0
    assert main(["employees", "-c", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "Конфликты" not in out and "   166  Чужой Сотрудник" in out
