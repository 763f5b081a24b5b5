"""What a sink is, and the errors it answers with.

A sink is a small adapter: render the record, send it, and classify the answer. It never decides
when to try again: it raises ``RetryLater`` (optionally with the far side's own ``retry_after``)
or ``PermanentFailure``, and the outbox dispatcher does the rest.
"""

from __future__ import annotations

from typing import Protocol

from bridge.outbox.store import Delivery


class DeliveryError(Exception):
    """The delivery did not happen."""


class RetryLater(DeliveryError):
    """A temporary failure: try again later, after exactly ``retry_after`` seconds if given."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """Retrying cannot help (a 4xx the far side means, a record it rejects): dead-letter it."""


class Sink(Protocol):
    name: str

    async def send(self, delivery: Delivery) -> None:
        """Deliver one record; return on success, raise a DeliveryError otherwise."""

    async def close(self) -> None: ...
