"""The staff CLI against the real lab: test calls, call-backs, status, check."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from bridge.app import App
from bridge.pbx.ami import AmiConnection, AmiSettings
from tests.conftest import REPO, lab_env
from tests.helpers import MemorySink
from tests.lab import lab as L

pytestmark = pytest.mark.lab

#: Calls go over ARI when asterisk.ari has a password (the lab's env gives it), over AMI without.
VIA = pytest.mark.parametrize("via", ["ari", "ami"])


def env_via(lab: L.Lab, state: Path, via: str) -> dict[str, str]:
    env = lab_env(lab, state)
    return env if via == "ari" else {**env, "ARI_PASSWORD": ""}


async def cli(lab: L.Lab, state: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "-c",
        str(REPO / "config.yaml"),
        *args,
        env=env or lab_env(lab, state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@VIA
async def test_call_through_the_trunk(
    daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path, via: str
) -> None:
    _, sink = daemon
    code, out, err = await cli(lab, tmp_path, "call", L.NUM_TEST, env=env_via(lab, tmp_path, via))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("тестовый звонок на +7 999 123-45-67")
    assert [line.split(" ")[0] for line in lines[1:4]] == ["набор", "идёт", "ответили,"]
    assert lines[-1].startswith("готово: разговор")
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    events = [(r.fields["event"], r.fields.get("destination"), r.fields.get("disposition")) for r in records]
    assert events == [
        ("NOTIFY_OUT_START", L.NUM_TEST, None),
        ("NOTIFY_ANSWER", L.NUM_TEST, None),
        ("NOTIFY_OUT_END", L.NUM_TEST, "answered"),
        ("NOTIFY_RECORD", None, None),
    ]
    assert records[0].pbx_call_id.startswith("out_nbcall-")
    assert records[0].fields["internal"] == ""  # placed by the PBX itself, not from a phone


@VIA
async def test_call_to_a_busy_number_fails_with_reason(
    daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path, via: str
) -> None:
    _, sink = daemon
    code, _, err = await cli(lab, tmp_path, "call", L.NUM_BUSY, env=env_via(lab, tmp_path, via))
    assert code == 1
    assert "звонок не удался: занято (BUSY" in err
    records = await sink.wait_events("NOTIFY_OUT_END")
    assert records[-1].fields["disposition"] == "busy"


@VIA
async def test_callback_rings_employee_then_client(
    daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path, via: str
) -> None:
    _, sink = daemon
    seen_by_network: list[str] = []  # the caller number the "phone network" (provider) received

    def on_provider_event(msg: dict[str, str]) -> None:
        if msg.get("Event") == "Newchannel" and msg.get("Context") == "from-pbx":
            seen_by_network.append(msg.get("CallerIDNum", ""))

    watcher = await AmiConnection.open(
        AmiSettings(host=L.PROVIDER_IP, username="lab", secret="lab"), on_provider_event
    )
    # Handset 102 answers after 2 s and hangs up 3 s later.
    code, out, err = await cli(
        lab,
        tmp_path,
        *("callback", "--employee", "102", "--client", "8 900 111-00-01", "--from", L.DID_GROUP),
        env=env_via(lab, tmp_path, via),
    )
    assert code == 0, out + err
    assert "звонит телефон сотрудника" in out
    assert "сотрудник ответил, звоним клиенту" in out
    assert "ответили, идёт разговор" in out
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    shape = [(r.fields["event"], r.fields.get("internal"), r.fields.get("destination")) for r in records]
    assert shape == [
        ("NOTIFY_OUT_START", "102", L.NUM_ANSWER),
        ("NOTIFY_ANSWER", "102", L.NUM_ANSWER),
        ("NOTIFY_OUT_END", "102", L.NUM_ANSWER),
        ("NOTIFY_RECORD", None, None),
    ]
    assert records[2].fields["disposition"] == "answered"
    await watcher.close()
    assert seen_by_network == [L.DID_GROUP]  # --from: the client sees our number


@VIA
async def test_callback_employee_busy(lab: L.Lab, tmp_path: Path, via: str) -> None:
    env = env_via(lab, tmp_path, via)
    code, _, err = await cli(
        lab, tmp_path, "callback", "--employee", "104", "--client", L.NUM_ANSWER, env=env
    )
    assert code == 1
    assert "звонок не удался: сотрудник 104 занят (cause 17)" in err


async def test_status_shows_trunk_and_ami(daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path) -> None:
    code, out, err = await cli(lab, tmp_path, "status")
    assert code == 0, out + err
    assert f"AMI: подключено к {L.PBX_IP}:5038" in out
    assert "ARI: приложение novofon-bridge зарегистрировано (демон подключён)" in out
    assert "Транк novofon-reg: зарегистрирован" in out
    assert "Активных звонков: 0" in out


async def test_check_reports_wrong_ami_secret_without_leaking_it(lab: L.Lab, tmp_path: Path) -> None:
    env = {**lab_env(lab, tmp_path), "AMI_SECRET": "wrong-secret-value"}
    code, out, err = await cli(lab, tmp_path, "check", env=env)
    assert code == 2
    assert "[ОШИБКА] AMI: вход: Asterisk отказал во входе пользователю AMI 'novofon-bridge'" in err
    assert "wrong-secret-value" not in out + err


async def test_check_says_when_ami_is_unreachable(lab: L.Lab, tmp_path: Path) -> None:
    env = {**lab_env(lab, tmp_path), "AMI_PORT": "5039"}
    code, _, err = await cli(lab, tmp_path, "check", env=env)
    assert code == 2
    assert f"нет подключения к AMI {L.PBX_IP}:5039: соединение отклонено" in err


async def test_check_on_the_lab_pbx_is_all_ok(lab: L.Lab, tmp_path: Path) -> None:
    """The preflight against a real Asterisk 22 with our snippets installed: login, every permission
    (ListCommands), FullyBooted, manager.conf as shipped (read from the PBX's etc), the trunk."""
    etc = str(lab.host_path(L.PBX, "etc"))
    env = {**lab_env(lab, tmp_path), "NOVOFON_BRIDGE_HTTP_PORT": str(free_port())}
    code, out, err = await cli(lab, tmp_path, "check", "--etc", etc, env=env)
    assert code == 0, out + err
    for line in (
        f"[ок] AMI: вход: novofon-bridge@{L.PBX_IP}:5038",
        "[ок] AMI: права: разрешены все нужные действия",
        "[ок] AMI: события: события приходят",
        "[ок] manager.conf [novofon-bridge]: read = call,dialplan,agent,user,system, "
        "write = call,originate,reporting",
        "[ок] manager.conf [novofon-bridge]: фильтр событий: как в поставке",
        f"[ок] Транк novofon-reg: зарегистрирован на sip:{L.PROVIDER_IP}:5060",
        "[ок] Записи разговоров:",
        "Итог: всё в порядке",
    ):
        assert line in out, out + err


async def test_an_ami_user_without_the_bridges_classes(lab: L.Lab, tmp_path: Path) -> None:
    """The office's own panel user (read=call, write=call): every missing class is named, with the
    line of manager.conf to change — never "check pjsip.conf"."""
    config = tmp_path / "panel.yaml"
    config.write_text(
        f"asterisk:\n  ami:\n    host: {L.PBX_IP}\n    username: panel\n    secret: lab-panel-secret\n"
        f"storage:\n  dir: {tmp_path}\nhttp:\n  port: {free_port()}\n"
    )
    env = lab_env(lab, tmp_path)
    code, out, err = await cli(lab, tmp_path, "-c", str(config), "status", env=env)
    assert code == 3
    assert "нет права write=reporting (manager.conf)" in err and "pjsip.conf" not in out + err
    code, out, err = await cli(
        lab, tmp_path, "-c", str(config), "check", "--etc", str(lab.host_path(L.PBX, "etc")), env=env
    )
    assert code == 2
    assert "[ОШИБКА] AMI: права: у пользователя AMI 'panel' нет права write=originate" in err
    assert "[ОШИБКА] manager.conf [panel]: read = call: нет system" in err
    assert "[ВНИМАНИЕ] AMI: события: после входа не пришло FullyBooted" in err


async def test_call_to_an_unknown_number_says_so(lab: L.Lab, tmp_path: Path) -> None:
    """The provider answers 404 (cause 1) to a number it does not know; Dial() says NOANSWER."""
    code, _, err = await cli(lab, tmp_path, "call", "79005550000")
    assert code == 1
    assert "звонок не удался: номер не существует (cause 1" in err
    assert "нет ответа" not in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
