"""The child process of ``test_kill9``: appends to sessions until it is killed.

Usage: ``python kill9_child.py DB SESSIONS STARTS STOP``

- ``SESSIONS``: how many sessions (ids ``kill9-0``, ``kill9-1``, …; created if
  missing, found again after a restart);
- ``STARTS``: comma-separated index of the first message to send per session —
  the parent passes the first one it has not seen acknowledged, so a restarted
  child retries its last unacknowledged key first;
- ``STOP``: send messages up to this index (exclusive), then close and print
  ``done``; ``-1`` runs until killed.

One thread per session appends ``message <n> of <session>`` with the idempotency
key ``<session>:<n>`` and prints ``ack <session> <key> <offset>`` once the runtime
has acknowledged it (each line flushed at once). ``ready`` is printed when the
runtime is open.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime import Runtime, Settings

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def session_id(index: int) -> str:
    return f"kill9-{index}"


def key_of(sid: str, n: int) -> str:
    return f"{sid}:{n}"


def content_of(sid: str, n: int) -> str:
    return f"message {n} of {sid}"


def main() -> None:
    db, sessions, starts, stop = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    first = [int(n) for n in starts.split(",")]
    runtime = Runtime(Settings(db=db, snapshot_interval=5))
    ids = [session_id(i) for i in range(sessions)]
    for sid in ids:
        runtime.create(session_id=sid)
    say("ready")
    failures: list[BaseException] = []

    def work(sid: str, start: int) -> None:
        n = start
        try:
            while stop < 0 or n < stop:
                key = key_of(sid, n)
                message = runtime.append(sid, content_of(sid, n), idempotency_key=key)
                say(f"ack {sid} {key} {message['offset']}")
                n += 1
        except BaseException as error:
            failures.append(error)
            raise

    threads = [
        threading.Thread(target=work, args=(sid, start), daemon=True)
        for sid, start in zip(ids, first, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.close()
    if failures:
        raise SystemExit(f"{len(failures)} appender(s) failed: {failures[0]!r}")
    say("done")


if __name__ == "__main__":
    main()
