"""Every failure a person meets names its real cause, in Russian, and no traceback reaches them:
``python -m bridge ...`` as a sysadmin runs it, with a config in a temporary folder."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.cli import outbox as outbox_cli
from bridge.cli.main import main
from tests.fakes.ami import FakeAmi
from tests.helpers import until

REPO = Path(__file__).resolve().parents[3]


async def cli(*args: str, lang: str = "C.UTF-8", timeout: float = 60) -> tuple[int, str, str]:
    env = {**os.environ, "NOVOFON_BRIDGE_ENV": os.devnull, "LC_ALL": lang}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    text = out.decode() + err.decode()
    assert "Traceback" not in text, text
    return proc.returncode, out.decode(), err.decode()


def config(tmp_path: Path, *, ami_port: int = 1, ami_secret: str = "x", extra: str = "") -> Path:
    """A config in tmp_path: its own storage, no HTTP unless ``extra`` says so."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"asterisk:\n  ami:\n    host: 127.0.0.1\n    port: {ami_port}\n    secret: {ami_secret}\n"
        f"    connect_timeout: 1\n    reconnect_max_delay: 1\n"
        f"storage:\n  dir: {tmp_path / 'state'}\nsinks:\n  console:\n    enabled: false\n{extra}"
    )
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    ami = await FakeAmi().start()
    yield ami
    await ami.stop()


# -- the daemon's start ------------------------------------------------------------------------------


async def test_run_port_in_use(tmp_path: Path, busy_port: int) -> None:
    code, _, err = await cli("run", "-c", str(config(tmp_path, extra=f"http:\n  port: {busy_port}\n")))
    assert code == 1
    assert f"ошибка: порт 127.0.0.1:{busy_port} уже занят другой программой" in err
    assert f"ss -ltnp 'sport = :{busy_port}'" in err and "http.port" in err


async def test_run_a_second_daemon_on_the_same_port(tmp_path: Path) -> None:
    port = free_port()
    first = config(tmp_path / "first", extra=f"http:\n  port: {port}\n")
    env = {**os.environ, "NOVOFON_BRIDGE_ENV": os.devnull}
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "-c", str(first), cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until(lambda: answers_healthz(port), timeout=20)
        second = config(tmp_path / "second", extra=f"http:\n  port: {port}\n")
        code, _, err = await cli("run", "-c", str(second))
    finally:
        daemon.terminate()
        await daemon.wait()
    assert code == 1
    assert f"порт 127.0.0.1:{port} занят: там уже работает novofon-bridge" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status in (200, 503)
    except urllib.error.HTTPError as e:
        return e.code == 503
    except OSError:
        return False


async def test_run_bad_bind_address(tmp_path: Path) -> None:
    code, _, err = await cli("run", "-c", str(config(tmp_path, extra="http:\n  bind: 999.1.1.1\n")))
    assert code == 2
    assert "ошибка в настройках:" in err
    assert "http.bind: '999.1.1.1' — не IPv4-адрес (четыре числа 0-255 через точку" in err


async def test_run_bind_address_not_of_this_machine(tmp_path: Path) -> None:
    code, _, err = await cli("run", "-c", str(config(tmp_path, extra="http:\n  bind: 192.0.2.1\n")))
    assert code == 1
    assert "ошибка: адреса 192.0.2.1 нет на этой машине" in err and "ip -br addr" in err


async def test_run_storage_dir_is_a_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "state").write_text("not a folder")
    code, _, err = await cli("run", "-c", str(cfg))
    assert code == 4  # a storage problem
    assert f"ошибка: storage.dir {tmp_path / 'state'} — это файл, а не папка" in err


