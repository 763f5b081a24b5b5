"""The CLI reads /etc/novofon-bridge/env as systemd's EnvironmentFile= does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import envfile
from bridge.cli.main import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words  \n", {"A": "1", "B": "two words"}),
        ("  KEY  =  value\n", {"KEY": "value"}),
        ("# comment\n; also\n\nA=1", {"A": "1"}),
        ("A='single $HOME \\n'\n", {"A": "single $HOME \\n"}),
        ('A="dq \\"x\\" \\\\ \\$ \\n"\n', {"A": 'dq "x" \\ $ \\n'}),
        ('A="multi\nline"\n', {"A": "multi\nline"}),
        ("A=one\\\ntwo\n", {"A": "onetwo"}),
        ("A=x\\ y\n", {"A": "x y"}),
        ("A='a'\"b\" c\n", {"A": "abc"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("A=\nB\n=x\n1BAD=y\nC=#not a comment\n", {"A": "", "C": "#not a comment"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ],
)
def test_parses_like_systemd(text: str, expected: dict[str, str]) -> None:
    assert envfile.parse(text) == expected


def test_load_into_keeps_what_is_already_set(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text("AMI_SECRET=from-file\nOTHER=o\n")
    environ = {"AMI_SECRET": "from-shell"}
    assert envfile.load_into(environ, file) is None
    assert environ == {"AMI_SECRET": "from-shell", "OTHER": "o"}
    assert envfile.load_into(environ, tmp_path / "missing") is None


def test_unreadable_file_is_a_warning_that_names_it(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_bytes("AMI_SECRET=пароль\n".encode("cp1251"))
    warning = envfile.load_into({}, file)
    assert warning is not None and str(file) in warning and "UTF-8" in warning
    assert "пароль".encode("cp1251").decode("latin-1") not in warning


def test_check_finds_the_ami_secret_in_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"asterisk:\n  ami:\n    secret: ${{AMI_SECRET}}\nstorage:\n  dir: {tmp_path}\n")
    monkeypatch.setenv("AMI_SECRET", "placeholder")
    monkeypatch.delenv("AMI_SECRET")  # recorded, so that the value main() sets is undone after the test
    monkeypatch.setenv("NOVOFON_BRIDGE_ENV", str(tmp_path / "env"))
    assert main(["check", "--no-connect", "-c", str(config)]) == 2
    assert "AMI_SECRET is not set" in capsys.readouterr().err

    (tmp_path / "env").write_text('AMI_SECRET="Very-Secret-Value"\n')
    assert main(["check", "--no-connect", "-c", str(config)]) == 0
    out = capsys.readouterr()
    assert "конфигурация в порядке" in out.out
    assert "Very-Secret-Value" not in out.out + out.err


def test_no_permission_warns_except_under_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "env"
    file.write_text("A=1\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    warning = envfile.load_into({}, file)
    assert warning is not None and "нет прав на чтение" in warning and "sudo" in warning
    monkeypatch.setenv("INVOCATION_ID", "abc")  # a systemd service: EnvironmentFile= did the work
    assert envfile.load_into({}, file) is None
