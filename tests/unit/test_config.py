"""Config: the shipped file loads, ${ENV} works, every mistake names the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge import config
from bridge.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
ENV = {"AMI_SECRET": "top-secret"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_config_loads_with_defaults_and_env() -> None:
    cfg = config.load(REPO / "config.yaml", env=ENV)
    assert cfg.asterisk.ami.secret == "top-secret"
    assert (cfg.asterisk.ami.host, cfg.asterisk.ami.port) == ("127.0.0.1", 5038)
    assert cfg.asterisk.trunk_endpoints == ["novofon"]
    assert cfg.jsonl_path == Path("/var/lib/novofon-bridge/records.jsonl")
    assert "top-secret" not in repr(cfg)  # the secret is kept out of reprs and logs
    ari = cfg.asterisk.ari  # enabled in the template, but without ARI_PASSWORD calls go over AMI
    assert (ari.enabled, ari.url, ari.app, ari.configured) == (
        True,
        "http://127.0.0.1:8088/ari",
        "novofon-bridge",
        False,
    )
    with_ari = config.load(REPO / "config.yaml", env={**ENV, "ARI_PASSWORD": "ari-secret"})
    assert with_ari.asterisk.ari.configured and "ari-secret" not in repr(with_ari)
    assert cfg.sinks.sms.api_key == ""  # a secret: from the env file, like the password
    with_key = config.load(REPO / "config.yaml", env={**ENV, "SMSC_API_KEY": "smsc-key-1"})
    assert with_key.sinks.sms.api_key == "smsc-key-1" and "smsc-key-1" not in repr(with_key)
    a = cfg.agi
    assert (a.enabled, a.bind, a.port, a.budget_ms, a.sticky_days, a.route_timeout) == (
        True,
        "127.0.0.1",
        4573,
        300,
        30,
        15,
    )


def test_env_default_and_override(tmp_path: Path) -> None:
    p = write(tmp_path, "asterisk:\n  ami:\n    host: ${H:-10.0.0.1}\n    port: ${P:-5038}\n")
    assert config.load(p, env={}).asterisk.ami.host == "10.0.0.1"
    assert config.load(p, env={"H": "127.0.0.5", "P": "6000"}).asterisk.ami.port == 6000


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("asterisk:\n  ami:\n    secert: x\n", "asterisk.ami.secert", "может быть, 'secret'?"),
        (
            "asterisk:\n  ami:\n    port: five\n",
            "asterisk.ami.port",
            "ожидается целое число, а указано 'five'",
        ),
        ("asterisk:\n  ami:\n    port: 70000\n", "asterisk.ami.port", "ожидается TCP-порт 1-65535"),
        (
            "asterisk:\n  ami:\n    secret: ${NOPE}\n",
            "asterisk.ami.secret",
            "не задана переменная окружения NOPE",
        ),
        ("pbx:\n  timezone: Mars/Olympus\n", "pbx.timezone", "неизвестный часовой пояс"),
        ("http:\n  bind: 999.1.1.1\n", "http.bind", "'999.1.1.1' — не IPv4-адрес"),
        ("http:\n  bind: 'my host'\n", "http.bind", "не IP-адрес и не имя хоста"),
        ("pbx:\n  lines:\n    '+7 495': x\n", "pbx.lines.+7 495", "только цифрами"),
        (
            "asterisk:\n  internal_extensions: '([0-9'\n",
            "asterisk.internal_extensions",
            "ошибка в регулярном выражении",
        ),
        ("logging:\n  format: xml\n", "logging.format", "одно из 'auto', 'json', 'console'"),
        ("sinks:\n  jsonl:\n    enabled: maybe\n", "sinks.jsonl.enabled", "true или false"),
        ("asterisk: [1, 2]\n", "asterisk", "ожидается раздел"),
        ("telegram:\n  token: x\n", "telegram", "неизвестный ключ"),
        ("asterisk:\n  trunk_endpoints: []\n", "asterisk.trunk_endpoints", "хотя бы одно"),
        (
            "asterisk:\n  ari:\n    url: 127.0.0.1:8088\n",
            "asterisk.ari.url",
            "ожидается http://ХОСТ:ПОРТ/ari",
        ),
        (
            "asterisk:\n  ari:\n    url: http://u:p@127.0.0.1:8088/ari\n",
            "asterisk.ari.url",
            "не пишите пользователя и пароль в адресе",
        ),
        ("asterisk:\n  ari:\n    app: 'a b'\n", "asterisk.ari.app", "латинские буквы, цифры"),
        ("pbx:\n  employee_ring_timeout: 1\n", "pbx.employee_ring_timeout", "ожидается 3..300 секунд"),
        ("agi:\n  port: 70000\n", "agi.port", "ожидается TCP-порт"),
        ("agi:\n  budget_ms: 0\n", "agi.budget_ms", "ожидается 1..5000 миллисекунд"),
        ("agi:\n  sticky_days: -1\n", "agi.sticky_days", "ожидается число дней >= 0"),
        ("agi:\n  route_timeout: 0\n", "agi.route_timeout", "ожидается 1..600 секунд"),
        ("agi:\n  budget: 300\n", "agi.budget", "может быть, 'budget_ms'"),
        ("outbox:\n  parallel_calls: 0\n", "outbox.parallel_calls", "ожидается 1..100"),
    ],
)
def test_mistakes_are_explained(tmp_path: Path, text: str, key: str, says: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(p, env={})
    assert err.value.key == key
    assert says in err.value.problem
    assert str(err.value).startswith(f"{p}: {key}: ")


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    p = write(tmp_path, "asterisk:\n  ami: [\n")
    with pytest.raises(ConfigError, match=r"ошибка синтаксиса YAML: строка \d+, столбец \d+"):
        config.load(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="файл не найден"):
        config.load(tmp_path / "nope.yaml")


def test_scalar_trunk_endpoint_becomes_a_list(tmp_path: Path) -> None:
    p = write(tmp_path, "asterisk:\n  trunk_endpoints: novofon2\n")
    assert config.load(p).asterisk.trunk_endpoints == ["novofon2"]


def test_telegram_webhook_may_not_shadow_another_route(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text(
        "sinks:\n  telegram:\n    enabled: true\n"
        "    token: '123456789:AAEfakeTokenForTheLabOnly_abcdefghij'\n"
        "    group_chats: ['-100']\n    bot_updates: webhook\n"
        "    webhook_url: https://pbx.example.ru/call\n    webhook_secret: abcdefghijklmnopqrstuvwxyz\n"
    )
    with pytest.raises(ConfigError) as e:
        config.load(f, env={})
    assert e.value.key == "sinks.telegram.webhook_url" and "путь /call уже занят" in str(e.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('directory:\n  employees:\n    "101\\n": {name: x}\n', "directory.employees.'101\\n'"),
        ('directory:\n  employees:\n    "101\\r\\nAction: Originate": {name: x}\n', "directory.employees."),
        ("directory:\n  employees:\n    '١٠١': {name: x}\n", "directory.employees.'\\u0661\\u0660\\u0661'"),
        ("pbx:\n  lines:\n    '٧٤٩٥٠٠٠٠١٠٠': x\n", "pbx.lines."),
        ("pbx:\n  country_code: '٧'\n", "pbx.country_code"),
    ],
)
def test_extensions_and_numbers_in_the_config_are_ascii_digits_only(
    tmp_path: Path, text: str, key: str
) -> None:
    """A directory entry reaches AMI as PJSIP/<ext>: "101\\n" passes re.match(...$), not the check."""
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text), env={})
    assert err.value.key.startswith(key)
    assert "\r" not in str(err.value) and "\n" not in str(err.value)


def comment_blocks(text: str) -> list[str]:
    """The comments of a YAML file: a run of whole-line comments is one block; an inline comment
    is a block of its own."""
    blocks: list[str] = []
    run: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            run.append(stripped.lstrip("# "))
            continue
        if run:
            blocks.append(" ".join(run))
            run = []
        if " # " in line and not stripped.startswith("template"):
            blocks.append(line.split(" # ", 1)[1].strip())
    if run:
        blocks.append(" ".join(run))
    return blocks


def test_shipped_config_explains_itself_in_russian() -> None:
    """The sysadmin reads config.yaml's comments: a sentence in English there (four English words
    in a row in a comment with no Russian) is a comment someone forgot to write in Russian."""
    english = re.compile(r"[A-Za-z][A-Za-z']+(?:[ ,]+[A-Za-z][A-Za-z']+){3,}")
    cyrillic = re.compile(r"[А-Яа-яЁё]")
    blocks = comment_blocks((REPO / "config.yaml").read_text(encoding="utf-8"))
    untranslated = [b for b in blocks if english.search(b) and not cyrillic.search(b)]
    assert len(blocks) > 80 and untranslated == []
    # ...and the check sees English: the previous, English comments fail it.
    assert [
        b
        for b in comment_blocks("# Where Asterisk's manager interface listens.\nhost: x\n")
        if english.search(b)
    ]
