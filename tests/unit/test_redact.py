"""No secret anywhere it can be read: logs (every level), errors stored in the database, CLI
output and config errors mask secret *values* (bridge/redact.py), wherever they appear in a text.

The leak reproduced first: aiohttp's own error for a connection timeout quotes the whole request
URL, and a Bitrix24 incoming webhook's URL holds its secret code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge import config, logs
from bridge.app import App
from bridge.cli.main import main
from bridge.config import ConfigError, HttpConfig
from bridge.errors import RetryLater
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.jobs import Jobs
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from bridge.redact import MASK, Redactor
from tests.helpers import base_url, offline_config, running_app, until, with_sinks
from tests.transcripts import replay

CODE = "k7x9q2w4e6r8t0y1"  # the webhook's secret code
WEBHOOK = f"https://b24-portal.example/rest/1/{CODE}/"
SECRETS = {
    "AMI_SECRET": "ami-secret-value-1",
    "ARI_PASSWORD": "ari-password-value-1",
    "TELEGRAM_BOT_TOKEN": "123456789:AAEsecretTokenForTests_abcdefghijk",
    "TELEGRAM_WEBHOOK_SECRET": "tg-webhook-secret-value",
    "BITRIX24_WEBHOOK_URL": WEBHOOK,
    "BITRIX24_CLIENT_SECRET": "bitrix-client-secret-1",
    "BITRIX24_REFRESH_TOKEN": "bitrix-refresh-token-1",
    "BITRIX24_APPLICATION_TOKEN": "bitrix-app-token-1",
    "SMSC_PASSWORD": "smsc-password-1",
    "SMSC_CALLBACK_SECRET": "smsc-callback-secret-1",
    "NOVOFON_API_SECRET": "novofon-api-secret-1",
    "NOVOFON_SMS_TOKEN": "novofon-sms-token-1",
}
FULL = """
asterisk:
  ami: {secret: "${AMI_SECRET}"}
  ari: {password: "${ARI_PASSWORD}"}
sinks:
  telegram:
    enabled: true
    token: "${TELEGRAM_BOT_TOKEN}"
    group_chats: ["-100"]
    webhook_secret: "${TELEGRAM_WEBHOOK_SECRET}"
  bitrix24:
    enabled: true
    webhook_url: "${BITRIX24_WEBHOOK_URL}"
    application_token: "${BITRIX24_APPLICATION_TOKEN}"
    app: {client_secret: "${BITRIX24_CLIENT_SECRET}", refresh_token: "${BITRIX24_REFRESH_TOKEN}"}
  sms:
    enabled: true
    login: shop
    password: "${SMSC_PASSWORD}"
    api_key: smsc-api-key-1
    callback_secret: "${SMSC_CALLBACK_SECRET}"
  webhooks:
    - {url: "https://crm.example/hook", secret: crm-hook-secret-1}
novofon: {api_secret: "${NOVOFON_API_SECRET}", sms_token: "${NOVOFON_SMS_TOKEN}"}
"""
ALL_VALUES = [*SECRETS.values(), "smsc-api-key-1", "crm-hook-secret-1"]


def full_config(tmp: Path) -> config.Config:
    path = tmp / "config.yaml"
    path.write_text(FULL + f"storage: {{dir: {tmp}}}\n")
    return config.load(path, env=SECRETS)


def assert_clean(text: str) -> None:
    for value in [*ALL_VALUES, CODE[:8]]:  # a part of the code is a leak too
        assert value not in text, f"{value!r} leaked into: {text}"


# -- the registry --------------------------------------------------------------------------------


def test_every_secret_of_the_loaded_config_is_masked_by_value(tmp_path: Path) -> None:
    redact = Redactor.from_settings(full_config(tmp_path))
    text = " | ".join(f"{v} and inside{v}text" for v in ALL_VALUES)
    masked = redact(text)
    assert_clean(masked)
    assert masked.count(MASK) == 2 * len(ALL_VALUES)
    # The webhook URL: its code is masked, its portal stays readable (it says which portal failed).
    assert redact(f"timeout to {WEBHOOK}crm.lead.add.json") == (
        f"timeout to https://b24-portal.example/rest/1/{MASK}/crm.lead.add.json"
    )
    assert redact("bot123456789%3AAAEsecretTokenForTests_abcdefghijk") == f"bot{MASK}"  # URL-encoded


def test_the_redactor_is_a_value_not_a_global() -> None:
    a, b = Redactor.of(["secret-of-a"]), Redactor.of(["secret-of-b"])
    assert a("secret-of-a secret-of-b") == f"{MASK} secret-of-b"
    assert b("secret-of-a secret-of-b") == f"secret-of-a {MASK}"
    assert Redactor()("nothing to hide") == "nothing to hide"
    assert Redactor.of(["abc", ""])("abc") == "abc"  # too short to mask without mangling logs


# -- the leak: a transport error quoting the webhook URL -----------------------------------------


class HangingResolver(AbstractResolver):
    """DNS that never answers: aiohttp gives up with "Connection timeout to host <the URL>"."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass


