"""The CLI's ``call`` and ``callback`` over ARI: a Stasis application of the command's own
(``<app>-cli-<code>``, so the daemon's application is never taken over), the same one the daemon
runs (bridge/pbx/stasis.py). A call is given up only while it rings; once the client answers no
timer applies, and Ctrl-C (or SIGTERM) hangs up what this command placed, and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

from bridge.backoff import Backoff
from bridge.calls.numbers import pretty
from bridge.config import Config
from bridge.pbx.ari import AriBadRequest, AriClient, AriError, AriSupervisor, AriUnavailable
from bridge.pbx.follow import AriFollower, Outcome, Printer
from bridge.pbx.originate import (
    ari_settings,
    callback_caller_id,
    checked_callback,
    checked_test_number,
    new_call_id,
    stasis_settings,
    wait_ringing,
)
from bridge.pbx.stasis import EVENTS, StasisApp


class AriActions:
    """The CLI's test calls and call-backs over ARI, in a Stasis application of the command's own."""

    def __init__(
        self, cfg: Config, stasis: StasisApp, events: AriSupervisor, task: asyncio.Task[None]
    ) -> None:
        self.cfg = cfg
        self.stasis = stasis
        self._events = events
        self._task = task

    @classmethod
    async def open(cls, cfg: Config) -> AriActions:
        """Connect (AriError when ARI cannot be reached or refuses the login)."""
        app = f"{cfg.asterisk.ari.app}-cli-{uuid.uuid4().hex[:8]}"
        client = AriClient(ari_settings(cfg, app))
        stasis = StasisApp(client, stasis_settings(cfg, app))
        events = AriSupervisor(client, stasis.on_event, stasis.readopt, EVENTS, Backoff(0.2, 2.0))
        try:
            ws = await client.events(app)
        except AriError:
            await client.close()
            raise
        task = asyncio.create_task(events.run(ws), name="ari-cli-events")
        waiter = asyncio.ensure_future(events.connected.wait())
        await asyncio.wait(
            [task, waiter], timeout=client.settings.connect_timeout * 2, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if not events.connected.is_set():  # the event filter was refused, or the task died
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await events.stop()
            raise AriUnavailable(
                f"ARI: приложение {app} не запустилось ({events.last_error or 'нет ответа'})"
            )
        return cls(cfg, stasis, events, task)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._events.stop()

    async def test_call(self, number: str, say: Printer, timeout: float | None = None) -> Outcome:
        """Call ``number`` through the trunk (Local/NUMBER@<outgoing_context>) and play the test
        sound. ``number`` is checked as on the AMI path (InvalidNumber: nothing is sent)."""
        number = checked_test_number(self.cfg, number)
        call_id = new_call_id("nbcall")
        follower = AriFollower(say)
        say(f"тестовый звонок на {pretty(number)} (Local/{number}@{self.cfg.asterisk.outgoing_context})")
        start = self.stasis.start_test(call_id, number, f"novofon-bridge <{number}>", follower)
        return await self._follow(call_id, follower, start, timeout or self.cfg.cli.call_timeout + 30)

    async def callback(
        self, employee: str, client: str, did: str | None, say: Printer, timeout: float | None = None
    ) -> Outcome:
        """Ring the employee's phone first; once they answer, call the client through the trunk.
        The extension and the numbers are checked as on the AMI path (InvalidNumber: nothing sent)."""
        employee, client, checked_did = checked_callback(self.cfg, employee, client, did)
        did = checked_did or ""
        call_id = new_call_id("nbcb")
        follower = AriFollower(say, employee)
        say(f"обратный звонок: сначала сотрудник {employee}, затем клиент {pretty(client)}")
        start = self.stasis.start_callback(
            call_id, employee, client, did, callback_caller_id(self.cfg, client), follower
        )
        return await self._follow(call_id, follower, start, timeout or self.cfg.cli.call_timeout + 60)

    async def _follow(
        self, call_id: str, follower: AriFollower, start: Awaitable[None], timeout: float
    ) -> Outcome:
        """Ringing may take ``timeout`` s at most; a conversation takes as long as it takes."""
        try:
            try:
                await start
            except AriBadRequest as e:  # refused before anything was sent
                follower.abandon(str(e))
                return follower.outcome
            except AriError as e:
                follower.abandon(f"Asterisk отказал в вызове: {e}")
                return follower.outcome
            if not await wait_ringing(follower.answered, follower.done, timeout):
                await self.stasis.hang_up(call_id)
                follower.abandon(f"никто не ответил за {timeout:.0f} с — вызов сброшен")
            await follower.done.wait()
        except asyncio.CancelledError:  # Ctrl-C or SIGTERM: hang up what this command placed
            await self.stasis.hang_up(call_id)
            follower.abandon("прервано: вызовы этой команды сброшены")
            raise
        return follower.outcome
