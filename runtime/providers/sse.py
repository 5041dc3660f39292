"""Server-sent events: the ``data`` of each event in a stream of lines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` payload of every event in ``lines`` (line ends removed).

    Multi-line data is joined with newlines; comments (``:``), ``event``, ``id``
    and ``retry`` fields are skipped; an event without data yields nothing. A
    last event not followed by a blank line still counts (some servers end the
    stream right after ``data: [DONE]``).
    """
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)
