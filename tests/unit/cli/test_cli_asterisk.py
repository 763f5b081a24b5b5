"""novofon-bridge asterisk install/uninstall from the command line: secrets, dry run, reloads."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import envfile
from bridge.cli.main import main
from tests.unit.pbx.test_install import OFFICE, office, snapshot


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NOVOFON_BRIDGE_ENV", str(tmp_path / "env"))
    folder = tmp_path / "asterisk"
    office(folder)
    (folder / "asterisk.conf").write_text(f"[directories]\nastrundir => {tmp_path / 'run'}\n")
    return folder


@pytest.fixture
def running_asterisk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A control socket where asterisk.conf says, and an ``asterisk`` on PATH that logs its arguments."""
    (tmp_path / "run").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "run" / "asterisk.ctl"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "asterisk.log"
    fake = bin_dir / "asterisk"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    yield log
    sock.close()


def test_install_stores_new_secrets_in_the_env_file_and_never_prints_them(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    out = capsys.readouterr()
    env = tmp_path / "env"
    values = envfile.read(env)
    assert values is not None and len(values["AMI_SECRET"]) == 48 and len(values["ARI_PASSWORD"]) == 48
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert f"secret = {values['AMI_SECRET']}" in (etc / "novofon-bridge_manager.conf").read_text()
    assert f"password = {values['ARI_PASSWORD']}" in (etc / "novofon-bridge_ari.conf").read_text()
    for secret in values.values():
        assert secret not in out.out + out.err
    assert "AMI_SECRET: записан в" in out.out
    assert "Asterisk не запущен (нет " in out.out


def test_install_uses_the_secret_already_in_the_env_file(etc: Path, tmp_path: Path) -> None:
    (tmp_path / "env").write_text(
        "# secrets\nAMI_SECRET=change-me-to-a-long-random-string\nARI_PASSWORD='kept-Password'\nTELEGRAM=x\n"
    )
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    lines = (tmp_path / "env").read_text().splitlines()
    assert lines[0] == "# secrets" and lines[2:] == ["ARI_PASSWORD='kept-Password'", "TELEGRAM=x"]
    assert lines[1].startswith("AMI_SECRET=") and "change-me" not in lines[1]  # the placeholder replaced
    assert "password = kept-Password" in (etc / "novofon-bridge_ari.conf").read_text()


def test_dry_run_shows_the_diff_and_writes_nothing(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "env").write_text("AMI_SECRET=Given-Secret-1\n")
    before = snapshot(etc)
    assert main(["asterisk", "install", "--etc", str(etc), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '+#include "novofon-bridge_pjsip.conf"' in out and "+secret = ********" in out
    assert "Given-Secret-1" not in out
    assert (
        "Пробный запуск: ничего не записано" in out and "module reload res_pjsip.so; dialplan reload" in out
    )
    assert snapshot(etc) == before
    assert (tmp_path / "env").read_text() == "AMI_SECRET=Given-Secret-1\n"  # no ARI_PASSWORD written


def test_install_reloads_what_it_changed_when_asterisk_runs(
    etc: Path, running_asterisk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    conf = etc / "asterisk.conf"
    assert running_asterisk.read_text().splitlines() == [
        f"-C {conf} -rx module reload res_pjsip.so",
        f"-C {conf} -rx dialplan reload",
        f"-C {conf} -rx manager reload",
        f"-C {conf} -rx module reload res_ari.so",
    ]
    assert "Asterisk: manager reload — выполнено" in capsys.readouterr().out
    running_asterisk.unlink()
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0  # nothing changed: nothing reloaded
    assert not running_asterisk.exists()
    assert "Ничего не изменено" in capsys.readouterr().out

    assert main(["asterisk", "uninstall", "--etc", str(etc)]) == 0
    assert len(running_asterisk.read_text().splitlines()) == 4
    assert snapshot(etc) == {**OFFICE, "asterisk.conf": conf.read_bytes()}


def test_a_refused_install_exits_1_with_the_reason(etc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (etc / "extensions.conf").open("ab") as f:
        f.write(b"[novofon-record]\nexten => s,1,Return()\n")
    before = snapshot(etc)
    assert main(["asterisk", "install", "--etc", str(etc)]) == 1
    assert "раздел [novofon-record] с другим содержимым" in capsys.readouterr().err
    assert snapshot(etc) == before


def test_no_such_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asterisk", "uninstall", "--etc", str(tmp_path / "nope")]) == 1
    assert "нет папки" in capsys.readouterr().err


def test_a_reload_asterisk_refuses_is_reported(
    etc: Path, tmp_path: Path, running_asterisk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # asterisk -rx exits 0 for an unknown command: the installer reads what it printed.
    (tmp_path / "bin" / "asterisk").write_text("#!/bin/sh\necho \"No such command '$4'\"\n")
    assert main(["asterisk", "install", "--etc", str(etc)]) == 1
    assert "Asterisk: dialplan reload — ОШИБКА: No such command 'dialplan reload'" in capsys.readouterr().out


def test_an_env_file_that_lost_the_secret_gets_the_one_asterisk_has(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    env = tmp_path / "env"
    first = envfile.read(env)
    env.write_text("TELEGRAM_BOT_TOKEN=1:x\n")  # the sysadmin replaced the file
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    again = envfile.read(env)
    assert first is not None and again is not None
    assert again["AMI_SECRET"] == first["AMI_SECRET"] and again["ARI_PASSWORD"] == first["ARI_PASSWORD"]
    env.write_text(env.read_text().replace(f"AMI_SECRET={first['AMI_SECRET']}", "AMI_SECRET=Another-One"))
    capsys.readouterr()
    assert main(["asterisk", "install", "--etc", str(etc)]) == 0
    out = capsys.readouterr().out
    assert "ВНИМАНИЕ: AMI_SECRET в" in out and first["AMI_SECRET"] not in out and "Another-One" not in out


def test_a_file_system_error_is_a_message_not_a_traceback(
    etc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (etc / "novofon-bridge_pjsip.conf").mkdir()  # something in the way of a file install writes
    assert main(["asterisk", "install", "--etc", str(etc)]) == 1
    assert "novofon-bridge_pjsip.conf" in capsys.readouterr().err
