"""Many threads, one store: single-writer sessions under contention, group commit,
and a second writer on the same file that must never fork a session's history
(reliability.md T04, T08)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from projections.documents import session_document
from runtime import ConcurrencyConflictError, NameTakenError, Runtime
from runtime.persistence import SessionsRecorder
from tests.conftest import RuntimeFactory
from tests.support.database import query

WAIT = 30.0
"""Seconds any single wait in these tests may take before it counts as a hang."""


def committer_of(runtime: Runtime) -> Any:
    recorder = runtime.app.recorder
    assert isinstance(recorder, SessionsRecorder)
    return recorder.committer


def all_events(runtime: Runtime, session_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = runtime.events(session_id, after=after, limit=1000)
        found.extend(page["events"])
        if not page["has_more"]:
            return found
        after = found[-1]["offset"]


def no_duplicate_offsets_in_the_log(db: str) -> None:
    duplicates = query(
        db,
        "SELECT originator_id, originator_version, count(*) FROM stored_events "
        "GROUP BY originator_id, originator_version HAVING count(*) > 1",
    )
    assert duplicates == []


def test_sixteen_threads_appending_fifty_times_to_one_session_get_every_offset_once(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(snapshot_interval=50)
    session_id = runtime.create()["id"]
    threads, each = 16, 50
    barrier = threading.Barrier(threads)

    def write(t: int) -> list[tuple[int, str]]:
        barrier.wait(WAIT)
        done = []
        for n in range(each):
            message = runtime.append(session_id, f"t{t}-m{n}")
            done.append((message["offset"], message["content"]))
        return done

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(write, t) for t in range(threads)]
        # No error reaches a caller: .result() would raise it.
        acknowledged = [ack for f in futures for ack in f.result(WAIT)]

    total = threads * each
    assert sorted(offset for offset, _ in acknowledged) == list(range(2, total + 2))
    by_offset = dict(acknowledged)
    # Each thread's messages are in its own order (one writer, FIFO per caller).
    for t in range(threads):
        mine = [o for o, c in sorted(acknowledged) if c.startswith(f"t{t}-")]
        assert [by_offset[o] for o in mine] == [f"t{t}-m{n}" for n in range(each)]

    messages = runtime.messages(session_id)
    assert [(m["offset"], m["content"]) for m in messages] == sorted(acknowledged)
    document = runtime.get(session_id)
    assert (document["offset"], document["message_count"]) == (total + 1, total)

    # A fresh runtime on the file replays to the same state.
    runtime.close()
    fresh = runtime_factory()
    again = fresh.get(session_id)
    for field in ("offset", "head", "message_count"):
        assert again[field] == document[field]
    assert fresh.messages(session_id) == messages
    replayed = session_document(fresh.app.repository.get(session_id))
    for field in ("offset", "head", "message_count"):
        assert replayed[field] == document[field]
    assert fresh.append(session_id, "after")["offset"] == total + 2


def test_sixty_four_threads_writing_sixty_four_sessions_share_commits(
    runtime: Runtime,
) -> None:
    sessions, each = 64, 10
    ids = [runtime.create()["id"] for _ in range(sessions)]
    committer = committer_of(runtime)
    batches_before, writes_before = committer.batches, committer.writes
    barrier = threading.Barrier(sessions)

    def write(session_id: str) -> list[int]:
        barrier.wait(WAIT)
        return [
            runtime.append(session_id, f"{session_id}:{n}")["offset"]
            for n in range(each)
        ]

    with ThreadPoolExecutor(sessions) as pool:
        futures = {sid: pool.submit(write, sid) for sid in ids}
        acknowledged = {sid: f.result(WAIT) for sid, f in futures.items()}

    for session_id in ids:
        assert acknowledged[session_id] == list(range(2, each + 2))
        assert [m["content"] for m in runtime.messages(session_id)] == [
            f"{session_id}:{n}" for n in range(each)
        ]
    batches = committer.batches - batches_before
    writes = committer.writes - writes_before
    assert writes == sessions * each
    # Group commit batched: fewer transactions (and fsyncs) than writes.
    assert batches < writes
    assert runtime.views.position() == runtime.app.recorder.max_notification_id()


def test_a_name_clash_inside_a_batch_fails_alone_and_the_batch_commits(
    runtime: Runtime,
) -> None:
    # Sixteen sessions of one user take the same name at once while sixteen
    # others append: batches written together meet the clash, which must fail
    # one write only (written again apart), never the appends beside it.
    renamers = [runtime.create()["id"] for _ in range(16)]
    appenders = [runtime.create()["id"] for _ in range(16)]
    barrier = threading.Barrier(len(renamers) + len(appenders))

    def rename(session_id: str) -> str:
        barrier.wait(WAIT)
        try:
            runtime.update(session_id, name="Planning")
        except NameTakenError:
            return "taken"
        return "named"

    def append(session_id: str) -> list[int]:
        barrier.wait(WAIT)
        return [runtime.append(session_id, f"m{n}")["offset"] for n in range(5)]

    with ThreadPoolExecutor(len(renamers) + len(appenders)) as pool:
        renamed = [pool.submit(rename, sid) for sid in renamers]
        appended = {sid: pool.submit(append, sid) for sid in appenders}
        outcomes = sorted(f.result(WAIT) for f in renamed)
        offsets = {sid: f.result(WAIT) for sid, f in appended.items()}

    assert outcomes == ["named"] + ["taken"] * 15
    assert [runtime.get(sid)["name"] for sid in renamers].count("Planning") == 1
    for session_id in appenders:
        assert offsets[session_id] == [2, 3, 4, 5, 6]
        assert [m["content"] for m in runtime.messages(session_id)] == [
            f"m{n}" for n in range(5)
        ]


def test_a_stale_writer_reloads_and_retries_its_command_after_the_other_writes(
    runtime_factory: RuntimeFactory, db: str
) -> None:
    first = runtime_factory()
    second = runtime_factory()
    session_id = first.create()["id"]
    assert first.append(session_id, "a")["offset"] == 2
    # The second runtime's actor loads the session now (offset 2)...
    assert second.append(session_id, "b")["offset"] == 3

    # ...so the first runtime's actor is stale: its write at offset 3 is refused
    # by the log, and the command runs again on the reloaded session.
    assert first.append(session_id, "c")["offset"] == 4
    assert first.directory.conflicts.retries == 1

    for runtime in (first, second):
        assert [m["content"] for m in runtime.messages(session_id)] == ["a", "b", "c"]
        assert [e["offset"] for e in all_events(runtime, session_id)] == [1, 2, 3, 4]
    no_duplicate_offsets_in_the_log(db)


def test_two_runtimes_racing_on_one_session_never_fork_its_history(
    runtime_factory: RuntimeFactory, db: str
) -> None:
    runtimes = [runtime_factory(), runtime_factory()]
    session_id = runtimes[0].create()["id"]
    per_thread, threads_each = 25, 2
    barrier = threading.Barrier(len(runtimes) * threads_each)
    conflicts: list[str] = []  # codes of conflicts that reached a caller

    def write(r: int, t: int) -> list[tuple[int, str]]:
        runtime = runtimes[r]
        barrier.wait(WAIT)
        done = []
        for n in range(per_thread):
            content = f"r{r}-t{t}-m{n}"
            for _ in range(50):
                try:
                    message = runtime.append(
                        session_id, content, idempotency_key=content
                    )
                except ConcurrencyConflictError as error:
                    conflicts.append(error.code)
                    continue
                done.append((message["offset"], content))
                break
            else:
                raise AssertionError(f"{content} conflicted 50 times in a row")
        return done

    with ThreadPoolExecutor(len(runtimes) * threads_each) as pool:
        futures = [
            pool.submit(write, r, t)
            for r in range(len(runtimes))
            for t in range(threads_each)
        ]
        acknowledged = [ack for f in futures for ack in f.result(WAIT)]

    total = len(runtimes) * threads_each * per_thread
    assert sorted(o for o, _ in acknowledged) == list(range(2, total + 2))
    retried = sum(r.directory.conflicts.retries for r in runtimes)
    assert retried, "the two writers never met"
    assert set(conflicts) <= {"conflict"}
    no_duplicate_offsets_in_the_log(db)
    for runtime in runtimes:
        messages = runtime.messages(session_id)
        # One linear history: every acknowledged message once, where acknowledged.
        assert [(m["offset"], m["content"]) for m in messages] == sorted(acknowledged)
        offsets = [e["offset"] for e in all_events(runtime, session_id)]
        assert offsets == list(range(1, total + 2))
        assert runtime.get(session_id)["message_count"] == total
        assert runtime.views.position() == runtime.app.recorder.max_notification_id()
