"""`check` tells whether the AGI port is free, ours or someone else's; `status` shows the router."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from bridge.cli import agi as agi_cli
from bridge.config import AgiConfig, Config
from bridge.preflight import Severity
from tests.fakes.agi import agi_call, request_headers
from tests.helpers import offline_config, running_app, until


def with_agi_port(cfg: Config, port: int) -> Config:
    return dataclasses.replace(cfg, agi=AgiConfig(port=port))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_check_a_free_port(tmp_path: Path) -> None:
    port = free_port()
    (result,) = await agi_cli.port(with_agi_port(offline_config(tmp_path), port))
    assert result.severity is Severity.OK and f"порт 127.0.0.1:{port} свободен" in result.text


async def test_check_a_port_someone_else_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agi_cli, "PROBE_TIMEOUT", 0.2)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        (result,) = await agi_cli.port(with_agi_port(offline_config(tmp_path), port))
    assert result.severity is Severity.ERROR
    assert f"нельзя слушать 127.0.0.1:{port}: порт занят другой программой" in result.text


async def test_check_and_status_with_our_daemon_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = offline_config(tmp_path)
    async with running_app(cfg) as app:
        server = app.components.agi
        assert server is not None and app.http_server is not None
        await until(server.listening.is_set)
        # What the sysadmin's config says: the ports the daemon really has.
        mine = dataclasses.replace(
            with_agi_port(cfg, server.port), http=dataclasses.replace(cfg.http, port=app.http_server.port)
        )
        (result,) = await agi_cli.port(mine)
        assert result.severity is Severity.OK
        assert f"127.0.0.1:{server.port} слушает уже запущенный novofon-bridge" in result.text
        await agi_call(server.port, request_headers(callerid="79169990009"))
        await agi_cli.show_status(mine)
    out = capsys.readouterr().out
    assert f"AGI: слушает 127.0.0.1:{server.port}; запросов 1, направлено на сотрудника 0" in out
    assert "ответ p50" in out


async def test_status_without_a_daemon_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = offline_config(tmp_path)
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=free_port()))
    await agi_cli.show_status(cfg)
    assert "AGI: счётчики недоступны — демон не отвечает" in capsys.readouterr().out
    await agi_cli.show_status(dataclasses.replace(cfg, agi=AgiConfig(enabled=False)))
    assert "AGI: выключен" in capsys.readouterr().out
