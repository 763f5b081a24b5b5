"""AMI injection, entrance by entrance, against a fake AMI server that records every byte.

Each hostile value tries to end the action early ("\\r\\n") and smuggle in a second one — an
``Originate`` of ``Application: System`` — or to dial a SIP URI through the trunk, or to pass
Unicode digits off as a number. Every entrance refuses it before anything reaches AMI; a valid
value beside it shows the harness does see what is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge import logs
from bridge.calls.records import CallRecord
from bridge.cli.main import main
from bridge.config import Config
from bridge.directory import Directory
from bridge.errors import PermanentFailure
from bridge.http.client import Http
from bridge.integrations.bitrix24.click_to_call import JOB, STALE_AFTER, ClickToCall
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.directory_sync import DirectorySync
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.jobs import Jobs
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.pbx.ami import AmiConnection, AmiSupervisor
from bridge.pbx.originate import Originator
from tests.fakes.ami import FakeAmi
from tests.fakes.bitrix import FakeBitrix
from tests.helpers import offline_config

SMUGGLED = (
    "\r\nAction: Originate\r\nChannel: Local/s@default\r\nApplication: System\r\nData: touch /tmp/pwned"
)
HOSTILE_NUMBERS = [
    "79001234567" + SMUGGLED,
    "79001234567\nAction: Command",
    "79001234567\r",
    "sip:attacker@evil.example",
    "79001234567@evil.example",
    "PJSIP/79001234567@novofon",
    "٧٩٠٠١٢٣٤٥٦٧",  # Arabic-Indic digits: str.isdigit() says yes
    "７９００１２３４５６７",  # fullwidth digits
    "79001234567\x00",
    "7" * 16,
]
HOSTILE_EXTENSIONS = [
    "101" + SMUGGLED,
    "101\n",
    "101\r\n",
    "١٠١",
    "101@evil.example",
    "101/..",
    "1",  # not an extension by the default asterisk.internal_extensions
    "",
]


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    fake = await FakeAmi().start()
    yield fake
    await fake.stop()


def cli_config(tmp: Path, ami: FakeAmi) -> Path:
    path = tmp / "config.yaml"
    path.write_text(
        f"asterisk:\n  ami:\n    port: {ami.port}\n    secret: {ami.secret}\n    connect_timeout: 2\n"
        f"storage:\n  dir: {tmp}\nsinks:\n  console:\n    enabled: false\n"
    )
    return path


# -- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", HOSTILE_NUMBERS)
async def test_cli_call_refuses_a_hostile_number_before_connecting(
    number: str, ami: FakeAmi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["-c", str(cli_config(tmp_path, ami)), "call", number])
    assert code == 2
    err = capsys.readouterr().err
    assert "ошибка:" in err and "звонок не сделан" in err
    assert "\r" not in err and "Action: Originate" not in err.replace("\\r\\nAction: Originate", "")
    assert ami.connections == 0 and ami.raw == b""


@pytest.mark.parametrize(
    "args",
    [
        *(["--employee", ext, "--client", "79001234567"] for ext in HOSTILE_EXTENSIONS if ext),
        *(["--employee", "101", "--client", n] for n in HOSTILE_NUMBERS),
        *(["--employee", "101", "--client", "79001234567", "--from", n] for n in HOSTILE_NUMBERS),
    ],
)
async def test_cli_callback_refuses_hostile_parties_before_connecting(
    args: list[str], ami: FakeAmi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["-c", str(cli_config(tmp_path, ami)), "callback", *args])
    assert code == 2, capsys.readouterr()
    assert "звонок не сделан" in capsys.readouterr().err
    assert ami.connections == 0 and ami.raw == b""


async def test_cli_callback_with_valid_parties_sends_exactly_one_originate(
    ami: FakeAmi, tmp_path: Path
) -> None:
    """The control: the harness sees what a valid call-back sends."""
    args = ["callback", "--employee", "101", "--client", "8 (900) 123-45-67", "--from", "+7 495 000-01-00"]
    await asyncio.to_thread(main, ["-c", str(cli_config(tmp_path, ami)), *args, "--timeout", "0.3"])
    assert ami.names() == ["Login", "Originate", "Logoff"]
    (originate,) = ami.of("Originate")
    assert originate["Channel"] == "PJSIP/101"
    assert originate["Exten"] == "79001234567"
    assert originate["Variable"] == "OUTBOUND_CALLERID=74950000100"


# -- the daemon: Bitrix24 users, click-to-call, the Telegram button -------------------------------


class Daemon:
    """The daemon's call placing (Originator over an AmiSupervisor) on the fake AMI, with the
    Bitrix24 directory sync and click-to-call on a fake Bitrix24 portal."""

    def __init__(self, cfg: Config, ami: FakeAmi, bitrix: FakeBitrix, store: OutboxStore, http: Http) -> None:
        self.published: list[CallRecord] = []

        async def connected(conn: AmiConnection, lost_at: float | None) -> None:
            pass

        self.sup = AmiSupervisor(ami.settings(), lambda m: None, connected)
        self.calls = Originator(cfg, self.sup, self.published.extend)
        self.directory = Directory(store.db)
        state = StateStore(store.db)
        settings = Bitrix24Settings(enabled=True, webhook_url=bitrix.webhook_url, rate=50)
        self.sync = DirectorySync(
            BitrixClient(settings, http, state), self.directory, extensions=cfg.asterisk.internal_extensions
        )
        self.jobs = Jobs(store.db)
        self.clicks = ClickToCall(self.directory, state, self.jobs, self.calls, "7")
        self.jobs.handle(JOB, self.clicks.originate, STALE_AFTER)


@pytest.fixture
async def daemon(ami: FakeAmi, tmp_path: Path) -> AsyncIterator[tuple[Daemon, FakeBitrix]]:
    bitrix = FakeBitrix()
    await bitrix.start()
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    http = Http()
    d = Daemon(offline_config(tmp_path), ami, bitrix, store, http)
    task = asyncio.create_task(d.sup.run())
    try:
        await asyncio.wait_for(d.sup.connected.wait(), 5)
        yield d, bitrix
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await http.close()
        store.close()
        await bitrix.stop()


def bx_user(uid: int, ext: str) -> dict[str, Any]:
    return {
        "ID": str(uid),
        "NAME": "Имя",
        "LAST_NAME": f"Фамилия{uid}",
        "UF_PHONE_INNER": ext,
        "ACTIVE": True,
    }


async def test_bitrix_user_with_a_hostile_internal_number_is_never_stored_nor_dialled(
    daemon: tuple[Daemon, FakeBitrix], ami: FakeAmi, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("json", "info")
    d, bitrix = daemon
    bitrix.users = [bx_user(7 + i, ext) for i, ext in enumerate(HOSTILE_EXTENSIONS)]
    bitrix.users.append(bx_user(50, "102"))  # the control: a valid user beside them
    result = await d.sync.sync_all()
    assert result.saved == 1
    assert [(e.extension, e.bitrix_user_id) for e in d.directory.all()] == [("102", "50")]
    err = capsys.readouterr().err
    assert err.count("directory.bad_extension") == len([e for e in HOSTILE_EXTENSIONS if e])
    assert "\\r\\nAction: Originate" in err and "\r" not in err  # escaped in the log line, never raw
    # One user at a time (the ONUSERUPDATE job) refuses it the same way.
    await d.sync.sync_user("7")
    assert len(d.directory.all()) == 1
    # Each hostile user clicks to call: nobody is rung; the valid one rings exactly once.
    for i, user in enumerate(bitrix.users):
        d.clicks.accept(
            {"CALL_ID": f"externalCall.{i}", "USER_ID": user["ID"], "PHONE_NUMBER": "79001234567"}
        )
    await d.jobs.work()
    dead = d.jobs.list("dead")
    assert len(dead) == len(HOSTILE_EXTENSIONS) and all("no extension" in (j.last_error or "") for j in dead)
    (originate,) = ami.of("Originate")
    assert originate["Channel"] == "PJSIP/102" and originate["Exten"] == "79001234567"
    assert ami.names() == ["Login", "Originate"]


@pytest.mark.parametrize(
    ("extension", "phone"),
    [*(("101", n) for n in HOSTILE_NUMBERS), *((e, "79001234567") for e in HOSTILE_EXTENSIONS)],
)
async def test_originator_ring_refuses_hostile_values_from_any_caller(
    daemon: tuple[Daemon, FakeBitrix], ami: FakeAmi, extension: str, phone: str
) -> None:
    """Originator.ring is where click-to-call and the Telegram «Перезвонить» button reach AMI;
    a job read back from the database is checked there too."""
    d, _ = daemon
    with pytest.raises(PermanentFailure):
        await d.calls.ring(extension, phone, d.calls.new_channel_id("tg"))
    with pytest.raises(PermanentFailure):
        await d.calls.ring("101", "79001234567", "tg-1\r\nAction: Command")
    assert ami.names() == ["Login"]
    await d.calls.ring("101", "79001234567", d.calls.new_channel_id("tg"))  # the control
    assert ami.names() == ["Login", "Originate"]


async def test_click_to_call_with_a_hostile_phone_is_refused_at_the_door_and_at_ami(
    daemon: tuple[Daemon, FakeBitrix], ami: FakeAmi
) -> None:
    d, bitrix = daemon
    bitrix.users = [bx_user(50, "102")]
    await d.sync.sync_all()
    with pytest.raises(Exception, match="PHONE_NUMBER"):
        d.clicks.accept({"CALL_ID": "externalCall.1", "USER_ID": "50", "PHONE_NUMBER": "7900" + SMUGGLED})
    # Unicode digits pass the door's str.isdigit(); Originator.ring refuses them.
    d.clicks.accept({"CALL_ID": "externalCall.2", "USER_ID": "50", "PHONE_NUMBER": "٧٩٠٠١٢٣٤٥٦٧"})
    await d.jobs.work()
    (dead,) = d.jobs.list("dead")
    assert "не похож на телефонный номер" in (dead.last_error or "")
    assert ami.names() == ["Login"]


@pytest.mark.parametrize("typed", ["+7 (900) 123-45-67", "8 900 123-45-67", "89001234567", "+79001234567"])
async def test_click_to_call_takes_the_number_as_bitrix24_writes_it(
    daemon: tuple[Daemon, FakeBitrix], ami: FakeAmi, typed: str
) -> None:
    """A CRM card holds "+7 (900) 123-45-67" or "8 900 …": the PBX dials 79001234567."""
    d, bitrix = daemon
    bitrix.users = [bx_user(50, "102")]
    await d.sync.sync_all()
    assert d.clicks.accept({"CALL_ID": "externalCall.9", "USER_ID": "50", "PHONE_NUMBER": typed}) == "queued"
    await d.jobs.work()
    (originate,) = ami.of("Originate")
    assert (originate["Channel"], originate["Exten"]) == ("PJSIP/102", "79001234567")
