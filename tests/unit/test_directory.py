"""The employee directory, filled from config.yaml and from Bitrix24 (events and user.get sync)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

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
    d.upsert(Employee("102", "Пётр", "12"))
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
