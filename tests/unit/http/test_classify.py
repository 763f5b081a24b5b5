"""One classification of HTTP answers for every outside API (bridge/http/client.py)."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from bridge.errors import DeliveryError, PermanentFailure, RetryLater
from bridge.http.client import classify, retry_after_header


def body_codes(status: int, body: Any) -> DeliveryError | None:
    """A per-API reading of the body, as an SMS gateway's would be."""
    if isinstance(body, dict) and body.get("error_code") == 9:
        return RetryLater("too many requests", 60.0)
    if isinstance(body, dict) and "error" in body:
        return PermanentFailure(f"gateway says {body['error']}")
    return None


def outcome(status: int, body: Any = None, retry_after: float | None = None) -> tuple[str, float | None]:
    try:
        classify(status, body, api="test", retry_after=retry_after, by_body=body_codes)
    except RetryLater as e:
        return "retry", e.retry_after
    except PermanentFailure:
        return "permanent", None
    return "ok", None


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (200, {"id": 1}, None, ("ok", None)),
        (200, {"error": "auth"}, None, ("permanent", None)),  # the body's own code, in a 200
        (200, {"error_code": 9}, None, ("retry", 60.0)),  # ... retryable by the API's own table
        (503, {"error": "service unavailable"}, None, ("retry", None)),  # a JSON 503: backoff
        (500, "Internal Server Error", None, ("retry", None)),
        (429, None, 7.0, ("retry", 7.0)),  # Retry-After honoured
        (503, {"error_code": 9}, 3.0, ("retry", 60.0)),  # the API's own retry_after wins
        (408, None, None, ("retry", None)),
        (400, {"error": "bad phone"}, None, ("permanent", None)),
        (404, "no such hook", None, ("permanent", None)),
        (301, None, None, ("permanent", None)),
    ],
)
def test_every_answer_is_classified_the_same_way(
    status: int, body: Any, retry_after: float | None, expected: tuple[str, float | None]
) -> None:
    assert outcome(status, body, retry_after) == expected


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_header("5") == 5.0
    assert retry_after_header("-3") == 0.0
    assert retry_after_header(None) is None
    assert retry_after_header("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_header(date, now=1_000_000.0) == pytest.approx(30.0)
