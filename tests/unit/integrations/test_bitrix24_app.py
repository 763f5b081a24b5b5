"""Bitrix24 application mode, the daemon against the strict fake portal: ONAPPINSTALL brings the
tokens (none pasted into the config), who may install, and event.bind / externalLine.add after
every installation — without which the portal delivers no click-to-call at all."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.app import App
from bridge.config import Config, DirectoryConfig, EmployeeConfig, HttpConfig
from bridge.errors import BadRequest
from bridge.http.client import Http
from bridge.integrations.bitrix24 import application
from bridge.integrations.bitrix24.application import PROOF_INTERVAL, Application
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings, BitrixApp
from bridge.integrations.bitrix24.state import load_install, load_token
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from tests.fakes.bitrix import CLIENT_ID, CLIENT_SECRET, MEMBER_ID, FakeBitrix, portal_user
from tests.helpers import offline_config, running_app, until, with_sinks

DID = "74950000100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(cfg: Config) -> AsyncIterator[App]:
    """The daemon, once its HTTP port (fixed: public_url names it) accepts connections."""

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", cfg.http.port)) == 0

    async with running_app(cfg) as app:
        await until(listening, interval=0.02)
        yield app


def app_settings(bx: FakeBitrix, **kw: object) -> Bitrix24Settings:
    app = BitrixApp(bx.url, CLIENT_ID, CLIENT_SECRET, oauth_url=f"{bx.url}/oauth/token/")
    base = Bitrix24Settings(enabled=True, app=app, rate=100, burst=100, sync_interval=0)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def config(tmp: Path, bx: FakeBitrix, port: int) -> Config:
    cfg = with_sinks(offline_config(tmp), bitrix24=app_settings(bx, public_url=f"http://127.0.0.1:{port}"))
    return dataclasses.replace(
        cfg,
        http=HttpConfig(port=port),
        pbx=dataclasses.replace(cfg.pbx, default_did=DID, lines={"74950000200": "Склад"}),
        directory=DirectoryConfig({"101": EmployeeConfig(name="Иван", bitrix_user_id="11")}),
    )


@pytest.fixture
async def bx() -> AsyncIterator[FakeBitrix]:
    fake = FakeBitrix(users=[portal_user(11, "101", "Иван Петров")])
    await fake.start()
    yield fake
    await fake.stop()


async def test_install_binds_the_events_so_click_to_call_arrives(
    tmp_path: Path, bx: FakeBitrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(application, "PROOF_INTERVAL", 0.0)  # it installs twice within a second
    port = free_port()
    cfg = config(tmp_path, bx, port)
    handler = f"http://127.0.0.1:{port}/api/bitrix/webhook"
    async with serving(cfg) as app:
        assert await bx.click_to_call("11", "+79001110001") is None  # nothing bound: nothing arrives
        assert bx.http_requests == []  # not installed: nothing asked of the portal
        status, body = await bx.install(handler)
        assert (status, body) == (200, '{"result": "installed"}')
        await until(lambda: bx.bound.get("ONEXTERNALCALLSTART") == {handler})
        await until(lambda: set(bx.lines) == {DID, "74950000200"})
        assert bx.bound["ONUSERADD"] == {handler}
        assert ("event.bind", "ERROR_EVENT_NOT_FOUND") in bx.refused  # ONUSERUPDATE: not in the list
        assert bx.lines["74950000200"]["NAME"] == "Склад"
        # the installation proved (app.info on its token), then what is there, then what is missing
        assert bx.http_requests == ["app.info", "batch", "batch"]

        call_id = await bx.click_to_call("11", "+79001110001", line=DID)
        assert call_id is not None
        await until(lambda: app.jobs.counts())  # the click is committed as a job
        kinds = [row[0] for row in app.store.db.execute("SELECT kind FROM jobs")]
        assert kinds == ["click2call"]

        assert await bx.add_user(portal_user(13, "103", "Новый Сотрудник")) == 1
        await until(lambda: app.directory.bitrix_user("103") == "13")  # user.get on the app's token

        assert (await bx.install(handler))[0] == 200  # reinstalled: the portal dropped the bindings
        assert bx.bound == {}
        await until(lambda: bx.bound.get("ONEXTERNALCALLSTART") == {handler})  # bound again
        assert app.supervisor.status()["bitrix24-app"]["state"] == "running"

    store = OutboxStore(cfg.outbox_path)
    install = load_install(StateStore(store.db))
    assert install is not None and install.application_token == bx.application_token
    assert install.member_id == MEMBER_ID
    store.close()


async def test_events_need_the_pinned_application_token(tmp_path: Path, bx: FakeBitrix) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/bitrix/webhook"
    event = {"event": "ONUSERADD", "data[FIELDS][ID]": "11", "auth[domain]": bx.domain}
    async with serving(config(tmp_path, bx, port)), aiohttp.ClientSession() as s:
        async with s.post(url, data={**event, "auth[application_token]": "x" * 32}) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "not-configured"  # no install yet
        await bx.install(url)
        async with s.post(url, data={**event, "auth[application_token]": "x" * 32}) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "bad-token"
        async with s.post(url, data={**event, "auth[application_token]": bx.application_token}) as resp:
            assert resp.status == 200


@pytest.fixture
async def installer(tmp_path: Path, bx: FakeBitrix) -> AsyncIterator[tuple[Application, StateStore]]:
    store, http = OutboxStore(tmp_path / "o.sqlite3"), Http()
    state = StateStore(store.db)
    settings = app_settings(bx)
    yield Application(settings, BitrixClient(settings, http, state), state, {}), state
    await http.close()
    store.close()


async def test_an_install_from_another_portal_is_refused(
    installer: tuple[Application, StateStore], bx: FakeBitrix
) -> None:
    app, state = installer
    form = bx.install_form()
    with pytest.raises(BadRequest) as e:
        await app.accept_install({**form, "auth[domain]": "evil.bitrix24.ru"})
    assert (e.value.status, e.value.error) == (403, "wrong-portal")
    pinned = dataclasses.replace(app.s, app=dataclasses.replace(app.s.app, member_id="another-member"))
    with pytest.raises(BadRequest) as e:
        await Application(pinned, app.client, state, {}).accept_install(form)
    assert (e.value.status, e.value.error) == (403, "wrong-portal")
    assert load_install(state) is None and load_token(state) is None


async def test_a_forged_install_is_refused_and_a_genuine_reinstall_accepted(
    installer: tuple[Application, StateStore], bx: FakeBitrix
) -> None:
    app, state = installer
    forged = {**bx.install_form(), "auth[access_token]": "forged-access-token-123"}
    with pytest.raises(BadRequest) as e:  # our domain and member_id, but a token the portal never issued
        await app.accept_install(forged)
    assert (e.value.status, e.value.error) == (401, "bad-token")
    assert load_install(state) is None
    with pytest.raises(BadRequest) as e:  # another one at once: refused without asking the portal
        await app.accept_install(forged)
    assert (e.value.status, e.value.error) == (429, "too-many-installs")
    assert bx.http_requests == ["app.info"]
    app._last_proof -= PROOF_INTERVAL

    assert await app.accept_install(bx.install_form()) == "installed"  # first install: token proved
    app._last_proof -= PROOF_INTERVAL
    first = load_install(state)
    assert first is not None and first.member_id == MEMBER_ID
    reinstall = bx.install_form()
    app._last_proof -= PROOF_INTERVAL
    assert await app.accept_install(reinstall) == "installed"  # reinstall: new token, proved
    second = load_install(state)
    assert second is not None and second.application_token == bx.application_token != first.application_token

    other_member = {**reinstall, "auth[member_id]": "b" * 32}  # the pinned member_id holds
    with pytest.raises(BadRequest):
        await app.accept_install(other_member)

    # the one-time refresh token from the installation works (and is replaced) when the access expires
    bx.expire_tokens()
    assert await app.client.call("user.get", {"ID": "11"})
    assert bx.refreshes == 1
    token = load_token(state)
    assert token is not None and token.refresh_token == bx.refresh_token
