"""Pages of history kept between reads (``runtime.history_cache``): a kept page
answers only while the session's index row is unchanged, whoever wrote to the
session (this runtime or another on the same database), and a caller cannot
change what the next caller is given."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import (
    FakeClock,
    Principal,
    Runtime,
    SessionExpiredError,
    SessionNotFoundError,
)
from runtime.history_cache import HistoryPageCache
from tests.conftest import RuntimeFactory

ALICE = Principal("alice")
BOB = Principal("bob")


def contents(page: dict[str, Any]) -> list[str]:
    return [m["content"] for m in page["messages"]]


def from_log(runtime: Runtime, session_id: str, **shape: Any) -> dict[str, Any]:
    """The page as the log answers it, with no page kept."""
    cache = runtime.history_cache
    kept, cache.max_bytes = cache.max_bytes, 0
    try:
        return runtime.history(session_id, **shape)
    finally:
        cache.max_bytes = kept


def test_a_repeated_read_is_answered_from_the_kept_page(runtime: Runtime) -> None:
    sid = runtime.create()["id"]
    for i in range(5):
        runtime.append(sid, f"m{i}", metadata={"n": i})
    first = runtime.history(sid, limit=3)
    hits = runtime.history_cache.hits

    again = runtime.history(sid, limit=3)

    assert runtime.history_cache.hits == hits + 1
    assert again == first == from_log(runtime, sid, limit=3)
    assert contents(again) == ["m4", "m3", "m2"]
    assert again["has_more"]


def test_each_shape_of_page_is_kept_apart(runtime: Runtime) -> None:
    sid = runtime.create()["id"]
    for i in range(6):
        runtime.append(sid, f"m{i}")
    shapes: list[dict[str, Any]] = [
        {"limit": 2},
        {"limit": 2, "order": "asc"},
        {"limit": 2, "before": 5},
        {"limit": 2, "after": 3, "order": "asc"},
    ]
    for _ in range(2):  # read from the log, then from the kept pages
        for shape in shapes:
            assert runtime.history(sid, **shape) == from_log(runtime, sid, **shape)
    assert runtime.history_cache.hits >= len(shapes)


def test_every_write_in_this_runtime_is_seen_by_the_next_read(
    runtime: Runtime,
) -> None:
    sid = runtime.create()["id"]
    runtime.append(sid, "a")
    runtime.append(sid, "b")
    checkpoint = runtime.checkpoint_save(sid, "two")
    assert contents(runtime.history(sid)) == ["b", "a"]

    runtime.append(sid, "c")
    assert contents(runtime.history(sid)) == ["c", "b", "a"]
    runtime.checkpoint_restore(sid, checkpoint["id"])
    assert contents(runtime.history(sid)) == ["b", "a"]
    runtime.clear(sid)
    assert contents(runtime.history(sid)) == []
    runtime.append(sid, "d")
    assert contents(runtime.history(sid)) == ["d"]
    runtime.rewind(sid, 2)
    assert contents(runtime.history(sid)) == ["a"]


def test_a_write_by_another_runtime_is_seen_by_the_next_read(
    runtime_factory: RuntimeFactory,
) -> None:
    """Two runtimes on one database are what two processes are to each other:
    each keeps its own pages, and the index row tells either of the other's
    writes."""
    reader = runtime_factory(supervisor_interval=0)
    writer = runtime_factory(supervisor_interval=0)
    sid = reader.create()["id"]
    reader.append(sid, "a")
    assert contents(reader.history(sid)) == ["a"]
    assert contents(reader.history(sid)) == ["a"]  # kept

    writer.append(sid, "b")
    assert contents(reader.history(sid)) == ["b", "a"]
    writer.rewind(sid, 2)
    assert contents(reader.history(sid)) == ["a"]


def test_a_fork_reads_its_own_history(runtime: Runtime) -> None:
    sid = runtime.create()["id"]
    for text in ("a", "b", "c"):
        runtime.append(sid, text)
    assert contents(runtime.history(sid)) == ["c", "b", "a"]
    fork = runtime.fork(sid, offset=3)
    assert contents(runtime.history(fork["id"])) == ["b", "a"]
    runtime.append(fork["id"], "x")
    assert contents(runtime.history(fork["id"])) == ["x", "b", "a"]
    assert contents(runtime.history(sid)) == ["c", "b", "a"]


def test_changing_a_page_does_not_change_what_the_next_reader_gets(
    runtime: Runtime,
) -> None:
    sid = runtime.create()["id"]
    runtime.append(
        sid,
        "hello",
        metadata={"thought": {"steps": ["a"]}},
        attachments=[{"url": "https://example.com/a.png"}],
    )
    first = runtime.history(sid)
    message = first["messages"][0]
    message["content"] = "changed"
    message["metadata"]["thought"]["steps"].append("b")
    message["attachments"][0]["url"] = "changed"
    first["messages"].clear()

    second = runtime.history(sid)
    third = runtime.history(sid)
    assert second == third == from_log(runtime, sid)
    assert second["messages"][0]["metadata"] == {"thought": {"steps": ["a"]}}
    second["messages"][0]["metadata"]["thought"]["steps"].append("c")
    assert runtime.history(sid) == from_log(runtime, sid)


def test_a_kept_page_is_not_shown_to_another_owner(runtime: Runtime) -> None:
    sid = runtime.create(principal=ALICE)["id"]
    runtime.append(sid, "private", principal=ALICE)
    runtime.history(sid, principal=ALICE)
    runtime.history(sid, principal=ALICE)
    with pytest.raises(SessionNotFoundError):
        runtime.history(sid, principal=BOB)


def test_a_kept_page_is_not_shown_once_the_session_has_expired(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(supervisor_interval=0)
    sid = runtime.create()["id"]
    runtime.append(sid, "hi")
    runtime.history(sid)
    runtime.history(sid)
    clock.advance(31 * 60)  # past the 30-minute default timeout
    with pytest.raises(SessionExpiredError):
        runtime.history(sid)


def test_without_memory_for_pages_none_is_kept(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(history_cache_bytes=0)
    sid = runtime.create()["id"]
    runtime.append(sid, "a")
    assert runtime.history(sid) == runtime.history(sid)
    assert len(runtime.history_cache) == 0
    assert runtime.history_cache.hits == 0


def message(content: str) -> dict[str, Any]:
    return {"content": content, "attachments": [], "metadata": {}, "usage": None}


def test_the_cache_stays_within_its_bound_least_recently_used_first() -> None:
    cache = HistoryPageCache(max_bytes=4 * 1000)
    for i in range(10):
        cache.put((f"s{i}", 50, None, None, True), b"t", [message("x" * 100)], False)
        assert cache.size <= 4 * 1000
    assert cache.get(("s9", 50, None, None, True), b"t") is not None
    assert cache.get(("s0", 50, None, None, True), b"t") is None  # evicted first
    assert cache.get(("s9", 50, None, None, True), b"other") is None  # stale
    assert cache.get(("s9", 50, None, None, True), b"t") is None  # and dropped
    big = [message("x" * 2000)]
    cache.put(("big", 50, None, None, True), b"t", big, False)
    assert cache.get(("big", 50, None, None, True), b"t") is None  # too big to keep
