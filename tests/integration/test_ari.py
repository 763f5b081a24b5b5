"""Call control over ARI on the real lab: every per-leg outcome, as the CLI, Bitrix24 and the
Telegram message tell it; no talk-time limit; Ctrl-C; a daemon restart mid-call.

The lab's handsets: 101 answers and stays, 102 answers and hangs up after 3 s, 103 never answers
(or rejects, with its dialplan patched for one test), 104 is busy. The provider's numbers answer,
are busy, never answer, or do not exist."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from bridge.app import App
from bridge.config import Config, DirectoryConfig, EmployeeConfig
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.state import TelegramCall, save_call
from bridge.outbox.state import StateStore
from bridge.pbx.ami import AmiConnection, AmiSettings
from tests.conftest import REPO, arx, hangup_all, lab_config, lab_env
from tests.fakes.bitrix import ExternalCall, FakeBitrix, portal_user
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import until
from tests.lab import lab as L
from tests.lab.calls import call_out, open_instance

pytestmark = pytest.mark.lab

RING = 4  # the employee's phone rings this long in these tests (pbx.employee_ring_timeout)
UNALLOCATED = "79009999999"  # the provider knows no such number
APP_TOKEN = "lab-bitrix-application-token"
GROUP = "-1007770000002"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    employee: str
    client: str
    cli: str  # what the CLI says at the end
    bitrix: str  # STATUS_CODE of telephony.externalcall.finish
    telegram: str  # the line put under the missed call
    reject: bool = False


CASES = [
    Case(
        "employee busy",
        "104",
        L.NUM_ANSWER,
        "сотрудник 104 занят (cause 17)",
        "486",
        "Не удалось перезвонить: сотрудник 104 занят",
    ),
    Case(
        "employee no answer",
        "103",
        L.NUM_ANSWER,
        "сотрудник 103 не ответил (cause 19)",
        "480",
        "Не удалось перезвонить: сотрудник 103 не ответил",
    ),
    Case(
        "employee rejects",
        "103",
        L.NUM_ANSWER,
        "сотрудник 103 отклонил вызов (cause 21)",
        "603",
        "Не удалось перезвонить: сотрудник 103 отклонил вызов",
        reject=True,
    ),
    Case(
        "client busy",
        "101",
        L.NUM_BUSY,
        "клиент: занято (BUSY)",
        "486",
        "Перезвонили (101): занято, разговор 0:00",
    ),
    Case(
        "client no answer",
        "101",
        L.NUM_NOANSWER,
        "клиент: нет ответа (NOANSWER)",
        "480",
        "Перезвонили (101): нет ответа, разговор 0:00",
    ),
    Case(
        "client unallocated",
        "101",
        UNALLOCATED,
        "клиент: номер не существует (cause 1, Dial: NOANSWER)",
        "404",
        "Перезвонили (101): номер не существует, разговор 0:00",
    ),
    Case(
        "answered",
        "102",
        L.NUM_ANSWER,
        "завершён: сотрудник положил трубку",
        "200",
        "Перезвонили (102): отвечен, разговор 0:0",
    ),
]
IDS = [c.name for c in CASES]


@contextlib.contextmanager
def rejecting_103(lab: L.Lab, on: bool) -> Iterator[None]:
    """Handset 103 declines calls (SIP 403, cause 21) instead of ringing, for one test."""
    if not on:
        yield
        return
    lab.rx(L.PHONES, "dialplan add extension 103,1,Hangup(21) into handsets replace")
    try:
        yield
    finally:
        lab.rx(L.PHONES, "dialplan add extension 103,1,Ringing() into handsets replace")


def config_file(tmp_path: Path) -> Path:
    """The shipped config.yaml with the employee's phone ringing RING seconds."""
    data = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    data["pbx"]["employee_ring_timeout"] = RING
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def start_cli(
    lab: L.Lab, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "-c",
        str(config_file(tmp_path)),
        *args,
        env=env or lab_env(lab, tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def cli(
    lab: L.Lab, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await start_cli(lab, tmp_path, *args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def pbx_channels(lab: L.Lab) -> list[str]:
    out = await arx(lab, L.PBX, "core show channels concise")
    return [line for line in out.splitlines() if "!" in line]


async def channel_names(lab: L.Lab, at_least: int = 0) -> set[str]:
    """The PBX's live channels, once there are at least ``at_least`` of them."""
    for _ in range(100):
        names = {line.split("!")[0] for line in await pbx_channels(lab)}
        if len(names) >= at_least:
            return names
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} channels on the PBX: {names}")


async def no_calls_left(lab: L.Lab) -> None:
    async def empty() -> bool:
        return not await pbx_channels(lab)

    for _ in range(100):
        if await empty():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"calls left on the PBX: {await pbx_channels(lab)}")


# -- the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_cli_callback_tells_each_legs_outcome(lab: L.Lab, tmp_path: Path, case: Case) -> None:
    with rejecting_103(lab, case.reject):
        code, out, err = await cli(
            lab, tmp_path, "callback", "--employee", case.employee, "--client", case.client
        )
    if case.bitrix == "200":
        assert code == 0, out + err
        assert out.splitlines()[-1].startswith("готово: разговор ") and case.cli in out
    else:
        assert code == 1, out + err
        assert err.strip().endswith(f"звонок не удался: {case.cli}"), out + err
    await no_calls_left(lab)


async def test_cli_shows_the_client_on_the_handset_and_our_number_to_the_client(
    lab: L.Lab, tmp_path: Path
) -> None:
    seen: dict[str, list[str]] = {"handset": [], "network": []}

    def on_phones(msg: dict[str, str]) -> None:  # what handset 102 is shown as the caller
        if msg.get("Event") == "Newchannel" and msg.get("Exten") == "102":
            seen["handset"].append(f"{msg.get('CallerIDName')} <{msg.get('CallerIDNum')}>")

    def on_provider(msg: dict[str, str]) -> None:  # the caller number the "phone network" receives
        if msg.get("Event") == "Newchannel" and msg.get("Context") == "from-pbx":
            seen["network"].append(msg.get("CallerIDNum", ""))

    phones = await AmiConnection.open(AmiSettings(host=L.PHONES_IP, username="lab", secret="lab"), on_phones)
    provider = await AmiConnection.open(
        AmiSettings(host=L.PROVIDER_IP, username="lab", secret="lab"), on_provider
    )
    try:
        code, out, err = await cli(
            lab,
            tmp_path,
            "callback",
            "--employee",
            "102",
            "--client",
            "8 900 111-00-01",
            "--from",
            L.DID_GROUP,
        )
    finally:
        await phones.close()
        await provider.close()
    assert code == 0, out + err
    assert seen == {"handset": [f"Обратный звонок <{L.NUM_ANSWER}>"], "network": [L.DID_GROUP]}


async def test_cli_never_cuts_a_conversation_and_ctrl_c_hangs_up_only_its_own_call(
    lab: L.Lab, tmp_path: Path, phones: AmiConnection
) -> None:
    # An unrelated call on the same PBX: handset 103 talks to a client for a minute.
    await call_out(phones, "103", L.NUM_ANSWER, talk=60)
    others = await channel_names(lab, at_least=2)
    # 101 answers and stays, the client answers and stays: a conversation as long as anyone likes.
    proc = await start_cli(
        lab, tmp_path, "callback", "--employee", "101", "--client", L.NUM_ANSWER, "--timeout", "3"
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or lines[-1] != "ответили, идёт разговор":
            lines.append((await proc.stdout.readline()).decode().strip())
    # The CLI's give-up timer (3 s) only applies while nobody has answered: well past it, still talking.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 3 + 4)
    ours = {line.split("!")[0] for line in await pbx_channels(lab)} - others
    assert any(c.startswith("PJSIP/101-") for c in ours) and any(c.startswith("PJSIP/novofon-") for c in ours)

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    code = await asyncio.wait_for(proc.wait(), 15)
    err = (await proc.stderr.read()).decode()
    assert code == 130 and "прервано: вызовы этой команды сброшены" in err, err
    for _ in range(100):
        left = {line.split("!")[0] for line in await pbx_channels(lab)}
        if not left & ours:
            break
        await asyncio.sleep(0.1)
    assert not left & ours, left
    assert others <= left  # the other call is untouched
    await hangup_all(lab)


async def test_cli_test_call_and_the_ami_path_still_work(lab: L.Lab, tmp_path: Path) -> None:
    code, out, err = await cli(lab, tmp_path, "call", L.NUM_TEST)
    assert code == 0, out + err
    assert [line.split(" ")[0] for line in out.splitlines()[1:4]] == ["набор", "идёт", "ответили,"]
    ami_only = {**lab_env(lab, tmp_path), "ARI_PASSWORD": ""}  # ARI not configured: AMI Originate
    code, out, err = await cli(
        lab, tmp_path, "callback", "--employee", "104", "--client", L.NUM_ANSWER, env=ami_only
    )
    assert code == 1 and "звонок не удался: сотрудник 104 занят (cause 17)" in err, out + err
    code, out, err = await cli(lab, tmp_path, "check", env=ami_only)
    assert "[ок] ARI: не используется — пароль не задан (ARI_PASSWORD); звонки идут через AMI" in out, (
        out + err
    )


async def test_check_and_status_report_ari(lab: L.Lab, tmp_path: Path) -> None:
    """check is the preflight, also before the first start: the login, and the application not
    registered yet is fine; status says whether the running daemon's application is there."""
    etc = str(lab.host_path(L.PBX, "etc"))
    env = {**lab_env(lab, tmp_path), "NOVOFON_BRIDGE_HTTP_PORT": str(free_port())}
    code, out, err = await cli(lab, tmp_path, "check", "--etc", etc, env=env)
    assert code == 0, out + err
    assert f"[ок] ARI: вход выполнен (http://{L.PBX_IP}:8088/ari, Asterisk 22." in out
    assert "[ок] ARI: приложение novofon-bridge пока не зарегистрировано" in out
    code, out, err = await cli(lab, tmp_path, "status")  # also run on a stopped daemon's database
    assert code == 0, out + err
    assert "ARI: приложение novofon-bridge не зарегистрировано — демон не запущен" in out
    wrong = {**env, "ARI_PASSWORD": "wrong-ari-password"}
    code, out, err = await cli(lab, tmp_path, "check", "--etc", etc, env=wrong)
    assert code == 2 and "[ОШИБКА] ARI: вход не принят:" in err and "HTTP 401" in err, out + err
    assert "ARI_PASSWORD" in err and "wrong-ari-password" not in out + err
    code, out, err = await cli(lab, tmp_path, "status", env=wrong)
    assert code == 3 and "ARI: нет подключения" in err and "wrong-ari-password" not in out + err

    app = App(lab_config(lab, tmp_path / "daemon"))
    async with running(app):
        code, out, err = await cli(lab, tmp_path, "check", "--etc", etc, env=env)
        assert "[ок] ARI: приложение novofon-bridge зарегистрировано (демон подключён)" in out, out + err
        assert code == 0, out + err
        code, out, err = await cli(lab, tmp_path, "status")
        assert code == 0 and "звонки идут через ARI" in out, out + err
        st = app.status()["ari"]
        assert st["connected"] is True and st["calls_over"] == "ari" and st["app"] == "novofon-bridge"


# -- the daemon: Bitrix24 click-to-call and the Telegram button -------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    ari = app.components.ari
    assert ari is not None
    await asyncio.wait_for(app.ami.connected.wait(), 20)
    await asyncio.wait_for(ari.connected.wait(), 20)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def daemon_config(lab: L.Lab, state: Path, tg: FakeTelegram, bx: FakeBitrix) -> Config:
    cfg = lab_config(lab, state)
    sinks = dataclasses.replace(
        cfg.sinks,
        console=dataclasses.replace(cfg.sinks.console, enabled=False),
        telegram=TelegramSettings(
            enabled=True,
            token=TOKEN,
            api_url=tg.url,
            group_chats=[GROUP],
            per_chat_rate=50,
            group_per_minute=3000,
        ),
        bitrix24=Bitrix24Settings(
            enabled=True,
            webhook_url=bx.webhook_url,
            default_user_id="1",
            rate=50,
            application_token=APP_TOKEN,
            sync_interval=0,
        ),
    )
    employees = {ext: EmployeeConfig(f"Сотрудник {ext}", f"70{ext}", f"1{ext}") for ext in L.EXTENSIONS}
    return dataclasses.replace(
        cfg,
        sinks=sinks,
        pbx=dataclasses.replace(cfg.pbx, employee_ring_timeout=RING),
        outbox=dataclasses.replace(cfg.outbox, retry_base=0.2, retry_cap=1.0),
        directory=DirectoryConfig(employees),
    )


@pytest.fixture
async def outside() -> AsyncIterator[tuple[FakeTelegram, FakeBitrix]]:
    # The strict fake refuses a USER_ID the portal does not have: the admin and 1<ext> per phone.
    users = [portal_user(1, "", "Администратор Портала")]
    users += [portal_user(f"1{ext}", ext, f"Сотрудник {ext}") for ext in L.EXTENSIONS]
    tg, bx = FakeTelegram(), FakeBitrix(users=users)
    await tg.start()
    await bx.start()
    try:
        yield tg, bx
    finally:
        await tg.stop()
        await bx.stop()


async def click(app: App, call_id: str, user_id: str, phone: str, line: str = "") -> None:
    assert app.http_server is not None
    form = {
        "event": "ONEXTERNALCALLSTART",
        "data[PHONE_NUMBER]": phone,
        "data[USER_ID]": user_id,
        "data[CALL_ID]": call_id,
        "data[LINE_NUMBER]": line,
        "auth[application_token]": APP_TOKEN,
    }
    url = f"http://127.0.0.1:{app.http_server.port}{app.cfg.sinks.bitrix24.events_path}"
    async with aiohttp.ClientSession() as s, s.post(url, data=form) as resp:
        assert resp.status == 200 and (await resp.json())["result"] == "queued"


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_bitrix_click_to_call_finishes_with_each_legs_status(
    lab: L.Lab, tmp_path: Path, outside: tuple[FakeTelegram, FakeBitrix], case: Case
) -> None:
    tg, bx = outside
    call_id = f"externalCall.{case.employee}{len(case.name)}"
    bx.calls[call_id] = ExternalCall(call_id, {"TYPE": "1"})  # registered by Bitrix24 itself on the click
    app = App(daemon_config(lab, tmp_path, tg, bx))
    with rejecting_103(lab, case.reject):
        async with running(app):
            await click(app, call_id, f"1{case.employee}", case.client, line=L.DID_GROUP)
            await until(lambda: bx.calls[call_id].finish is not None, timeout=40)
            await no_calls_left(lab)
            ends = app.store.db.execute("SELECT fields FROM records WHERE event='NOTIFY_OUT_END'").fetchall()
    finish = bx.calls[call_id].finish
    assert finish is not None and (finish["STATUS_CODE"], finish["USER_ID"]) == (
        case.bitrix,
        f"1{case.employee}",
    )
    assert [m for m, _ in bx.log if m.endswith("register")] == []  # always Bitrix24's own CALL_ID
    assert len(ends) == 1 and f'"internal": "{case.employee}"' in ends[0][0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_telegram_button_puts_each_legs_outcome_under_the_missed_call(
    lab: L.Lab, tmp_path: Path, outside: tuple[FakeTelegram, FakeBitrix], case: Case
) -> None:
    tg, bx = outside
    app = App(daemon_config(lab, tmp_path, tg, bx))
    # A missed call from the client, already shown in the group with its button.
    missed = "❌ Пропущенный звонок"
    tg.chats[GROUP] = {41: missed}
    view = {
        "caller": case.client,
        "direction": "in",
        "did": L.DID_GROUP,
        "ended": True,
        "disposition": "no answer",
    }
    save_call(StateStore(app.store.db), "in_missed", TelegramCall(view=view, messages={GROUP: 41}))
    with rejecting_103(lab, case.reject):
        async with running(app):
            tg.press(f"70{case.employee}", GROUP, 41, "cb:in_missed")
            await until(lambda: case.telegram in tg.chats[GROUP][41], timeout=40)
            await no_calls_left(lab)
            await until(lambda: not app.jobs.pending(), timeout=10)
    assert tg.chats[GROUP][41].startswith(f"{missed}\n↩️ {case.telegram}")


async def test_daemon_restart_mid_call_leaves_the_talk_alone(
    lab: L.Lab, tmp_path: Path, outside: tuple[FakeTelegram, FakeBitrix]
) -> None:
    tg, bx = outside
    cfg = daemon_config(lab, tmp_path, tg, bx)
    first = App(cfg)
    async with running(first):
        chan = first.components.calls.new_channel_id("b24")
        await first.components.calls.ring("101", L.NUM_ANSWER, chan)  # both sides stay on the line
        await until(
            lambda: first.store.db.execute("SELECT 1 FROM records WHERE event='NOTIFY_ANSWER'").fetchone()
        )
    # The daemon is gone (SIGTERM's path): the two are still talking, in our bridge.
    talking = await pbx_channels(lab)
    assert any(c.startswith("PJSIP/101-") for c in talking) and any(
        c.startswith("PJSIP/novofon-") for c in talking
    )
    second = App(cfg)
    async with running(second):
        assert await pbx_channels(lab) == talking  # re-adopted, not hung up
        assert second.components.stasis is not None and second.components.stasis.active == 1
        # The client hangs up: the re-adopted call ends for the employee too.
        provider = await open_instance(L.PROVIDER_IP)
        await provider.action("Hangup", {"Channel": "/.*/"})
        await provider.close()
        await no_calls_left(lab)
        await until(
            lambda: second.store.db.execute(
                "SELECT 1 FROM records WHERE event='NOTIFY_OUT_END' AND pbx_call_id=?", (f"out_{chan}",)
            ).fetchone(),
            timeout=20,
        )