def hanging_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=HangingResolver()),
        timeout=aiohttp.ClientTimeout(total=5, connect=0.1),
    )


@pytest.fixture
async def transport_error(tmp_path: Path) -> AsyncIterator[str]:
    http = Http()
    http._session = hanging_session()
    store = OutboxStore(tmp_path / "client.sqlite3")
    client = BitrixClient(Bitrix24Settings(enabled=True, webhook_url=WEBHOOK), http, StateStore(store.db))
    try:
        with pytest.raises(RetryLater) as err:
            await client.call("user.get", {})
        yield str(err.value)
    finally:
        await http.close()
        store.close()


async def test_the_leak_is_real(transport_error: str) -> None:
    assert CODE in transport_error  # what the journal, the outbox and `outbox list` showed


async def test_errors_stored_in_the_outbox_and_jobs_are_masked(tmp_path: Path, transport_error: str) -> None:
    redact = Redactor.from_settings(full_config(tmp_path))
    store = OutboxStore(tmp_path / "o.sqlite3", redact=redact)
    store.add(replay("inbound_missed")[:2], ["bitrix24"])
    first, second = (r[0] for r in store.db.execute("SELECT id FROM deliveries ORDER BY id"))
    store.mark_retry(first, 0.0, transport_error)
    store.mark_dead(second, f"gave up: {transport_error}")
    jobs = Jobs(store.db, redact=redact)
    jobs.add("click2call", {"x": 1})
    jobs.add("click2call", {"x": 2})
    a, b = (r[0] for r in store.db.execute("SELECT id FROM jobs ORDER BY id"))
    jobs._retry(a, "click2call", 0, 0.0, 10**12, transport_error, None)
    jobs._dead(b, "click2call", transport_error)
    stored = [
        r[0]
        for r in store.db.execute("SELECT last_error FROM deliveries UNION ALL SELECT last_error FROM jobs")
    ]
    assert len(stored) == 4 and all("Connection timeout to host" in s for s in stored)
    assert_clean("\n".join(stored))
    store.close()


