"""``novofon-bridge check``: the framework (severities, exit codes, --no-connect, a check that
breaks) and each part's checks against fakes as strict as the real services (AMI, Telegram,
Bitrix24) and real files (manager.conf, folders, ports)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.config import Config, HttpConfig, StorageConfig, load
from bridge.http import preflight as http_preflight
from bridge.http.server import HttpServer
from bridge.integrations.bitrix24 import preflight as bitrix24_preflight
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.telegram import preflight as telegram_preflight
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.pbx import preflight as pbx_preflight
from bridge.pbx import recordings_access as rec
from bridge.pbx.ami_protocol import ActionResult
from bridge.pbx.trunk import registration_results
from bridge.preflight import Check, Context, Result, Severity, exit_code, render, run, summary
from tests.fakes.ami import REGISTERED, FakeAmi
from tests.fakes.bitrix import FakeBitrix
from tests.fakes.telegram import BOT_USERNAME, TOKEN, FakeTelegram

REPO = Path(__file__).resolve().parents[3]
SHIPPED_MANAGER = (REPO / "asterisk-conf" / "novofon-bridge_manager.conf").read_text()


def ctx(cfg: Config, etc: Path | None = None) -> Context:
    return Context(cfg, etc or Path("/nonexistent"), asterisk_etc_given=etc is not None)


def severities(results: list[Result]) -> list[tuple[str, Severity]]:
    return [(r.name, r.severity) for r in results]


# -- the framework ------------------------------------------------------------------------------------


async def test_exit_code_is_the_worst_severity_and_no_connect_keeps_offline_checks() -> None:
    async def fine() -> list[Result]:
        return [Result.ok("a", "fine")]

    async def warns() -> list[Result]:
        return [Result.warning("b", "hm", "do this")]

    async def fails() -> list[Result]:
        return [Result.error("c", "broken", "fix that")]

    checks = [Check("a", fine, online=False), Check("b", warns, online=False), Check("c", fails)]
    assert exit_code(await run(checks, connect=True)) == 2
    offline = await run(checks, connect=False)
    assert [r.name for r in offline] == ["a", "b"] and exit_code(offline) == 1
    assert exit_code(await run(checks[:1], connect=True)) == 0
    assert render(Result.error("c", "broken", "fix that")) == "[ОШИБКА] c: broken\n    Что сделать: fix that"
    assert summary(offline) == "Итог: ошибок 0, предупреждений 1 (код выхода 1)"


async def test_a_check_that_breaks_is_an_error_of_its_own_and_the_others_still_run() -> None:
    async def broken() -> list[Result]:
        raise KeyError("oops")

    async def fine() -> list[Result]:
        return [Result.ok("fine", "ok")]

    results = await run([Check("broken", broken), Check("fine", fine)], connect=True)
    assert severities(results) == [("broken", Severity.ERROR), ("fine", Severity.OK)]
    assert "KeyError" in results[0].text


# -- AMI: login, permissions, events, trunk ----------------------------------------------------------


def ami_config(ami: FakeAmi, tmp_path: Path, secret: str | None = None) -> Config:
    base = load(None)
    a = dataclasses.replace(
        base.asterisk.ami, host="127.0.0.1", port=ami.port, secret=secret or ami.secret, connect_timeout=2
    )
    return dataclasses.replace(
        base,
        asterisk=dataclasses.replace(base.asterisk, ami=a),
        storage=StorageConfig(str(tmp_path)),
    )


@pytest.fixture
async def make_ami() -> AsyncIterator[type[FakeAmi]]:
    started: list[FakeAmi] = []

    class Started(FakeAmi):
        async def start(self) -> FakeAmi:
            started.append(self)
            return await super().start()

    yield Started
    for ami in started:
        await ami.stop()


async def test_ami_as_shipped_is_all_ok(make_ami: type[FakeAmi], tmp_path: Path) -> None:
    ami = await make_ami(write={"call", "originate", "reporting"}).start()
    results = await pbx_preflight.ami(ami_config(ami, tmp_path))
    assert all(r.severity is Severity.OK for r in results), [render(r) for r in results]
    assert [r.name for r in results] == ["AMI: вход", "AMI: права", "AMI: события", "Транк novofon-reg"]
    assert "ListCommands" in ami.names() and "Originate" not in ami.names()  # asked, nothing dialled


async def test_each_missing_write_class_is_named_once_with_its_actions(
    make_ami: type[FakeAmi], tmp_path: Path
) -> None:
    ami = await make_ami(write={"call"}).start()
    results = await pbx_preflight.ami(ami_config(ami, tmp_path))
    errors = [r for r in results if r.severity is Severity.ERROR]
    assert [e.text.split(" (manager.conf)")[0] for e in errors] == [
        "у пользователя AMI 'novofon-bridge' нет права write=originate",
        "у пользователя AMI 'novofon-bridge' нет права write=reporting",
    ]
    assert "CoreShowChannels, PJSIPShowRegistrationsOutbound" in errors[1].text
    assert "write = call,originate,reporting" in errors[1].fix and "manager reload" in errors[1].fix
    trunk = results[-1]
    assert trunk.severity is Severity.WARNING and "не проверен" in trunk.text


async def test_no_read_system_means_no_fully_booted(make_ami: type[FakeAmi], tmp_path: Path) -> None:
    ami = await make_ami(read=frozenset({"call"})).start()
    results = {r.name: r for r in await pbx_preflight.ami(ami_config(ami, tmp_path))}
    events = results["AMI: события"]
    assert events.severity is Severity.WARNING and "read=system" in events.text
    assert "read = call,dialplan,agent,user,system" in events.fix


async def test_a_refused_login_skips_the_rest(make_ami: type[FakeAmi], tmp_path: Path) -> None:
    ami = await make_ami().start()
    (result,) = await pbx_preflight.ami(ami_config(ami, tmp_path, secret="wrong-secret-value"))
    assert result.severity is Severity.ERROR and result.name == "AMI: вход"
    assert "Asterisk отказал во входе пользователю AMI 'novofon-bridge'" in result.text
    assert "пропущены" in result.text and "wrong-secret-value" not in result.text + result.fix


def regs(*details: dict[str, str]) -> ActionResult:
    return ActionResult(
        {"Response": "Success"},
        [
            {
                "Event": "OutboundRegistrationDetail",
                "Password": "trunk-password",  # Asterisk sends the auth section too
                **d,
            }
            for d in details
        ],
    )


def test_trunk_states_are_explained() -> None:
    rejected, unregistered = (
        registration_results(regs({**REGISTERED, "Status": status}), ["novofon"])[0]
        for status in ("Rejected", "Unregistered")
    )
    assert rejected.severity is Severity.ERROR and "Rejected" in rejected.text
    assert (
        "логин" in rejected.text
        and "пароль" in rejected.fix
        and "pjsip send register novofon-reg" in rejected.fix
    )
    assert unregistered.severity is Severity.ERROR and "Unregistered" in unregistered.text
    assert all(word in unregistered.fix for word in ("NAT", "identify/match", "external_signaling_address"))
    assert all("trunk-password" not in r.text + r.fix for r in (rejected, unregistered))


def test_trunk_registrations_of_other_endpoints() -> None:
    other = {
        "ObjectName": "beeline-reg",
        "Status": "Unregistered",
        "Endpoint": "beeline",
        "ServerUri": "sip:b",
    }
    mine_and_other = registration_results(regs(REGISTERED, other), ["novofon"])
    assert severities(mine_and_other) == [
        ("Транк novofon-reg", Severity.OK),
        ("Транк beeline-reg", Severity.OK),
    ]
    assert "не транк моста" in mine_and_other[1].text
    only_other = registration_results(regs({**REGISTERED, "Endpoint": "Novofon_trunk"}), ["novofon"])
    assert only_other[-1].severity is Severity.WARNING and "Novofon_trunk" in only_other[-1].text
    assert "asterisk.trunk_endpoints" in only_other[-1].fix
    (none,) = registration_results(regs(), ["novofon"])
    assert none.severity is Severity.WARNING and "по IP" in none.fix


# -- manager.conf ------------------------------------------------------------------------------------


def etc_with(tmp_path: Path, user_section: str) -> Path:
    """An /etc/asterisk whose manager.conf includes a file holding our user (as install does)."""
    etc = tmp_path / "asterisk"
    etc.mkdir(parents=True)
    (etc / "manager.conf").write_text(
        "[general]\nenabled = yes\n\n[panel]\nsecret = x\nread = call\nwrite = call\n\n"
        "#include novofon-bridge_manager.conf\n"
    )
    (etc / "novofon-bridge_manager.conf").write_text(user_section)
    return etc


async def test_manager_conf_as_shipped(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, SHIPPED_MANAGER)
    results = await pbx_preflight.manager_user(ctx(load(None), etc))
    assert severities(results) == [
        ("manager.conf [novofon-bridge]", Severity.OK),
        ("manager.conf [novofon-bridge]: фильтр событий", Severity.OK),
    ]
    assert "read = call,dialplan,agent,user,system, write = call,originate,reporting" in results[0].text


async def test_manager_conf_filter_without_hangup(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, SHIPPED_MANAGER.replace("eventfilter(action(include),name(Hangup)) =\n", ""))
    result = (await pbx_preflight.manager_user(ctx(load(None), etc)))[-1]
    assert result.severity is Severity.ERROR and "не пропускает события, нужные мосту: Hangup" in result.text


async def test_manager_conf_without_filter_or_with_unknown_lines(tmp_path: Path) -> None:
    no_filter = "\n".join(line for line in SHIPPED_MANAGER.splitlines() if not line.startswith("eventfilter"))
    etc = etc_with(tmp_path / "a", no_filter)
    result = (await pbx_preflight.manager_user(ctx(load(None), etc)))[-1]
    assert result.severity is Severity.WARNING and "фильтра нет" in result.text
    extra = (
        SHIPPED_MANAGER
        + "eventfilter = !Channel: DAHDI*\neventfilter(action(include),name(QueueMemberStatus)) =\n"
    )
    etc = etc_with(tmp_path / "b", extra)
    result = (await pbx_preflight.manager_user(ctx(load(None), etc)))[-1]
    assert result.severity is Severity.WARNING and "eventfilter=!Channel: DAHDI*" in result.text
    assert "QueueMemberStatus" not in result.text  # one more event let through is harmless


async def test_manager_conf_privileges(tmp_path: Path) -> None:
    changed = SHIPPED_MANAGER.replace(
        "read = call,dialplan,agent,user,system", "read = call,dialplan"
    ).replace("write = call,originate,reporting", "write = all")
    etc = etc_with(tmp_path, changed)
    results = await pbx_preflight.manager_user(ctx(load(None), etc))
    assert severities(results)[:2] == [
        ("manager.conf [novofon-bridge]", Severity.ERROR),
        ("manager.conf [novofon-bridge]", Severity.WARNING),
    ]
    assert "нет system" in results[0].text and "оболочки" in results[1].text


async def test_manager_conf_of_an_older_install_without_the_recordings_file_name(tmp_path: Path) -> None:
    """read= without dialplan, no VarSet filter line: calls are tracked, recordings found less
    surely — a warning for each, naming the fix, never an error."""
    older = SHIPPED_MANAGER.replace("read = call,dialplan,agent,user,system", "read = call,agent,user,system")
    older = "\n".join(line for line in older.splitlines() if "name(VarSet)" not in line)
    etc = etc_with(tmp_path, older)
    results = await pbx_preflight.manager_user(ctx(load(None), etc))
    assert severities(results) == [
        ("manager.conf [novofon-bridge]", Severity.WARNING),
        ("manager.conf [novofon-bridge]: фильтр событий", Severity.WARNING),
    ]
    assert "нет dialplan" in results[0].text and "MIXMONITOR_FILENAME" in results[0].text
    assert "VarSet(MIXMONITOR_FILENAME)" in results[1].text and "dialplan" in results[1].fix
    no_hangup = older.replace("eventfilter(action(include),name(Hangup)) =\n", "")
    result = (await pbx_preflight.manager_user(ctx(load(None), etc_with(tmp_path / "b", no_hangup))))[-1]
    assert result.severity is Severity.ERROR and "Hangup, VarSet(MIXMONITOR_FILENAME)" in result.text


async def test_manager_conf_without_our_user_or_file(tmp_path: Path) -> None:
    etc = etc_with(tmp_path, "; nothing here\n")
    (missing,) = await pbx_preflight.manager_user(ctx(load(None), etc))
    assert missing.severity is Severity.ERROR and "novofon-bridge asterisk install" in missing.fix
    (not_there,) = await pbx_preflight.manager_user(ctx(load(None), tmp_path / "none"))
    assert not_there.severity is Severity.WARNING and "не проверено" in not_there.text


async def test_manager_conf_of_a_remote_asterisk_is_not_guessed(tmp_path: Path) -> None:
    base = load(None)
    remote = dataclasses.replace(
        base,
        asterisk=dataclasses.replace(
            base.asterisk, ami=dataclasses.replace(base.asterisk.ami, host="10.0.0.5")
        ),
    )
    (result,) = await pbx_preflight.manager_user(Context(remote, Path("/etc/asterisk")))
    assert result.severity is Severity.WARNING and "на другой машине (10.0.0.5)" in result.text


# -- recordings ---------------------------------------------------------------------------------------

SERVICE = rec.Who("novofon-bridge", 64000, frozenset({64000, 64001}), True)  # 64001: "asterisk"


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder whose parents anyone may pass (pytest's tmp_path sits in a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="novofon-rec-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_recordings_readable_by_the_service_user_by_mode_bits(open_folder: Path, tmp_path: Path) -> None:
    monitor = open_folder / "monitor"
    day = monitor / "2026" / "11" / "29"
    day.mkdir(parents=True)
    (monitor / "2025").mkdir()  # older year: the newest folder is followed
    wav = day / "in-74950000100-79161234567-20261129-125652-1764417412.5.wav"
    wav.write_bytes(b"RIFF")
    os.chown(monitor, 0, 64001)
    for path in (monitor, monitor / "2026", monitor / "2026" / "11", day, wav):
        os.chown(path, 0, 64001)
        path.chmod(0o750 if path.is_dir() else 0o640)
    assert rec.unreadable(monitor, SERVICE) is None
    wav.chmod(0o600)  # MixMonitor under a strict umask
    assert rec.unreadable(monitor, SERVICE) == f"{wav} (root:{rec._group(64001)}, 0600)"
    day.chmod(0o700)
    assert rec.unreadable(monitor, SERVICE) == f"{day} (root:{rec._group(64001)}, 0700)"
    monitor.chmod(0o700)
    assert rec.unreadable(monitor, SERVICE) == f"{monitor} (root:{rec._group(64001)}, 0700)"
    day.chmod(0o750)
    monitor.chmod(0o750)
    inside = tmp_path / "monitor"  # below pytest's own 0700 folder: a parent is in the way
    shutil.copytree(monitor, inside)
    blocked = rec.unreadable(inside, SERVICE)
    assert blocked is not None and blocked.endswith(", 0700)") and not blocked.startswith(str(inside))


async def test_recordings_folder_missing_or_hidden_from_the_service(tmp_path: Path) -> None:
    def with_dir(folder: str) -> Config:
        base = load(None)
        return dataclasses.replace(base, asterisk=dataclasses.replace(base.asterisk, recordings_dir=folder))

    (missing,) = await pbx_preflight.recordings(with_dir("/var/spool/no-such-monitor-h9"))
    assert missing.severity is Severity.WARNING and "нет" in missing.text
    (hidden,) = await pbx_preflight.recordings(with_dir(str(tmp_path)))
    assert hidden.severity is Severity.WARNING and "PrivateTmp" in hidden.text
    # Any readable folder outside /tmp and /home (where the repository may be cloned) will do.
    (fine,) = await pbx_preflight.recordings(with_dir("/usr/share"))
    assert fine.severity is Severity.OK


# -- HTTP ---------------------------------------------------------------------------------------------


def http_cfg(port: int, bind: str = "127.0.0.1") -> Config:
    return dataclasses.replace(load(None), http=HttpConfig(bind=bind, port=port))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_http_port_free_taken_or_held_by_the_daemon() -> None:
    port = free_port()
    (free,) = await http_preflight.http(ctx(http_cfg(port)))
    assert free.severity is Severity.OK and "свободен" in free.text
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        (taken,) = await http_preflight.http(ctx(http_cfg(other.getsockname()[1])))
    assert taken.severity is Severity.ERROR and "занят другой программой" in taken.text
    daemon = HttpServer("127.0.0.1", port, [], dict)
    await daemon.start()
    try:
        (ours,) = await http_preflight.http(ctx(http_cfg(port)))
    finally:
        await daemon.stop()
    assert ours.severity is Severity.OK and "уже запущенный novofon-bridge" in ours.text
    (random,) = await http_preflight.http(ctx(http_cfg(0)))
    assert random.severity is Severity.WARNING


# -- Telegram -----------------------------------------------------------------------------------------


def telegram_cfg(tg: FakeTelegram, token: str = TOKEN) -> Config:
    base = load(None)
    t = TelegramSettings(
        enabled=True,
        token=token,
        api_url=tg.url,
        group_chats=["-1001", "-1002", "-1003", "-100"],
        sms_chats=["55"],
    )
    return dataclasses.replace(base, sinks=dataclasses.replace(base.sinks, telegram=t))


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(blocked={"55"})
    await fake.start()
    yield fake
    await fake.stop()


async def test_telegram_bot_and_each_chat(tg: FakeTelegram) -> None:
    tg.known_chats = {"-1001", "-1002", "-1003", "55"}
    tg.left = {"-1002"}
    tg.migrated = {"-100": "-1004"}
    results = await telegram_preflight.telegram(telegram_cfg(tg))
    by_name = {r.name: r for r in results}
    assert by_name["Telegram: бот"].text == f"токен верный, бот @{BOT_USERNAME}"
    assert by_name["Telegram: чат -1001"].severity is Severity.OK
    assert "(left)" in by_name["Telegram: чат -1002"].text
    assert "(left)" not in by_name["Telegram: чат -1003"].text
    assert (
        "-1004" in by_name["Telegram: чат -100"].text
        and "sinks.telegram.group_chats" in by_name["Telegram: чат -100"].fix
    )
    assert (
        "/start" in by_name["Telegram: чат 55"].fix
        and "sinks.telegram.sms_chats" in by_name["Telegram: чат 55"].fix
    )
    assert all(TOKEN not in r.text + r.fix for r in results)


async def test_telegram_wrong_token_and_unreachable_api(tg: FakeTelegram) -> None:
    (wrong,) = await telegram_preflight.telegram(
        telegram_cfg(tg, token="123456789:AAwrongTokenForTheTest_abcdefghij")
    )
    assert (
        wrong.severity is Severity.ERROR
        and "не принял токен (401" in wrong.text
        and "@BotFather" in wrong.fix
    )
    cfg = telegram_cfg(tg)
    t = dataclasses.replace(cfg.sinks.telegram, api_url=f"http://127.0.0.1:{free_port()}")
    (down,) = await telegram_preflight.telegram(
        dataclasses.replace(cfg, sinks=dataclasses.replace(cfg.sinks, telegram=t))
    )
    assert (
        down.severity is Severity.ERROR and "недоступен" in down.text and "sinks.telegram.api_url" in down.fix
    )


# -- Bitrix24 -----------------------------------------------------------------------------------------


async def test_bitrix24_scopes_through_its_own_checks(tmp_path: Path) -> None:
    bx = FakeBitrix(webhook_scopes=frozenset({"crm", "telephony"}))
    await bx.start()
    try:
        base = load(None)
        b = Bitrix24Settings(enabled=True, webhook_url=bx.webhook_url)
        cfg = dataclasses.replace(
            base, sinks=dataclasses.replace(base.sinks, bitrix24=b), storage=StorageConfig(str(tmp_path))
        )
        (check,) = bitrix24_preflight.checks(ctx(cfg))
        (result,) = await check.run()
    finally:
        await bx.stop()
    assert result.severity is Severity.ERROR and "«user»" in result.text


# -- the command --------------------------------------------------------------------------------------


def test_the_systemd_unit_starts_on_warnings_and_not_on_errors(tmp_path: Path) -> None:
    """ExecStartPre runs `check --no-connect`: exit 1 (warnings) must not stop the start."""
    unit = (REPO / "deploy" / "novofon-bridge.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStartPre=")]
    command = line.removeprefix("ExecStartPre=").replace("$$", "$")  # systemd's own unescaping
    assert command.startswith("/bin/sh -c '") and command.endswith("'")
    script = command.removeprefix("/bin/sh -c '").removesuffix("'")
    for code, starts in ((0, True), (1, True), (2, False)):
        stub = tmp_path / "novofon-bridge"
        stub.write_text(f"#!/bin/sh\nexit {code}\n")
        stub.chmod(0o755)
        done = subprocess.run(
            ["/bin/sh", "-c", script.replace("/opt/novofon-bridge/venv/bin/novofon-bridge", str(stub))],
            check=False,
        )
        assert (done.returncode == 0) is starts, code
