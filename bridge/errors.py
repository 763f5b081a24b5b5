"""The project's shared vocabulary of failures, at the bottom of the import graph.

- ``DeliveryError`` and its two kinds are what every outside-system adapter answers with: the
  outbox and the jobs queue decide from them when (and whether) to try again.
- ``StorageUnavailable``: the machine cannot store anything right now (an HTTP 503, not a 4xx).
- ``BadRequest`` is input we refuse at an HTTP route: a stable machine id, a message for people.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """The delivery did not happen."""


class RetryLater(DeliveryError):
    """A temporary failure: try again later, after exactly ``retry_after`` seconds if given."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """Retrying cannot help (a 4xx the far side means, a record it rejects): dead-letter it."""


class StorageUnavailable(Exception):
    """The database refused a write (disk full, read-only, I/O error): nothing was committed.
    An HTTP route answers 503 with Retry-After; the AMI pipeline keeps the records and retries."""


class BadRequest(Exception):
    """Input we refuse: ``error`` is a stable id for machines, the message is for people."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error = status, error


class SettingsError(Exception):
    """A setting that cannot work: ``key`` is relative to the integration's own section."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem
