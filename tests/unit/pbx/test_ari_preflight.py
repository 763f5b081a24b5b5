"""``check``'s ARI part against the strict fake ARI: the login (a refused password and nothing
listening are errors with their fix, the password never shown), the daemon's Stasis application
registered or not yet (the preflight also runs before the first start: not yet is fine), and no
ARI password at all (calls go over AMI)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.cli import preflight as cli_preflight
from bridge.config import AriConfig, Config
from bridge.config import load as load_config
from bridge.pbx import ari_preflight
from bridge.pbx.ari import AriClient
from bridge.pbx.originate import ari_settings
from bridge.preflight import Context, Result, Severity, render
from tests.fakes.ari import PASSWORD, USER, FakeAri


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


def config(url: str, password: str = PASSWORD, enabled: bool = True) -> Config:
    cfg = load_config(None)
    ari = AriConfig(enabled=enabled, url=url, username=USER, password=password)
    return dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, ari=ari))


async def results(cfg: Config) -> list[Result]:
    (check,) = ari_preflight.checks(Context(cfg, Path("/nonexistent")))
    assert check.online  # talks to Asterisk: left out by --no-connect
    return await check.run()


def test_the_ari_part_is_one_of_checks_providers() -> None:
    assert ari_preflight.checks in cli_preflight.PROVIDERS


async def test_before_the_first_start_the_application_is_not_registered_yet_and_that_is_fine(
    fake: FakeAri,
) -> None:
    login, app = await results(config(fake.base))
    assert (login.severity, app.severity) == (Severity.OK, Severity.OK)
    assert login.text.startswith(f"вход выполнен ({fake.base}, Asterisk 22.")
    assert "приложение novofon-bridge пока не зарегистрировано" in app.text


async def test_with_the_daemon_connected_the_application_is_registered(fake: FakeAri) -> None:
    cfg = config(fake.base)
    client = AriClient(ari_settings(cfg))
    ws = await client.events(cfg.asterisk.ari.app)  # what the running daemon keeps open
    try:
        _, app = await results(cfg)
        assert app.severity is Severity.OK
        assert app.text.startswith("приложение novofon-bridge зарегистрировано (демон подключён)")
    finally:
        await ws.close()
        await client.close()


async def test_a_refused_password_is_an_error_that_says_where_the_password_lives(fake: FakeAri) -> None:
    (result,) = await results(config(fake.base, password="wrong-ari-password-1"))
    assert result.severity is Severity.ERROR
    assert "вход не принят" in result.text and "401" in result.text
    assert "ARI_PASSWORD" in result.fix and "novofon-bridge_ari.conf" in result.fix
    assert "wrong-ari-password-1" not in render(result)


async def test_nothing_listening_is_an_error_that_names_the_http_server(unused_tcp_port: int) -> None:
    (result,) = await results(config(f"http://127.0.0.1:{unused_tcp_port}/ari"))
    assert result.severity is Severity.ERROR and result.text.startswith("нет подключения")
    assert "http.conf" in result.fix and "asterisk.ari.url" in result.fix


@pytest.mark.parametrize(
    ("password", "enabled", "why"), [("", True, "ARI_PASSWORD"), ("x", False, "enabled")]
)
async def test_without_ari_calls_go_over_ami_and_that_is_fine(password: str, enabled: bool, why: str) -> None:
    (result,) = await results(config("http://127.0.0.1:1/ari", password, enabled))
    assert result.severity is Severity.OK and "звонки идут через AMI" in result.text and why in result.text
