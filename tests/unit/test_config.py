"""Config: the shipped file loads, ${ENV} works, every mistake names the file, the key and the fix."""

from __future__ import annotations

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


def test_env_default_and_override(tmp_path: Path) -> None:
    p = write(tmp_path, "asterisk:\n  ami:\n    host: ${H:-10.0.0.1}\n    port: ${P:-5038}\n")
    assert config.load(p, env={}).asterisk.ami.host == "10.0.0.1"
    assert config.load(p, env={"H": "127.0.0.5", "P": "6000"}).asterisk.ami.port == 6000


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("asterisk:\n  ami:\n    secert: x\n", "asterisk.ami.secert", "did you mean 'secret'"),
        ("asterisk:\n  ami:\n    port: five\n", "asterisk.ami.port", "expected an integer, got 'five'"),
        ("asterisk:\n  ami:\n    port: 70000\n", "asterisk.ami.port", "expected a TCP port"),
        (
            "asterisk:\n  ami:\n    secret: ${NOPE}\n",
            "asterisk.ami.secret",
            "environment variable NOPE is not set",
        ),
        ("pbx:\n  timezone: Mars/Olympus\n", "pbx.timezone", "unknown time zone"),
        ("pbx:\n  lines:\n    '+7 495': x\n", "pbx.lines.+7 495", "digits only"),
        ("asterisk:\n  internal_extensions: '([0-9'\n", "asterisk.internal_extensions", "regular expression"),
        ("logging:\n  format: xml\n", "logging.format", "one of 'auto', 'json', 'console'"),
        ("sinks:\n  jsonl:\n    enabled: maybe\n", "sinks.jsonl.enabled", "true or false"),
        ("asterisk: [1, 2]\n", "asterisk", "expected a mapping"),
        ("telegram:\n  token: x\n", "telegram", "unknown key"),
        ("asterisk:\n  trunk_endpoints: []\n", "asterisk.trunk_endpoints", "at least one"),
        ("outbox:\n  parallel_calls: 0\n", "outbox.parallel_calls", "expected 1..100"),
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
    with pytest.raises(ConfigError, match=r"not valid YAML: line \d+, column \d+"):
        config.load(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
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
    assert e.value.key == "sinks.telegram.webhook_url" and "/call is already served" in str(e.value)


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
