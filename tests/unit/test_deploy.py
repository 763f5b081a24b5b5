"""deploy/: install.sh finds a Python >= 3.11 or says how to get one; logrotate and the unit agree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.config import Config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPT = DEPLOY / "install.sh"


def bash(script: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` after sourcing install.sh, with only ``path`` (fake pythons) and the tools it uses."""
    path.mkdir(exist_ok=True)
    for tool in ("dirname", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (path / tool).symlink_to(found)
    return subprocess.run(
        ["/bin/bash", "-c", f"source {SCRIPT}; {script}"],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def fake_python(folder: Path, name: str, new_enough: bool) -> Path:
    """A python that answers install.sh's version check (exit 0: >= 3.11)."""
    folder.mkdir(exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\nexit {0 if new_enough else 1}\n")
    exe.chmod(0o755)
    return exe


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"python3": False, "python3.11": True, "python3.12": True}, "python3.12"),
        ({"python3": False, "python3.11": True}, "python3.11"),
        ({"python3": True, "python3.10": False}, "python3"),
        ({"python3.13": True, "python3": True}, "python3.13"),
    ],
)
def test_finds_the_newest_python_that_is_new_enough(
    tmp_path: Path, present: dict[str, bool], expected: str
) -> None:
    for name, ok in present.items():
        fake_python(tmp_path / "bin", name, ok)
    done = bash("find_python", tmp_path / "bin")
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "bin" / expected)


def test_without_a_python_it_says_how_to_get_one_on_ubuntu_22_04(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin", "python3", False)  # Ubuntu 22.04's own 3.10
    done = bash("find_python || { no_python; exit 1; }", tmp_path / "bin")
    assert done.returncode == 1 and done.stdout == ""
    assert "sudo apt install python3.11 python3.11-venv" in done.stderr
    assert "ppa:deadsnakes/ppa" in done.stderr and "Ubuntu 22.04" in done.stderr


def tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)


@pytest.mark.parametrize("apt_works", [True, False])
def test_lame_for_telegram_recordings_comes_from_apt_and_is_never_fatal(
    tmp_path: Path, apt_works: bool
) -> None:
    """The README promises MP3 recordings in Telegram after install.sh: it installs LAME."""
    log = tmp_path / "apt.log"
    tool(tmp_path / "bin", "apt-get", f'echo "$@" >> {log}; exit {0 if apt_works else 100}')
    done = bash("install_encoder; echo done", tmp_path / "bin")
    assert done.returncode == 0 and done.stdout.strip().endswith("done")
    assert log.read_text().split() == ["install", "-y", "-q", "--no-install-recommends", "lame"]
    assert ("Установлен lame" if apt_works else "файлом WAV") in done.stdout
    log.unlink()
    tool(tmp_path / "again", "apt-get", f'echo "$@" >> {log}')
    tool(tmp_path / "again", "lame", "exit 0")  # already there: apt is not asked
    assert bash("install_encoder", tmp_path / "again").returncode == 0 and not log.exists()


def test_unknown_option_prints_usage(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--upgrade" in done.stderr and "--uninstall" in done.stderr


def test_logrotate_rotates_the_daemons_file_and_reloads_the_service() -> None:
    rotate = (DEPLOY / "logrotate").read_text()
    assert f"{Config().jsonl_path} {{" in rotate
    assert "systemctl reload novofon-bridge.service" in rotate
    unit = (DEPLOY / "novofon-bridge.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit  # the daemon reopens the file on SIGHUP
