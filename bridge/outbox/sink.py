"""The Sink port: what the outbox needs from an adapter that delivers records somewhere.

A sink is a small adapter: render the record, send it, and classify the answer. It never decides
when to try again: it raises ``RetryLater`` (optionally with the far side's own ``retry_after``)
or ``PermanentFailure`` (bridge.errors), and the outbox dispatcher does the rest.
"""

from __future__ import annotations

from typing import Protocol

from bridge.outbox.store import Delivery


class Sink(Protocol):
    name: str

    async def send(self, delivery: Delivery) -> None:
        """Deliver one record; return on success, raise a DeliveryError otherwise."""

    async def close(self) -> None: ...