async def test_outbox_and_jobs_lists_never_print_a_secret(
    tmp_path: Path, transport_error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = full_config(tmp_path)
    store = OutboxStore(cfg.outbox_path)
    store.add(replay("inbound_missed")[:1], ["bitrix24"])
    Jobs(store.db).add("click2call", {})
    # Rows written before masking existed (or by an older version) are masked when shown.
    store.db.execute("UPDATE deliveries SET last_error=?, state='dead'", (transport_error,))
    store.db.execute("UPDATE jobs SET last_error=?, state='dead'", (transport_error,))
    store.close()
    args = ["-c", str(tmp_path / "config.yaml")]
    env = dict(SECRETS)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["outbox", *args]) == 0
        assert main(["jobs", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("Connection timeout to host https://b24-portal.example/rest/1/***/") == 2
    assert_clean(out)


# -- logs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logs_mask_secret_values_at_every_level(
    tmp_path: Path, transport_error: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(fmt, "debug", Redactor.from_settings(full_config(tmp_path)))
    log = structlog.get_logger("test")
    for level in ("debug", "info", "warning", "error", "critical"):
        getattr(log, level)(
            f"event {transport_error}", error=transport_error, nested={"e": [transport_error]}
        )
    try:
        raise RetryLater(transport_error)
    except RetryLater:
        log.exception("with.traceback", url=WEBHOOK)
    err = capsys.readouterr().err
    assert err.count("Connection timeout to host") >= 5 * 3 + 1
    assert_clean(err)


def test_the_cli_sets_up_logs_with_the_configs_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full_config(tmp_path)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    # No error (warnings are this machine's: no Asterisk, no recordings folder here).
    assert main(["check", "--no-connect", "-c", str(tmp_path / "config.yaml")]) <= 1
    structlog.get_logger("test").warning("after.check", error=f"POST {WEBHOOK}x.json failed")
    err = capsys.readouterr().err
    assert "/rest/1/***/x.json" in err
    assert_clean(err)


def test_one_line_escapes_what_could_forge_a_line() -> None:
    assert logs.one_line("a\nb\r\x1b[31mc\x00\u2028") == "a\\nb\\r\\x1b[31mc\\x00\\u2028"
    assert logs.one_line("Иван Петров") == "Иван Петров"


# -- config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # A wrong scheme: the check used to print the first 40 characters of the URL.
        f"sinks:\n  bitrix24:\n    enabled: true\n    webhook_url: htps://b24.example/rest/1/{CODE}/\n",
        # A secret given as a list or a mapping: "expected a string, got [...]".
        "asterisk:\n  ami:\n    secret: [ami-secret-value-1]\n",
        "sinks:\n  telegram:\n    token: {a: 123456789:AAEsecretTokenForTests_abcdefghijk}\n",
        # A secret from the environment where it does not belong.
        "sinks:\n  sms:\n    api_key: ${AMI_SECRET}\n    callback_hash: ${AMI_SECRET}\n",
    ],
)
def test_config_errors_never_print_a_secret(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path, env=SECRETS)
    assert_clean(str(err.value))
    monkeypatch.setenv("AMI_SECRET", SECRETS["AMI_SECRET"])
    assert main(["check", "--no-connect", "-c", str(path)]) == 2
    assert_clean(capsys.readouterr().err)


# -- the console sink --------------------------------------------------------------------------------


async def test_an_sms_cannot_forge_a_console_line() -> None:
    from bridge.calls.records import Event, make
    from bridge.integrations.local.console import ConsoleSink
    from tests.helpers import delivery

    sms = make(
        Event.SMS,
        {
            "pbx_call_id": "sms_1",
            "notification_time": "2026-11-29 12:00:00.000000",
            "contact_phone_number": "79001234567",
            "virtual_phone_number": "74950000100",
            "message": 'hi\n{"level":"error","event":"forged"}\r\x1b[2J\x1b]0;pwned\x07',
        },
        {},
    )
    buf = io.StringIO()
    await ConsoleSink(buf).send(delivery(sms))
    out = buf.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert '\\n{"level":"error","event":"forged"}\\r\\x1b[2J' in out


# -- the daemon, end to end --------------------------------------------------------------------------


async def test_the_daemon_stores_and_logs_a_failed_delivery_without_the_webhook_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bitrix = Bitrix24Settings(enabled=True, webhook_url=WEBHOOK, default_user_id="1")
    cfg = with_sinks(offline_config(tmp_path), bitrix24=bitrix)
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, retry_base=30, retry_cap=30))
    logs.setup("json", "debug", Redactor.from_settings(cfg))
    app = App(cfg)
    app.http._session = hanging_session()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        app.publish(replay("inbound_missed"))

        def stored() -> list[str]:
            return [r.last_error or "" for r in app.store.list(State.PENDING) if r.last_error]

        error = (await until(stored, timeout=10))[0]
        assert "Connection timeout to host https://b24-portal.example/rest/1/***/" in error
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    db = sqlite3.connect(cfg.outbox_path)
    with contextlib.closing(db):
        assert_clean(" ".join(str(r) for r in db.execute("SELECT last_error FROM deliveries")))
    err = capsys.readouterr().err
    assert "Connection timeout to host" in err
    assert_clean(err)
    assert sys.stderr is not None


async def test_status_never_shows_a_secret_an_error_quoted(tmp_path: Path) -> None:
    bitrix = Bitrix24Settings(enabled=True, webhook_url=WEBHOOK, default_user_id="1")
    cfg = with_sinks(offline_config(tmp_path, http=HttpConfig(port=0)), bitrix24=bitrix)
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        app.ami.last_error = f"cannot reach {WEBHOOK}user.get.json"  # an error quoting a URL
        async with s.get(f"{base_url(app)}/status") as resp:
            text = await resp.text()
    assert "https://b24-portal.example/rest/1/***/user.get.json" in text
    assert_clean(text)