@pytest.mark.parametrize("command", [["run"], ["outbox", "list"], ["jobs"], ["employees"]])
async def test_storage_dir_not_writable(tmp_path: Path, command: list[str]) -> None:
    # /proc/sys is a folder nobody, root included, may create files in (os.access says so too).
    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "state"), "/proc/sys"))
    code, _, err = await cli(*command, "-c", str(cfg))
    assert code == 4  # a storage problem
    # /proc/sys is read-only here: said as such; elsewhere as a folder without write access.
    said = "ошибка: нет прав на запись в storage.dir /proc/sys" in err and "chown" in err
    assert said or (
        "storage.dir /proc/sys на файловой системе только для чтения" in err and "remount,rw" in err
    )


async def test_storage_dir_cannot_be_created(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "state"), "/proc/sys/novofon-bridge"))
    code, _, err = await cli("run", "-c", str(cfg))
    assert code == 4  # a storage problem
    assert "папки storage.dir /proc/sys/novofon-bridge нет, и создать её нельзя" in err


# -- AMI ----------------------------------------------------------------------------------------------


async def test_nothing_listens_on_the_ami_port(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port surely closed: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, _, err = await cli("status", "-c", str(config(tmp_path, ami_port=port)))
    assert code == 3
    assert f"нет подключения к AMI 127.0.0.1:{port}: соединение отклонено" in err
    assert "Asterisk запущен" in err


async def test_ami_banner_timeout(tmp_path: Path) -> None:
    clients: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)  # accepts, never says a word

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code, _, err = await cli("status", "-c", str(config(tmp_path, ami_port=port)))
    finally:
        for w in clients:
            w.close()
        server.close()
        await server.wait_closed()
    assert code == 3
    assert f"127.0.0.1:{port} принял соединение, но не прислал приветствие AMI за 1 с" in err
    assert "на этом порту не AMI" in err


async def test_ami_refuses_the_login(tmp_path: Path, fake_ami: FakeAmi) -> None:
    cfg = config(tmp_path, ami_port=fake_ami.port, ami_secret="wrong-secret-value")
    code, _, err = await cli("status", "-c", str(cfg))
    assert code == 3
    assert "Asterisk отказал во входе пользователю AMI 'novofon-bridge'" in err
    assert "AMI_SECRET" in err and "wrong-secret-value" not in err


async def test_a_missing_write_class_is_named_not_blamed_on_pjsip(tmp_path: Path) -> None:
    ami = await FakeAmi(write={"call", "originate"}).start()  # no reporting
    try:
        code, out, err = await cli(
            "status", "-c", str(config(tmp_path, ami_port=ami.port, ami_secret=ami.secret))
        )
    finally:
        await ami.stop()
    assert code == 3
    assert "нет права write=reporting (manager.conf)" in err
    assert "PJSIPShowRegistrationsOutbound" in err and "manager reload" in err
    assert "pjsip.conf" not in out + err


async def test_call_without_the_originate_class(tmp_path: Path) -> None:
    ami = await FakeAmi(write={"call", "reporting"}).start()
    try:
        cfg = config(tmp_path, ami_port=ami.port, ami_secret=ami.secret)
        code, _, err = await cli("call", "79991234567", "-c", str(cfg))
    finally:
        await ami.stop()
    assert code == 1
    assert "Asterisk отказал в вызове: у пользователя AMI 'novofon-bridge' нет права write=originate" in err
    assert "write = call,originate,reporting" in err


async def test_a_config_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    code, _, err = await cli("check", "-c", str(tmp_path / "config.yaml"))
    assert code == 2
    assert f"[ОШИБКА] Настройки: {tmp_path / 'config.yaml'}: не удалось прочитать: Is a directory" in err


def test_an_unforeseen_error_is_one_line_and_debug_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object) -> int:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(outbox_cli, "run", broken)
    monkeypatch.setenv("NOVOFON_BRIDGE_ENV", os.devnull)
    monkeypatch.delenv("NOVOFON_BRIDGE_DEBUG", raising=False)
    assert main(["outbox", "-c", str(config(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "непредвиденная ошибка: RuntimeError: something nobody foresaw" in err
    assert "NOVOFON_BRIDGE_DEBUG=1" in err
    monkeypatch.setenv("NOVOFON_BRIDGE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["outbox", "-c", str(config(tmp_path))])
