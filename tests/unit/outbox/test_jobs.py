"""The jobs queue has the outbox's discipline: catch-all, age before running, dead letters, once."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from bridge.errors import PermanentFailure, RetryLater
from bridge.outbox.jobs import Jobs


@pytest.fixture
def jobs() -> Jobs:
    return Jobs(sqlite3.connect(":memory:", isolation_level=None))


def age(jobs: Jobs, seconds: float) -> None:
    """Make every job look ``seconds`` older (as after a long restart)."""
    jobs.db.execute("UPDATE jobs SET created_at=created_at-?, next_try_at=next_try_at-?", (seconds, seconds))


async def test_a_crashing_handler_is_a_failed_attempt_and_the_runner_goes_on(jobs: Jobs) -> None:
    done: list[str] = []

    async def buggy(job: dict[str, Any]) -> None:
        raise ValueError("a bug in the handler")

    async def fine(job: dict[str, Any]) -> None:
        done.append(job["n"])

    jobs.handle("buggy", buggy)
    jobs.handle("fine", fine)
    jobs.add("buggy", {})
    jobs.add("fine", {"n": "after"})
    await jobs.work()  # must not raise
    assert done == ["after"]
    (row,) = jobs.db.execute("SELECT attempts, last_error, state FROM jobs").fetchall()
    assert row == (1, "ValueError: a bug in the handler", "pending")


async def test_age_is_checked_before_running(jobs: Jobs) -> None:
    rung: list[dict[str, Any]] = []

    async def click(job: dict[str, Any]) -> None:
        rung.append(job)

    jobs.handle("click2call", click, max_age=60)
    jobs.add("click2call", {"phone": "79001112233"})
    age(jobs, 3600)  # committed before a restart an hour ago
    await jobs.work()
    assert rung == []  # never rung late
    (dead,) = jobs.list("dead")
    assert dead.kind == "click2call" and "too old" in (dead.last_error or "")


async def test_dead_letters_are_visible_and_retryable(jobs: Jobs) -> None:
    calls: list[int] = []

    async def flaky(job: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise PermanentFailure("no extension for Bitrix24 user 7")

    jobs.handle("click2call", flaky, max_age=60)
    jobs.add("click2call", {"user_id": "7"})
    await jobs.work()
    assert [j.last_error for j in jobs.list("dead")] == ["no extension for Bitrix24 user 7"]
    assert jobs.counts() == {"dead": 1}
    age(jobs, 3600)
    assert jobs.retry_dead() == 1  # the admin fixed the cause: it runs as if just asked for
    await jobs.work()
    assert len(calls) == 2 and jobs.counts() == {}


async def test_retry_later_waits_and_gives_up_at_the_deadline(jobs: Jobs) -> None:
    async def down(job: dict[str, Any]) -> None:
        raise RetryLater("AMI is not connected", retry_after=30)

    jobs.handle("click2call", down, max_age=60)
    jobs.add("click2call", {})
    await jobs.work()
    (row,) = jobs.db.execute("SELECT state, next_try_at - created_at FROM jobs").fetchall()
    assert row[0] == "pending" and 29 < row[1] < 31
    jobs.db.execute("UPDATE jobs SET next_try_at=?, created_at=created_at-40", (time.time(),))
    await jobs.work()  # the next try would land after the deadline: dead now, not late
    assert jobs.counts() == {"dead": 1}


def test_once_remembers_the_key_and_enqueues_in_one_transaction(jobs: Jobs) -> None:
    assert jobs.add("telegram-update", {"update_id": 5}, once="tg-update:5")
    assert not jobs.add("telegram-update", {"update_id": 5}, once="tg-update:5")
    assert jobs.pending() == 1
    assert jobs.add("telegram-update", {"update_id": 5}, once="tg-update:5", window=0)  # window over
    # A failure while enqueueing leaves no half: the key is not remembered without its job.
    jobs.db.execute("DROP TABLE jobs")
    with pytest.raises(sqlite3.OperationalError):
        jobs.add("x", {}, once="key-without-job")
    assert jobs.db.execute("SELECT 1 FROM inbound_seen WHERE key='key-without-job'").fetchone() is None
