"""Record golden event logs: ``python -m tests.golden.record v2`` (a new
directory per released event schema; never rewrite an old one).

Drives a runtime on a fresh SQLite file with a fake clock through a life that
records every event class of :class:`aggregates.session.Session` (the forks,
the reset's successor and the summaries included), then writes each session's
log as stored (one JSON object per line: id, offset, topic and the stored
state) with the digest of the state it folds to (see :mod:`tests.golden.fold`).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

import orjson

from runtime import FakeClock, Runtime, Settings
from tests.golden.fold import GOLDEN, digest, event_topics, fold, read_log


def live(runtime: Runtime, clock: FakeClock) -> list[str]:
    """A life that records every event class; the ids of the sessions."""
    session = runtime.create(
        user_id="u1", metadata={"source": "golden"}, attributes={"a": {"b": 1}}
    )
    sid = session["id"]
    clock.advance(1)
    runtime.update(sid, name="Golden")
    runtime.update(sid, pinned=True)
    runtime.update(sid, pinned=False)
    runtime.update(sid, metadata={"source": "golden", "v": 1})
    runtime.patch_attributes(sid, {"a": {"c": 2}, "gone": None})
    runtime.send(sid, "hello there")
    runtime.append(
        sid,
        "a tool said so",
        role="tool",
        author_id="lookup",
        metadata={"thought": "t", "actions": ["a"]},
        usage={"input_tokens": 3, "output_tokens": 4},
        idempotency_key="k-1",
    )
    checkpoint = runtime.checkpoint_save(sid, "before", description="a point")
    runtime.send(sid, "second turn")
    runtime.checkpoint_restore(sid, checkpoint["id"])
    runtime.append(sid, "after the restore")
    runtime.rewind(sid, checkpoint["offset"])
    runtime.checkpoint_delete(sid, checkpoint["id"])
    runtime.summarize(sid)
    summaries = runtime.context(sid)["summaries"]
    runtime.drop_summary(sid, summaries[0]["offset"])
    fork = runtime.fork(sid)["id"]
    runtime.append(fork, "in the fork")
    runtime.clear(sid)
    runtime.renew(sid)
    runtime.update_timeout(sid, timeout_minutes=45)
    runtime.set_reset_policy(sid, daily_at="04:00")
    runtime.rescope(sid, "main")
    runtime.set_webhook(sid, "https://example.invalid/hook", events=["message"])
    runtime.set_webhook(sid, None)
    successor = runtime.reset(sid)["id"]
    runtime.append(successor, "carried on")
    # idle past the warning and the expiry
    clock.advance(44 * 60)
    runtime.run_lifecycle()
    clock.advance(2 * 60)
    runtime.run_lifecycle()
    runtime.delete(fork)
    return [sid, fork, successor]


def record(version: str) -> None:
    target = GOLDEN / version
    if target.exists():
        sys.exit(f"{target} exists: golden logs are never rewritten")
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "golden.db"
        runtime = Runtime(Settings(db=str(db), clock=clock))
        try:
            sessions = live(runtime, clock)
        finally:
            runtime.close()
        connection = sqlite3.connect(db)
        target.mkdir(parents=True)
        topics: set[str] = set()
        for number, session_id in enumerate(sessions):
            rows = connection.execute(
                "SELECT originator_version, topic, state FROM stored_events "
                "WHERE originator_id = ? ORDER BY originator_version",
                (session_id,),
            ).fetchall()
            path = target / f"session-{number}.jsonl"
            path.write_bytes(
                b"".join(
                    orjson.dumps(
                        {
                            "id": session_id,
                            "offset": offset,
                            "topic": topic,
                            "state": orjson.loads(state),
                        }
                    )
                    + b"\n"
                    for offset, topic, state in rows
                )
            )
            topics.update(topic for _, topic, _ in rows)
            path.with_suffix(".digest").write_text(digest(fold(read_log(path))) + "\n")
    missing = sorted(event_topics() - topics)
    if missing:
        sys.exit(f"the life recorded no {missing} event: extend it")
    print(f"recorded {len(sessions)} logs in {target}")


if __name__ == "__main__":
    record(sys.argv[1] if len(sys.argv) > 1 else "v1")
