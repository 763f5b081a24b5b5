"""Russian for the people who run the bridge, English when their locale is English: the CLI's
help, its errors, ``check``'s output and config errors — config key names the same in both."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.unit.cli.test_cli_errors import cli, config

EN = "en_US.UTF-8"
RU = "ru_RU.UTF-8"


@pytest.mark.parametrize(
    ("lang", "says"),
    [
        (
            RU,
            [
                "использование: novofon-bridge",
                "команды:",
                "проверить всё перед запуском",
                "показать эту справку",
            ],
        ),
        ("C.UTF-8", ["использование: novofon-bridge", "тестовый звонок через транк"]),
        (EN, ["usage: novofon-bridge", "commands:", "check everything before the start", "show this help"]),
    ],
)
async def test_help(lang: str, says: list[str]) -> None:
    code, out, _ = await cli("--help", lang=lang)
    assert code == 0
    for text in says:
        assert text in out, out


async def test_check_help_tells_the_exit_codes_in_both_languages() -> None:
    _, ru, _ = await cli("check", "--help", lang=RU)
    assert "0 — всё в порядке, 1 — есть предупреждения, 2 — есть ошибки" in " ".join(ru.split())
    assert "--no-connect" in ru and "параметры:" in ru
    _, en, _ = await cli("check", "--help", lang=EN)
    assert "Exit code: 0 all good, 1 warnings, 2 errors" in " ".join(en.split()) and "options:" in en


@pytest.mark.parametrize(
    ("args", "ru", "en"),
    [
        (("outbox",), "retry — повторить неудавшиеся", "retry: retry the dead ones"),
        (("jobs",), "list — показать (по умолчанию)", "list: show them (default)"),
        (("employees",), "[{list,sync,link}] [НОМЕР]", "[{list,sync,link}] [EXTENSION]"),
        (("asterisk",), "[--etc ПАПКА]", "[--etc DIR]"),
        (("asterisk",), "uninstall — убрать ровно то, что", "uninstall: remove exactly what install added"),
    ],
)
async def test_every_sub_command_explains_its_words_in_the_users_language(
    args: tuple[str, ...], ru: str, en: str
) -> None:
    _, out_ru, _ = await cli(*args, "--help", lang=RU)
    _, out_en, _ = await cli(*args, "--help", lang=EN)
    assert ru in " ".join(out_ru.split()), out_ru
    assert en in " ".join(out_en.split()), out_en


async def test_argparse_errors() -> None:
    code, _, err = await cli("call", lang=RU)
    assert code == 2 and "novofon-bridge call: ошибка: не хватает аргументов: НОМЕР" in err
    code, _, err = await cli("outbox", "nonsense", lang=RU)
    assert code == 2 and "недопустимое значение 'nonsense'" in err
    code, _, err = await cli("call", lang=EN)
    assert code == 2 and "novofon-bridge call: error: the following arguments are required: NUMBER" in err


@pytest.mark.parametrize(
    ("yaml", "key", "ru", "en"),
    [
        (
            "asterisk:\n  ami:\n    port: five\n",
            "asterisk.ami.port",
            "ожидается целое число",
            "expected an integer",
        ),
        ("http:\n  bind: 999.1.1.1\n", "http.bind", "не IPv4-адрес", "is not an IPv4 address"),
        (
            "sinks:\n  telegram:\n    enabled: true\n    token: nope\n",
            "sinks.telegram.token",
            "нужен токен бота от @BotFather",
            "expected the bot token from @BotFather",
        ),
        (
            "sinks:\n  sms:\n    enabled: true\n",
            "sinks.sms.login",
            "для SMS-шлюза нужны login и password или api_key",
            "expected login + password, or api_key",
        ),
        (
            "asterisk:\n  amy: {}\n",
            "asterisk.amy",
            "неизвестный ключ (может быть, 'ami'?)",
            "unknown key (did you mean 'ami'?)",
        ),
    ],
)
async def test_config_errors(tmp_path: Path, yaml: str, key: str, ru: str, en: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml)
    code, _, err = await cli("run", "-c", str(path), lang=RU)
    assert code == 2 and err.startswith(f"ошибка в настройках: {path}: {key}: ") and ru in err
    code, _, err = await cli("run", "-c", str(path), lang=EN)
    assert code == 2 and err.startswith(f"config error: {path}: {key}: ") and en in err


async def test_check_output(tmp_path: Path) -> None:
    cfg = config(tmp_path, extra="http:\n  port: 0\n")
    code, out, err = await cli("check", "--no-connect", "-c", str(cfg), lang=RU)
    assert code == 1  # http.port: 0 and no Asterisk here: warnings
    assert f"[ок] Настройки: {cfg} в порядке" in out
    assert "[ВНИМАНИЕ] HTTP: http.port: 0" in err and "Что сделать: укажите постоянный порт" in err
    assert "Итог: ошибок 0, предупреждений" in out and "(--no-connect)" in out
    code, out, err = await cli("check", "--no-connect", "-c", str(cfg), lang=EN)
    assert code == 1
    assert f"[ok] Config: {cfg} is valid" in out
    assert "[WARNING] HTTP: http.port: 0" in err and "Fix: set a fixed port" in err
    assert "Summary: 0 error(s)" in out


async def test_a_start_up_error_in_english(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        code, _, err = await cli(
            "run", "-c", str(config(tmp_path, extra=f"http:\n  port: {port}\n")), lang=EN
        )
    assert code == 1
    assert f"error: port 127.0.0.1:{port} is already in use by another program. Fix: see who holds it" in err
