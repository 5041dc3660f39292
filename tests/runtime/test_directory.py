"""The actor directory: exactly one live actor per session, passivation that races
with commands safely, and actors that a storage error stops being rebuilt from
the log by the next command (reliability.md T04, T08)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka
import pytest
from eventsourcing.persistence import OperationalError

from runtime import Runtime, SessionNotFoundError, StorageUnavailableError
from runtime.actor import SessionActor
from tests.conftest import RuntimeFactory
from tests.support.database import write_lock_held

WAIT = 10.0
"""Seconds any single wait in these tests may take before it counts as a hang."""


def live_actors(session_id: str) -> list[pykka.ActorRef[Any]]:
    """The registered (running) session actors of one session."""
    found = []
    for ref in pykka.ActorRegistry.get_by_class(SessionActor):
        actor = ref._actor_weakref()  # which session it serves
        if actor is not None and actor.session_id == session_id:
            found.append(ref)
    return found


class ActorCensus:
    """Counts, per session, the actors between ``on_start`` and ``on_stop``.

    The directory promises a successor starts only after its predecessor's
    ``on_stop`` ran, so at most one actor per session is ever inside that window.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self.live: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.started = 0
        census = self
        on_start = SessionActor.on_start
        on_stop = SessionActor.on_stop

        def counted_start(actor: SessionActor) -> None:
            with census._lock:
                count = census.live.get(actor.session_id, 0) + 1
                census.live[actor.session_id] = count
                census.most[actor.session_id] = max(
                    count, census.most.get(actor.session_id, 0)
                )
                census.started += 1
            on_start(actor)

        def counted_stop(actor: SessionActor) -> None:
            with census._lock:
                census.live[actor.session_id] -= 1
            on_stop(actor)

        monkeypatch.setattr(SessionActor, "on_start", counted_start)
        monkeypatch.setattr(SessionActor, "on_stop", counted_stop)


def contents(runtime: Runtime, session_id: str) -> list[str]:
    return [m["content"] for m in runtime.messages(session_id)]


def offsets_of_log(runtime: Runtime, session_id: str) -> list[int]:
    events = runtime.events(session_id, limit=1000)
    assert not events["has_more"]
    return [e["offset"] for e in events["events"]]


# --- get-or-start


