"""What the PostgreSQL store offers beyond the shared contract: the seams other
processes build on (notifications in commit order, LISTEN/NOTIFY), schema
creation by several processes at once, and its settings."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime import Runtime, Settings
from runtime.persistence import eventsourcing_env
from tests.conftest import DatabaseFactory, RuntimeFactory, settings_for

WAIT = 20.0


@pytest.mark.postgres_only  # SQLite's recorder has no subscriptions
def test_a_write_through_one_runtime_wakes_a_subscription_of_another(
    runtime_factory: RuntimeFactory,
) -> None:
    writer, reader = runtime_factory(), runtime_factory()
    session_id = writer.create()["id"]
    start = reader.app.recorder.max_notification_id() or 0
    with reader.app.recorder.subscribe(gt=start) as subscription:
        writer.append(session_id, "hello from the other node")
        seen = next(iter(subscription))
    assert seen.id == start + 1
    assert str(seen.originator_id) == session_id
    assert seen.originator_version == 2


@pytest.mark.postgres_only  # notification ids in commit order: eventsourcing's lock
def test_notification_ids_of_concurrent_writers_are_gapless_and_in_commit_order(
    runtime_factory: RuntimeFactory,
) -> None:
    first, second = runtime_factory(), runtime_factory()
    ids = [first.create()["id"] for _ in range(4)] + [
        second.create()["id"] for _ in range(4)
    ]
    barrier = threading.Barrier(len(ids))

    def write(index: int) -> None:
        runtime = first if index < 4 else second
        barrier.wait(WAIT)
        for n in range(10):
            runtime.append(ids[index], f"m{n}")

    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(write, range(len(ids))))
    notifications = first.app.recorder.select_notifications(start=1, limit=1000)
    assert [n.id for n in notifications] == list(range(1, len(notifications) + 1))
    assert len(notifications) == 8 + 8 * 10
    assert first.views.position() == second.views.position() == notifications[-1].id


@pytest.mark.postgres_only  # the advisory lock that serialises schema creation
def test_processes_starting_together_on_a_fresh_database_create_the_schema_once(
    database_factory: DatabaseFactory,
) -> None:
    db = database_factory()
    barrier = threading.Barrier(4)

    def start(_: int) -> str:
        barrier.wait(WAIT)
        with Runtime(settings_for(db, supervisor_interval=0)) as runtime:
            return str(runtime.create()["id"])

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(start, range(4)))
    with Runtime(settings_for(db, supervisor_interval=0)) as runtime:
        assert sorted(runtime.views.session_ids()) == sorted(made)


def test_the_dsn_and_pool_settings_become_eventsourcings_environment() -> None:
    env = eventsourcing_env(
        Settings(
            db="postgresql://app:s3cret@db.example:6543/sessions?sslmode=require",
            postgres_pool_size=3,
            postgres_max_overflow=7,
        )
    )
    assert env["POSTGRES_DBNAME"] == "sessions"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.example", "6543")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("app", "s3cret")
    assert (env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"]) == ("3", "7")
    assert env["POSTGRES_EXTRA_CONNINFO"] == "sslmode=require"


@pytest.mark.parametrize(
    ("dsn", "changes"),
    [
        ("postgresql://host/", {}),
        ("postgresql://host/db?nonsense=1", {}),
        ("postgresql://host/db", {"postgres_pool_size": 0}),
    ],
)
def test_a_bad_dsn_or_pool_size_is_refused_with_a_clear_error(
    dsn: str, changes: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match=r"DSN|database|pool"):
        eventsourcing_env(Settings(db=dsn, **changes))
