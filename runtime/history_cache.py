"""Pages of history kept in memory, checked against the session's index row on
every read.

Reading a page from the log costs a range query plus decoding every message
(~1 us each); the latest page of a live conversation is read again and again
(every client refresh, every reconnect). A page is kept with the raw bytes of
the index row it was read under, its *token*. The index row is written in the
same transaction as every event of its session, by any process, and its bytes
hold the session's offset, spans and creation time, so a page whose token
equals the row read now is exactly what the log would answer: a read still
costs the row's indexed lookup (which the ownership check needs anyway), but
not the page.

Pages are handed out as copies (a caller may change what it is given), kept
least recently used first under a bound on their approximate size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

PageShape = tuple[str, int, int | None, int | None, bool]
"""(session id, limit, before, after, descending): what a page was asked as."""

MESSAGE_OVERHEAD = 400
"""Bytes a cached message costs besides its content and JSON fields (its dict,
keys and small values), roughly."""


@dataclass(frozen=True)
class _Page:
    token: bytes
    messages: tuple[dict[str, Any], ...]
    has_more: bool
    size: int


def copy_message(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of a message document that shares nothing mutable with it."""
    copied = dict(message)
    attachments, metadata, usage = (
        message["attachments"],
        message["metadata"],
        message["usage"],
    )
    copied["attachments"] = (
        orjson.loads(orjson.dumps(attachments)) if attachments else []
    )
    copied["metadata"] = orjson.loads(orjson.dumps(metadata)) if metadata else {}
    copied["usage"] = dict(usage) if usage else None
    return copied


def _size(messages: list[dict[str, Any]]) -> int:
    size = 0
    for message in messages:
        size += MESSAGE_OVERHEAD + len(message["content"])
        for key in ("attachments", "metadata"):
            if message[key]:
                size += len(orjson.dumps(message[key]))
    return size


class HistoryPageCache:
    """Pages of history by shape, valid while their session's index row is
    unchanged; at most ``max_bytes`` (approximately) in all, 0: none kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._pages: OrderedDict[PageShape, _Page] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(
        self, shape: PageShape, token: bytes
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """Copies of the page kept for ``shape`` and its ``has_more``, if it was
        read under ``token``; else ``None`` (and a stale page is dropped)."""
        if not self.max_bytes:
            return None
        with self._lock:
            page = self._pages.get(shape)
            if page is None or page.token != token:
                self.misses += 1
                self._forget(shape)
                return None
            self._pages.move_to_end(shape)
            self.hits += 1
        return [copy_message(m) for m in page.messages], page.has_more

    def put(
        self,
        shape: PageShape,
        token: bytes,
        messages: list[dict[str, Any]],
        has_more: bool,
    ) -> None:
        """Keep a copy of a page read under ``token`` (a page larger than a
        quarter of the bound is not kept)."""
        if not self.max_bytes:
            return
        size = _size(messages)
        if size > self.max_bytes // 4:
            return
        page = _Page(token, tuple(copy_message(m) for m in messages), has_more, size)
        with self._lock:
            self._forget(shape)
            self._pages[shape] = page
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._forget(next(iter(self._pages)))  # the least recently used

    def _forget(self, shape: PageShape) -> None:
        page = self._pages.pop(shape, None)
        if page is not None:
            self._bytes -= page.size

    @property
    def size(self) -> int:
        """Approximate bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._pages)