def test_thirty_two_threads_asking_for_one_session_at_once_share_one_actor(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    barrier = threading.Barrier(32)

    def ask() -> pykka.ActorRef[Any]:
        barrier.wait(WAIT)
        return runtime.directory.get_or_start(session_id).actor_ref

    with ThreadPoolExecutor(32) as pool:
        refs = [f.result(WAIT) for f in [pool.submit(ask) for _ in range(32)]]

    assert len({ref.actor_urn for ref in refs}) == 1
    assert [ref.actor_urn for ref in live_actors(session_id)] == [refs[0].actor_urn]
    assert runtime.directory.live_count() == 1
    assert runtime.directory.stats.activations == 1


def test_many_threads_starting_many_sessions_at_once_get_one_actor_each(
    runtime: Runtime,
) -> None:
    ids = [runtime.create()["id"] for _ in range(8)]
    barrier = threading.Barrier(32)

    def ask(n: int) -> tuple[str, str]:
        session_id = ids[n % len(ids)]
        barrier.wait(WAIT)
        return session_id, runtime.directory.get_or_start(
            session_id
        ).actor_ref.actor_urn

    with ThreadPoolExecutor(32) as pool:
        answers = [f.result(WAIT) for f in [pool.submit(ask, n) for n in range(32)]]

    for session_id in ids:
        urns = {urn for sid, urn in answers if sid == session_id}
        assert len(urns) == 1
        assert [ref.actor_urn for ref in live_actors(session_id)] == list(urns)
    assert runtime.directory.live_count() == len(ids)


# --- passivation


def test_passivating_a_session_while_it_is_written_loses_nothing_nor_doubles_actors(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    census = ActorCensus(monkeypatch)
    session_id = runtime.create()["id"]
    writers, wanted_appends, wanted_passivations = 4, 200, 20
    deadline = time.monotonic() + 20
    acknowledged: list[tuple[int, str]] = []  # list.append is atomic
    passivated = 0
    most_registered = 0
    all_written = threading.Event()
    writers_done = threading.Barrier(writers, action=all_written.set)

    def write(w: int) -> list[int]:
        offsets = []
        try:
            n = 0
            while (
                len(acknowledged) < wanted_appends or passivated < wanted_passivations
            ) and time.monotonic() < deadline:
                # Several writers keep commands queued on the actor being stopped.
                message = runtime.append(session_id, f"w{w}-m{n}")
                acknowledged.append((message["offset"], message["content"]))
                offsets.append(message["offset"])
                n += 1
        finally:
            writers_done.wait(WAIT)
        return offsets

    def passivate() -> None:
        nonlocal passivated, most_registered
        while not all_written.is_set() and time.monotonic() < deadline:
            if runtime.directory.passivate(session_id):
                passivated += 1
            most_registered = max(most_registered, len(live_actors(session_id)))

    with ThreadPoolExecutor(writers + 1) as pool:
        passivator = pool.submit(passivate)
        futures = [pool.submit(write, w) for w in range(writers)]
        # An ActorDeadError (or any other error) would surface here.
        per_writer = [f.result(30) for f in futures]
        passivator.result(30)

    assert passivated >= wanted_passivations, "the race was not exercised"
    n = len(acknowledged)
    assert n >= wanted_appends
    assert sorted(offset for offset, _ in acknowledged) == list(range(2, n + 2))
    for offsets in per_writer:
        assert offsets == sorted(offsets)
    messages = runtime.messages(session_id)
    assert [(m["offset"], m["content"]) for m in messages] == sorted(acknowledged)
    assert offsets_of_log(runtime, session_id) == list(range(1, n + 2))
    assert census.most[session_id] == 1
    assert most_registered <= 1
    assert len(live_actors(session_id)) <= 1


def test_the_live_actor_cap_evicts_under_load_without_losing_or_doubling_anything(
    runtime_factory: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    census = ActorCensus(monkeypatch)
    cap, sessions, each = 4, 16, 20
    runtime = runtime_factory(max_live_actors=cap)
    ids = [runtime.create()["id"] for _ in range(sessions)]
    barrier = threading.Barrier(sessions)

    def write(session_id: str) -> list[int]:
        barrier.wait(WAIT)
        return [runtime.append(session_id, f"m{n}")["offset"] for n in range(each)]

    with ThreadPoolExecutor(sessions) as pool:
        futures = {sid: pool.submit(write, sid) for sid in ids}
        acknowledged = {sid: f.result(WAIT * 3) for sid, f in futures.items()}

    for session_id in ids:
        assert acknowledged[session_id] == list(range(2, each + 2))
        assert contents(runtime, session_id) == [f"m{n}" for n in range(each)]
        assert census.most[session_id] == 1
    assert runtime.directory.stats.passivations > 0, "the cap never evicted"
    assert runtime.directory.live_count() <= cap
    assert len(pykka.ActorRegistry.get_by_class(SessionActor)) <= cap


def test_a_passivated_session_is_rebuilt_from_snapshot_and_tail_on_its_next_command(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = runtime_factory(snapshot_interval=4)
    session_id = runtime.create()["id"]
    for n in range(10):
        runtime.append(session_id, f"m{n}")
    checkpoint = runtime.checkpoint_save(session_id, "ten")
    assert runtime.directory.passivate(session_id)
    assert live_actors(session_id) == []
    assert runtime.directory.live_count() == 0

    # The next command (a read from the actor's state) rehydrates the session.
    assert [c["id"] for c in runtime.checkpoints(session_id)] == [checkpoint["id"]]
    assert runtime.append(session_id, "m10")["offset"] == 13
    assert contents(runtime, session_id) == [f"m{n}" for n in range(11)]
    assert runtime.directory.stats.activations == 2


# --- storage failure


def test_a_storage_error_stops_the_actor_and_the_next_command_rebuilds_it_from_the_log(
    runtime_factory: RuntimeFactory, db: str
) -> None:
    runtime = runtime_factory(sqlite_lock_timeout=1, postgres_lock_timeout=1)
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    runtime.append(session_id, "b")
    entry = runtime.directory._entries[session_id]  # to await its stop
    failed_ref = entry.ref

    with write_lock_held(db), pytest.raises(StorageUnavailableError) as failure:
        runtime.append(session_id, "c")
    assert failure.value.code == "storage_unavailable"

    # The failed actor stops and leaves the directory.
    assert entry.stopped.wait(WAIT)
    assert not failed_ref.is_alive()
    assert live_actors(session_id) == []
    assert runtime.directory.live_count() == 0

    # The cause is gone: the next command gets a fresh actor rebuilt from the log.
    message = runtime.append(session_id, "d")
    [successor] = live_actors(session_id)
    assert successor.actor_urn != failed_ref.actor_urn
    shown = contents(runtime, session_id)
    # "c" had an unknown outcome (here it could not land); acknowledged writes
    # are all there, once, in order.
    assert shown in (["a", "b", "d"], ["a", "b", "c", "d"])
    assert message["offset"] == len(shown) + 1
    assert offsets_of_log(runtime, session_id) == list(range(1, len(shown) + 2))
    assert runtime.get(session_id)["message_count"] == len(shown)


def test_a_storage_error_while_activating_stops_the_actor_and_the_next_command_retries(
    runtime_factory: RuntimeFactory, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_factory()
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    assert runtime.directory.passivate(session_id)

    # Reading the log fails once, as eventsourcing reports a sqlite3 error.
    repository = runtime.app.repository
    real_get = repository.get
    failures = iter([OperationalError("disk I/O error")])

    def flaky_get(*args: Any, **kwargs: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return real_get(*args, **kwargs)

    monkeypatch.setattr(repository, "get", flaky_get)
    with pytest.raises(StorageUnavailableError):
        runtime.append(session_id, "b")
    assert runtime.append(session_id, "c")["offset"] == 3
    assert contents(runtime, session_id) == ["a", "c"]


def test_a_command_sent_while_a_failed_actor_is_stopping_goes_to_its_successor(
    runtime_factory: RuntimeFactory, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between pykka marking a failed actor dead and its ``on_stop``
    telling the directory: a command arriving then must wait for the successor,
    not spin into "kept restarting"."""
    runtime = runtime_factory(sqlite_lock_timeout=1, postgres_lock_timeout=1)
    session_id = runtime.create()["id"]
    runtime.append(session_id, "a")
    failed_ref = runtime.directory.get_or_start(session_id).actor_ref

    # Hold the failed actor inside that window until the next command has come
    # back to the directory for a live actor.
    release = threading.Event()
    on_stop = SessionActor.on_stop

    def held_on_stop(actor: SessionActor) -> None:
        release.wait(WAIT)
        on_stop(actor)

    monkeypatch.setattr(SessionActor, "on_stop", held_on_stop)
    get_or_start: Callable[..., Any] = runtime.directory.get_or_start
    calls: list[str] = []

    def watched_get_or_start(sid: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(sid)
        if len(calls) >= 2:
            release.set()
        return get_or_start(sid, *args, **kwargs)

    monkeypatch.setattr(runtime.directory, "get_or_start", watched_get_or_start)

    with write_lock_held(db), pytest.raises(StorageUnavailableError):
        runtime.append(session_id, "b")
    assert failed_ref.actor_stopped.wait(WAIT)  # dead, its on_stop held

    message = runtime.append(session_id, "c")

    assert release.is_set()
    assert contents(runtime, session_id)[-1] == "c"
    assert message["offset"] == runtime.get(session_id)["offset"]
    [successor] = live_actors(session_id)
    assert successor.actor_urn != failed_ref.actor_urn


# --- commands lent to the caller's thread


def hold_command(
    entered: threading.Event, release: threading.Event, ran: list[str], name: str
) -> Callable[[Any], None]:
    """A command that notes where it runs, then waits for ``release`` and sets
    the attribute ``name`` (so a test can hold it mid-command)."""

    def command(session: Any) -> None:
        ran.append(f"{name}:{threading.current_thread().name}")
        entered.set()
        assert release.wait(WAIT)
        session.patch_attributes(timestamp=session.updated_at, patch={name: True})

    return command


def test_an_idle_actor_runs_a_command_on_the_callers_thread(runtime: Runtime) -> None:
    session_id = runtime.create()["id"]
    threads: list[threading.Thread] = []

    runtime._execute(
        session_id, lambda session: threads.append(threading.current_thread())
    )

    assert threads == [threading.current_thread()]
    assert runtime.directory.live_count() == 1


def test_a_command_for_a_busy_session_waits_in_the_mailbox_and_runs_after(
    runtime: Runtime,
) -> None:
    session_id = runtime.create()["id"]
    entered, release, ran = threading.Event(), threading.Event(), []
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            runtime._execute, session_id, hold_command(entered, release, ran, "a")
        )
        assert entered.wait(WAIT)
        second = pool.submit(
            runtime._execute,
            session_id,
            lambda session: ran.append(f"b:{threading.current_thread().name}"),
        )
        time.sleep(0.2)  # the second command is queued, not running
        assert [r.split(":")[0] for r in ran] == ["a"]
        release.set()
        first.result(WAIT)
        second.result(WAIT)

    assert [r.split(":")[0] for r in ran] == ["a", "b"]
    assert ran[1].split(":")[1].startswith("SessionActor")  # ran on the actor


def test_stopping_an_actor_waits_for_the_command_lent_to_a_caller(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    census = ActorCensus(monkeypatch)
    session_id = runtime.create()["id"]
    offset = runtime.get(session_id)["offset"]
    entered, release, ran = threading.Event(), threading.Event(), []
    with ThreadPoolExecutor(2) as pool:
        lent = pool.submit(
            runtime._execute, session_id, hold_command(entered, release, ran, "a")
        )
        assert entered.wait(WAIT)
        assert runtime.directory.passivate(session_id, wait=False)
        later = pool.submit(runtime.patch_attributes, session_id, {"b": True})
        time.sleep(0.3)
        # The stop waits for the lent command; no successor starts meanwhile.
        assert not later.done()
        assert census.most.get(session_id, 0) <= 1
        release.set()
        lent.result(WAIT)
        later.result(WAIT)

    assert census.most[session_id] == 1
    assert runtime.get(session_id)["attributes"] == {"a": True, "b": True}
    assert runtime.get(session_id)["offset"] == offset + 2


def test_a_command_for_an_unknown_session_leaves_no_actor_behind(
    runtime: Runtime,
) -> None:
    with pytest.raises(SessionNotFoundError):
        runtime.append("no-such-session", "hello")

    deadline = time.monotonic() + WAIT
    while live_actors("no-such-session") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live_actors("no-such-session") == []
    assert runtime.directory.live_count() == 0
