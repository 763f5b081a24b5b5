"""AMI client: connect, log in, keep the connection alive, reconnect forever.

``AmiConnection`` is one logged-in connection (used by the CLI for one-off actions).
``AmiSupervisor`` keeps one alive for the daemon: exponential backoff with jitter, a Ping
watchdog that notices a half-open TCP connection, and an ``on_connected`` hook used to resync
calls from ``CoreShowChannels`` after every (re)connect. An Asterisk on this machine is retried at
least every ``local_max_delay`` seconds: every second of an outage is a call to backfill.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from bridge.backoff import Backoff as Backoff  # re-exported: the AMI reconnect policy
from bridge.pbx.ami_protocol import ActionResult, AmiError, AmiProtocol, EventHandler

log = structlog.get_logger("bridge.ami")


class AmiLoginError(AmiError):
    """Asterisk refused the user name or secret: retrying quickly will not help."""


class AmiUnreachable(AmiError):
    """Nothing accepted the TCP connection (refused, timed out, no route)."""


class AmiNoBanner(AmiError):
    """The TCP connection was accepted but no "Asterisk Call Manager" banner came in time."""


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "novofon-bridge"
    secret: str = ""
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    local_max_delay: float = 2.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """Asterisk on this machine: localhost or a loopback address (127.0.0.0/8, ::1)."""
        host = self.host.strip("[]").lower()
        if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class AmiConnection:
    """A logged-in AMI connection."""

    def __init__(self, settings: AmiSettings, protocol: AmiProtocol) -> None:
        self.settings = settings
        self.protocol = protocol

    @classmethod
    async def open(
        cls,
        settings: AmiSettings,
        on_event: EventHandler | None = None,
        events: Iterable[str] | None = None,
    ) -> AmiConnection:
        loop = asyncio.get_running_loop()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races
        # with the awaited result, and a supervisor that ignores its cancel never stops.
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: AmiProtocol(on_event or (lambda _m: None), events), settings.host, settings.port
                )
        except (TimeoutError, OSError) as e:
            raise AmiUnreachable(f"cannot connect to AMI at {settings.address}: {e or 'timeout'}") from e
        conn = cls(settings, protocol)
        try:
            try:
                async with asyncio.timeout(settings.connect_timeout):
                    await asyncio.shield(protocol.banner_seen)
            except TimeoutError as e:
                raise AmiNoBanner(
                    f"AMI at {settings.address} accepted the connection but sent no banner "
                    f"within {settings.connect_timeout} s (Asterisk hung?)"
                ) from e
            result = await conn.action(
                "Login", {"Username": settings.username, "Secret": settings.secret, "Events": "on"}
            )
        except BaseException:
            protocol.abort()
            raise
        if not result.ok:
            protocol.abort()
            raise AmiLoginError(
                f"AMI at {settings.address} refused user {settings.username!r}: "
                f"{result.message or 'authentication failed'} "
                "(check the user and secret in manager.conf and config.yaml)"
            )
        return conn

    async def action(
        self, name: str, fields: dict[str, str] | None = None, timeout: float | None = None
    ) -> ActionResult:
        future = self.protocol.send_action(name, fields)
        try:
            async with asyncio.timeout(timeout or self.settings.action_timeout):
                return await future
        except TimeoutError as e:
            raise AmiError(f"AMI action {name} got no answer in time") from e

    async def close(self) -> None:
        if self.protocol.transport is None or self.protocol.transport.is_closing():
            return
        with contextlib.suppress(AmiError):
            await self.action("Logoff", timeout=2)
        self.protocol.abort()

    @property
    def is_open(self) -> bool:
        return not self.protocol.closed.done()


OnConnected = Callable[[AmiConnection, float | None], Awaitable[None]]


class AmiSupervisor:
    """Keep one AMI connection alive for the daemon; report its health."""

    def __init__(
        self,
        settings: AmiSettings,
        on_event: EventHandler,
        on_connected: OnConnected,
        events: Iterable[str] | None = None,
        backoff: Backoff | None = None,
        on_state: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_state = on_state or (lambda: None)
        self._on_event = on_event
        self._on_connected = on_connected
        self._events = frozenset(events) if events is not None else None
        backoff = backoff or Backoff()
        cap = settings.local_max_delay / (1 + backoff.jitter)  # jitter included
        if settings.is_local and backoff.max_delay > cap:
            # A local PBX is never far away: a long backoff only widens the window of missed calls.
            backoff = dataclasses.replace(backoff, min_delay=min(backoff.min_delay, cap), max_delay=cap)
        self.backoff = backoff
        self.connection: AmiConnection | None = None
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.connects = 0
        self._lost_at: float | None = None
        self.started_at = time.time()

    @property
    def down_since(self) -> float | None:
        """Since when the bridge has not been listening (None while connected)."""
        if self.connected.is_set():
            return None
        return self._lost_at if self._lost_at is not None else self.started_at

    async def run(self) -> None:
        """Run until cancelled."""
        attempt = 0
        log.info("ami.connecting", address=self.settings.address)
        while True:
            try:
                conn = await AmiConnection.open(self.settings, self._on_event, self._events)
            except AmiError as e:
                attempt += 1
                self.last_error = str(e)
                delay = self.backoff.delay(attempt)
                if isinstance(e, AmiLoginError):
                    delay = max(delay, self.backoff.max_delay)
                log.warning("ami.unavailable", error=str(e), attempt=attempt, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.connects += 1
            self.connection = conn
            self.last_error = None
            log.info(
                "ami.connected", address=self.settings.address, banner=conn.protocol.banner_seen.result()
            )
            try:
                await self._on_connected(conn, self._lost_at)
                self.connected.set()
                self._on_state()
                reason = await self._watch(conn)
            except AmiError as e:
                reason = str(e)
            finally:
                self.connected.clear()
                self.connection = None
                self._lost_at = time.time()
                conn.protocol.abort()
            self.last_error = reason
            self._on_state()
            delay = self.backoff.delay(1)
            log.warning("ami.disconnected", reason=reason, retry_in=round(delay, 2))
            await asyncio.sleep(delay)

    async def _watch(self, conn: AmiConnection) -> str:
        """Ping periodically; return why the connection is considered lost."""
        closed = conn.protocol.closed
        while True:
            try:
                async with asyncio.timeout(self.settings.ping_interval):
                    exc = await asyncio.shield(closed)
                return f"connection closed by Asterisk{f': {exc}' if exc else ''}"
            except TimeoutError:
                pass
            try:
                result = await conn.action("Ping", timeout=self.settings.ping_timeout)
            except AmiError:
                return f"no Ping reply within {self.settings.ping_timeout} s (half-open connection?)"
            if not result.ok:
                return f"Ping refused: {result.message}"

    async def stop(self) -> None:
        if self.connection is not None:
            await self.connection.close()
