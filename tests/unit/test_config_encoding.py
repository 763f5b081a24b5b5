"""A config.yaml saved in cp1251 (a Windows editor) is named with its line and the fix, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.cli.main import main


def test_cp1251_config_names_the_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("pbx:\n  lines:\n    '74951234567': Отдел продаж\n".encode("cp1251"))
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: файл не в кодировке UTF-8 (строка 3, байт 0xce)")
    assert "Windows-1251" in message and f"iconv -f cp1251 -t utf-8 {path}" in message


def test_cli_reports_it_as_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("# Настройки\n".encode("cp1251"))
    assert main(["check", "--no-connect", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "не в кодировке UTF-8 (строка 1" in err and "Traceback" not in err


def test_utf8_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("\ufeffpbx:\n  lines:\n    '74951234567': Отдел продаж\n".encode())
    assert config_mod.load(path).pbx.lines == {"74951234567": "Отдел продаж"}
