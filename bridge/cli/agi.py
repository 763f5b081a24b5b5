"""`check` and `status` about FastAGI routing: is the AGI port free (or held by our daemon), and
what the running daemon's router has done (its /status)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import Any

import aiohttp

from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx.agi import PROBE_REPLY, PROBE_SCRIPT
from bridge.pbx.ami import AmiConnection
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.pipeline import ami_settings
from bridge.preflight import Check, Context, Result

# What our [novofon-route] needs in Asterisk: AGI() itself, and IFMODULE() that guards it.
MODULES = ("res_agi", "func_module")

PROBE_TIMEOUT = 2.0


def _host(bind: str) -> str:
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind


async def held_by_us(host: str, port: int) -> bool:
    """Whether what listens on host:port is a novofon-bridge (it answers our probe script)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(f"agi_network: yes\nagi_network_script: {PROBE_SCRIPT}\n\n".encode())
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return line.decode(errors="replace").strip() == PROBE_REPLY


NAME = "AGI"


async def port(cfg: Config) -> list[Result]:
    """Could the daemon listen for FastAGI (or does our running daemon already)?"""
    a = cfg.agi
    if not a.enabled:
        return [Result.ok(NAME, tr("выключен (agi.enabled: false)", "off (agi.enabled: false)"))]
    address = f"{a.bind}:{a.port}"
    if a.port == 0:
        return [
            Result.warning(
                NAME,
                tr("порт выберется при запуске (agi.port: 0)", "the port is chosen at start (agi.port: 0)"),
                tr("укажите порт: диалплан должен его знать", "set a port: the dialplan must know it"),
            )
        ]
    sock = socket.socket(socket.AF_INET6 if ":" in a.bind else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon's server does
        sock.bind((a.bind, a.port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE and await held_by_us(_host(a.bind), a.port):
            return [
                Result.ok(
                    NAME,
                    tr(f"{address} слушает уже запущенный novofon-bridge", f"{address}: our running daemon"),
                )
            ]
        why = (
            tr("порт занят другой программой", "the port is taken by another program")
            if e.errno == errno.EADDRINUSE
            else (e.strerror or str(e))
        )
        return [
            Result.error(
                NAME,
                tr(f"нельзя слушать {address}: {why}", f"cannot listen on {address}: {why}"),
                tr(
                    "освободите порт или укажите другой agi.port (и тот же адрес в AGI(agi://…) диалплана)",
                    "free the port or set another agi.port (and the same address in the dialplan's AGI(agi://…))",
                ),
            )
        ]
    finally:
        sock.close()
    return [Result.ok(NAME, tr(f"порт {address} свободен", f"port {address} is free"))]


async def modules(cfg: Config) -> list[Result]:
    """Does Asterisk have what the routing dialplan needs (calls otherwise go unrouted)?

    Asked the way the dialplan asks, with ``IFMODULE()`` through Getvar: our AMI user has no
    write=system, so ModuleCheck is "Permission denied". Without func_module, IFMODULE() itself is
    unknown and reads empty — which is exactly what makes [novofon-route] skip routing."""
    if not cfg.agi.enabled:
        return []
    name = tr("AGI: модули Asterisk", "AGI: Asterisk modules")
    try:
        conn = await AmiConnection.open(ami_settings(cfg))
    except AmiError as e:
        return [Result.warning(name, tr(f"не проверены: {e}", f"not checked: {e}"))]
    try:
        loaded: dict[str, str] = {}
        for module in MODULES:
            got = await conn.action("Getvar", {"Variable": f"IFMODULE({module}.so)"})
            if not got.ok:
                return [
                    Result.warning(name, tr(f"не проверены: {got.message}", f"not checked: {got.message}"))
                ]
            loaded[module] = got.response.get("Value", "")
    finally:
        await conn.close()
    if loaded["func_module"] != "1":
        missing = ["func_module.so"]  # IFMODULE() is not there to say anything about res_agi
    else:
        missing = [f"{m}.so" for m in MODULES if loaded[m] != "1"]
    if not missing:
        return [Result.ok(name, tr("загружены: ", "loaded: ") + ", ".join(MODULES))]
    return [
        Result.warning(
            name,
            tr(
                f"не загружено: {', '.join(missing)} — звонки не маршрутизируются "
                "([novofon-route] пропускает AGI)",
                f"not loaded: {', '.join(missing)} — calls are not routed ([novofon-route] skips AGI)",
            ),
            f'asterisk -rx "module load {missing[0]}" '
            + tr(
                "(res_agi требует res_speech) и добавьте в modules.conf",
                "(res_agi needs res_speech), and add it to modules.conf",
            ),
        )
    ]


def checks(ctx: Context) -> list[Check]:
    """The preflight's AGI part."""
    cfg = ctx.cfg
    return [Check(NAME, lambda: port(cfg), online=False), Check(NAME + " modules", lambda: modules(cfg))]


async def daemon_status(cfg: Config) -> dict[str, Any] | None:
    """The running daemon's /status, or None when it cannot be asked."""
    h = cfg.http
    if not h.enabled or h.port == 0:
        return None
    url = f"http://{_host(h.bind)}:{h.port}/status"
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(url) as resp,
        ):
            if resp.status == 200:
                body = await resp.json()
                return body if isinstance(body, dict) else None
    return None


def describe(st: dict[str, Any]) -> str:
    """One line for people from the daemon's /status ``agi`` section."""
    if not st.get("enabled", True):
        return "AGI: выключен (agi.enabled: false)"
    where = f"слушает {st.get('address')}" if st.get("listening") else f"НЕ слушает {st.get('address')}"
    lat = st.get("latency_ms") or {}
    latency = f"; ответ p50 {lat['p50']} мс, p99 {lat['p99']} мс" if lat.get("p50") is not None else ""
    return (
        f"AGI: {where}; запросов {st.get('requests', 0)}, направлено на сотрудника "
        f"{st.get('routed', 0)} (по CRM {st.get('from_crm', 0)}, по истории {st.get('from_history', 0)}), "
        f"ответов CRM из кэша {st.get('cache_hits', 0)}, без ответа CRM в срок {st.get('fallbacks', 0)}, "
        f"ошибок CRM {st.get('crm_errors', 0)}, плохих запросов {st.get('bad_requests', 0)}{latency}"
    )


async def show_status(cfg: Config) -> None:
    if not cfg.agi.enabled:
        print("AGI: выключен (agi.enabled: false)")
        return
    status = await daemon_status(cfg)
    if status is None or "agi" not in status:
        print(
            f"AGI: счётчики недоступны — демон не отвечает на http://{_host(cfg.http.bind)}:{cfg.http.port}"
            "/status (он запущен? http.enabled?)"
        )
        return
    print(describe(status["agi"]))
