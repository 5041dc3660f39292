"""Shared helpers of the benchmarks: a scratch directory on a real disk, timing,
medians, the raw-sqlite3 floor store, and the result table.

Every figure is a ratio between what sessiond does and a floor measured in the
same run on the same disk. The two are measured in interleaved rounds (floor,
subject, floor, subject, ... with the order alternating), so that a burst of noise
on this machine's few, shared cores hits both; medians of the rounds are quoted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import string
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "hugetlbfs", "squashfs", "overlay"}
MESSAGE_BYTES = 200


# --- options


@dataclass(frozen=True)
class Options:
    """How a benchmark run is configured (from the command line)."""

    quick: bool = False
    directory: str | None = None
    keep: bool = False
    rounds: int | None = None

    def pick(self, full: Any, quick: Any) -> Any:
        """``quick`` in a quick run, else ``full``."""
        return quick if self.quick else full

    def n_rounds(self, full: int = 7, quick: int = 3) -> int:
        """How many interleaved rounds to measure."""
        if self.rounds is not None:
            return self.rounds
        return quick if self.quick else full


def parse_options(description: str, argv: Sequence[str] | None = None) -> Options:
    """Read the common command line (``--quick``, ``--dir``, ``--keep``,
    ``--rounds``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--dir",
        dest="directory",
        help="where to put the scratch databases (must be on a real disk; "
        "default: the repository's parent directory, else /var/tmp, else /tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--rounds", type=int, help="rounds per measurement")
    args = parser.parse_args(argv)
    return Options(
        quick=args.quick, directory=args.directory, keep=args.keep, rounds=args.rounds
    )


