"""The provider's pure parts: server-sent event framing and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.providers.retry import backoff_delay, retry_after_seconds
from runtime.providers.sse import sse_data

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_sse_data_joins_lines_and_skips_comments_and_other_fields() -> None:
    lines = [
        ": keep-alive",
        "event: chunk",
        "id: 7",
        'data: {"a":',
        "data:1}",
        "",
        "",
        "retry: 100",
        "",
        "data: [DONE]",
    ]

    assert list(sse_data(lines)) == ['{"a":\n1}', "[DONE]"]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
        ({"retry-after": "Thu, 02 Jan 2025 03:04:15 GMT"}, 10.0),
        ({"retry-after": "Thu, 02 Jan 2025 03:00:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_milliseconds_and_dates(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers, now=lambda: NOW) == seconds


def test_backoff_doubles_up_to_the_cap_with_half_of_it_jittered() -> None:
    lowest = [backoff_delay(n, 0.5, 3.0, lambda: 0.0) for n in range(1, 6)]
    highest = [backoff_delay(n, 0.5, 3.0, lambda: 1.0) for n in range(1, 6)]

    assert lowest == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert highest == [0.5, 1.0, 2.0, 3.0, 3.0]