# --- disk


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on (from ``/proc/mounts``)."""
    path = path.resolve()
    best, best_type = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best_type
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = str(path) == mount_point or str(path).startswith(
            mount_point.rstrip("/") + "/"
        )
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def disk_base(options: Options) -> Path:
    """A directory on a real (not in-memory) filesystem for the scratch files."""
    candidates = (
        [Path(options.directory)]
        if options.directory
        else [REPO.parent, Path("/var/tmp"), Path(tempfile.gettempdir())]
    )
    for candidate in candidates:
        if not candidate.is_dir() or not os.access(candidate, os.W_OK):
            continue
        kind = filesystem_type(candidate)
        if kind not in MEMORY_FILESYSTEMS:
            return candidate
    msg = (
        f"no real-disk directory among {', '.join(map(str, candidates))}; "
        "pass --dir on a disk-backed filesystem"
    )
    raise SystemExit(msg)


@contextmanager
def scratch(options: Options, name: str) -> Iterator[Path]:
    """A fresh directory on the benchmark disk, removed afterwards (unless --keep)."""
    base = disk_base(options)
    path = Path(tempfile.mkdtemp(prefix=f"sessiond-bench-{name}-", dir=base))
    try:
        yield path
    finally:
        if options.keep:
            say(f"  (kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def describe_disk(options: Options) -> str:
    """One line saying where the scratch files go and on what."""
    base = disk_base(options)
    usage = shutil.disk_usage(base)
    return (
        f"scratch disk: {base} ({filesystem_type(base)}, "
        f"{usage.free / 2**30:.0f} GiB free)"
    )


def describe_machine() -> str:
    """One line about the machine and versions."""
    load = os.getloadavg()
    return (
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


# --- timing


def say(text: str = "") -> None:
    """Print a progress line at once."""
    print(text, flush=True)


def median(values: Sequence[float]) -> float:
    """The median."""
    return float(statistics.median(values))


def elapsed(function: Callable[[], Any]) -> float:
    """Seconds ``function()`` took."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved(
    n_rounds: int, measures: dict[str, Callable[[], float]]
) -> dict[str, list[float]]:
    """Run each measure once per round, in an order that rotates each round (so
    each measure goes first as often as the others), and collect what each
    returned. Garbage collection runs between measures."""
    names = list(measures)
    found: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(n_rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            found[name].append(measures[name]())
    return found


def per_call(function: Callable[[], Any], calls: int, budget: float = 2.0) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls (fewer, at least
    3, when they take more than ``budget`` seconds in all)."""
    start = time.perf_counter()
    done = 0
    while done < calls:
        function()
        done += 1
        if done >= 3 and time.perf_counter() - start > budget:
            break
    return (time.perf_counter() - start) / done


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- content


_LETTERS = string.ascii_letters + string.digits + "     .,"


def message_text(index: int, size: int = MESSAGE_BYTES) -> str:
    """A deterministic, not very compressible message of exactly ``size`` chars."""
    head = f"message {index:09d} "
    rng = random.Random(index)
    return head + "".join(rng.choice(_LETTERS) for _ in range(size - len(head)))


class MessagePool:
    """A fixed set of pre-made 200-byte messages, handed out in turn, so that
    making message text costs nothing inside a timed loop."""

    def __init__(self, count: int = 1024, size: int = MESSAGE_BYTES) -> None:
        self._messages = [message_text(i, size) for i in range(count)]
        self._next = 0

    def next(self) -> str:
        """The next message."""
        message = self._messages[self._next % len(self._messages)]
        self._next += 1
        return message


# --- the floor


FLOOR_SCHEMA = (
    # Modelled on the openai-agents SQLiteSession message table.
    "CREATE TABLE IF NOT EXISTS agent_messages ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "session_id TEXT NOT NULL, "
    "message_data TEXT NOT NULL, "
    "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
    "CREATE INDEX IF NOT EXISTS idx_agent_messages_session_id "
    "ON agent_messages (session_id, created_at)",
)
FLOOR_INSERT = "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)"
FLOOR_LATEST = (
    # The index (session_id, created_at) holds the rowid too, so this walks it
    # backwards and stops after 50 entries: the fastest raw form of the query.
    "SELECT id, message_data FROM agent_messages WHERE session_id = ? "
    "ORDER BY created_at DESC, id DESC LIMIT ?"
)
FLOOR_LATEST_LITERAL = (
    "SELECT id, message_data FROM agent_messages WHERE session_id = ? "
    "ORDER BY id DESC LIMIT ?"
)


def message_data(role: str, content: str) -> str:
    """What the floor stores for a message: JSON of role and content."""
    return json.dumps({"role": role, "content": content})


class FloorStore:
    """Raw sqlite3 in WAL mode with ``synchronous=FULL``: the floor."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.connection = connect_floor(path, synchronous=synchronous)
        for statement in FLOOR_SCHEMA:
            self.connection.execute(statement)

    def append(self, session_id: str, content: str, role: str = "user") -> None:
        """One message: one INSERT and one COMMIT (fsynced)."""
        connection = self.connection
        connection.execute("BEGIN")
        connection.execute(FLOOR_INSERT, (session_id, message_data(role, content)))
        connection.execute("COMMIT")

    def bulk(self, rows: Sequence[tuple[str, str]]) -> None:
        """Many ``(session_id, content)`` messages in one transaction."""
        connection = self.connection
        connection.execute("BEGIN")
        connection.executemany(
            FLOOR_INSERT, [(sid, message_data("user", text)) for sid, text in rows]
        )
        connection.execute("COMMIT")

    def latest(self, session_id: str, limit: int = 50) -> list[Any]:
        """The latest ``limit`` messages, newest first."""
        return self.connection.execute(FLOOR_LATEST, (session_id, limit)).fetchall()

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def connect_floor(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """An autocommit connection in WAL mode with the given ``synchronous``."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA busy_timeout=60000")
    return connection


def database_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """Bytes of a SQLite file after a truncating checkpoint (page_count *
    page_size), and the bytes of each table and index (from ``dbstat``)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        try:
            rows = connection.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
            parts = {str(name): int(size) for name, size in rows}
        except sqlite3.OperationalError:
            parts = {}
        return int(pages) * int(page_size), parts
    finally:
        connection.close()


# --- results


@dataclass
class Result:
    """One line of the final table."""

    figure: str
    title: str
    measured: float
    floor: float
    unit: str
    ratio: float
    target: str  # e.g. ">= 0.6", "<= 2.0", or "" for a reference line
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the target (``None`` for a reference line)."""
        if not self.target:
            return None
        operator, value = self.target.split()
        bound = float(value)
        return self.ratio >= bound if operator == ">=" else self.ratio <= bound

    @property
    def verdict(self) -> str:
        """MET, NOT MET, or ref."""
        met = self.met
        if met is None:
            return "ref"
        return "MET" if met else "NOT MET"


def paired_ratio(measured: Sequence[float], floor: Sequence[float]) -> float:
    """The median of the per-round ratios (each round's subject over the floor
    measured next to it): steadier than the ratio of medians when the load on
    the machine drifts during the run."""
    return median([m / f for m, f in zip(measured, floor, strict=True) if f])


def ratio_of(measured: float, floor: float) -> float:
    """``measured / floor`` (inf when the floor is zero)."""
    return measured / floor if floor else float("inf")


def show(value: float, unit: str) -> str:
    """A value with its unit, readable."""
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.0f} us"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit == "B":
        if value >= 2**20:
            return f"{value / 2**20:.1f} MiB"
        return f"{value:.0f} B"
    if unit == "B/msg":
        return f"{value:.0f} B/msg"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    return f"{value:.3g} {unit}"


def print_table(results: Sequence[Result]) -> None:
    """The final table: figure, measured, floor, ratio, target, verdict."""
    header = (
        "fig",
        "what",
        "measured (median)",
        "floor (median)",
        "ratio",
        "target",
        "",
    )
    rows = [
        (
            r.figure,
            r.title,
            show(r.measured, r.unit),
            show(r.floor, r.unit),
            f"{r.ratio:.2f}x",
            r.target or "-",
            r.verdict,
        )
        for r in results
    ]
    widths = [
        max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))

    say()
    say(line(header))
    say(line(["-" * w for w in widths]))
    for row in rows:
        say(line(row))
    notes = [(r.figure, note) for r in results for note in r.notes]
    if notes:
        say()
        for figure, note in notes:
            say(f"  [{figure}] {note}")
    targets = [r for r in results if r.met is not None]
    met = sum(1 for r in targets if r.met)
    say()
    say(f"{met} of {len(targets)} targets met")


def main(
    run: Callable[[Options], list[Result]],
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Run one benchmark module from the command line and print its table."""
    options = parse_options(description, argv)
    say(describe_machine())
    say(describe_disk(options))
    results = run(options)
    print_table(results)
    return 0


def runtime_settings(db: Path, **changes: Any) -> Any:
    """sessiond settings for a benchmark database (defaults otherwise)."""
    from runtime.settings import Settings

    return Settings(db=str(db), **changes)


# --- bulk building


def bulk_append(
    runtime: Any,
    session_ids: Sequence[str],
    per_session: int,
    pool: MessagePool,
    *,
    per_save: int = 20,
    sessions_per_transaction: int = 50,
) -> None:
    """Append ``per_session`` messages to each session quickly and honestly.

    The messages are the same ``MessageAppended`` events ``Runtime.append`` records
    (same aggregate command, same mapper, same view rows), saved through the
    runtime's own application, but many per transaction: each round appends
    ``per_save`` messages to each of ``sessions_per_transaction`` sessions in
    memory and saves them together. Snapshots are taken where the actor would take
    them (whenever a session's version crosses a multiple of the snapshot
    interval), written in bulk. The sessions' actors are passivated first, so no
    live actor holds stale state.
    """
    from aggregates.session import Session

    app = runtime.app
    interval = runtime.settings.snapshot_interval
    clock = runtime.clock
    for session_id in session_ids:
        runtime.directory.passivate(session_id)
    for start in range(0, len(session_ids), sessions_per_transaction):
        group = [
            app.repository.get(sid)
            for sid in session_ids[start : start + sessions_per_transaction]
        ]
        remaining = per_session
        while remaining > 0:
            step = min(per_save, remaining)
            remaining -= step
            before = [s.version for s in group]
            now = clock.now()
            for session in group:
                for _ in range(step):
                    session.append_message(
                        timestamp=now,
                        message_id=uuid.uuid4().hex,  # as Runtime.append makes them
                        role="user",
                        content=pool.next(),
                        author_id="local",
                    )
            app.save(*group)
            snapshots = [
                Session.Snapshot.take(session)
                for session, version in zip(group, before, strict=True)
                if interval and session.version // interval > version // interval
            ]
            if snapshots:
                app.snapshots.put(snapshots)
