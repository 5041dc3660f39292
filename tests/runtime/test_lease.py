"""The supervisor lease on a real SQLite file, with fake clocks: one holder at a
time, renewal, take-over only after expiry, release on stop, and the holder
stepping down before the store lets anyone else in (issue 7, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.sqlite import SQLiteDatastore

from runtime import FakeClock
from runtime.lease import LeaseKeeper
from runtime.sqlite_cluster import SQLiteLeaseStore

TTL = 5.0


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SQLiteLeaseStore, SQLiteLeaseStore]]:
    """Two lease stores on one file, each with its own connections (as two
    processes have)."""
    path = str(tmp_path / "lease.db")
    datastores = [SQLiteDatastore(path), SQLiteDatastore(path)]
    made = tuple(SQLiteLeaseStore(d) for d in datastores)
    made[0].create_table()
    yield made[0], made[1]
    for datastore in datastores:
        datastore.close()


def keeper(store: SQLiteLeaseStore, clock: FakeClock, holder: str) -> LeaseKeeper:
    return LeaseKeeper(store, clock, holder=holder, ttl=TTL, renew_every=1.0)


def test_the_first_to_try_holds_the_lease_and_the_second_does_not(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    assert a.renew_once() is True
    assert b.renew_once() is False
    assert a.held()
    assert not b.held()
    assert stores[1].current("supervisor") == ("a", 1_767_225_600_000 + 5000)


def test_renewing_keeps_the_lease_past_its_first_expiry(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    for _ in range(10):
        clock.advance(1.0)
        assert a.renew_once()
        assert a.held()
        assert not b.renew_once()


def test_another_process_takes_over_only_once_the_holders_lease_expired(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    clock.advance(TTL - 0.001)  # a died: no more renewals
    assert not b.renew_once()
    clock.advance(0.001)
    assert b.renew_once()
    assert b.held()
    # The old holder, were it only paused, finds it lost the lease.
    assert not a.renew_once()
    assert not a.held()


def test_a_holder_steps_down_before_the_store_would_let_another_in(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    clock.advance(TTL - 1.0)  # renewals stalled: a stops acting first
    assert not a.held()
    assert not b.renew_once()  # and nobody else acts yet either


def test_stopping_releases_the_lease_for_an_immediate_take_over(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    a.stop()
    assert not a.held()
    assert b.renew_once()


def test_a_new_holder_is_announced_once(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    announced: list[str] = []
    a = LeaseKeeper(
        stores[0],
        clock,
        holder="a",
        ttl=TTL,
        renew_every=1.0,
        on_acquired=lambda: announced.append("a"),
    )
    a.renew_once()
    a.renew_once()
    assert announced == ["a"]
    assert a.acquisitions == 1


def test_a_lease_renewed_as_often_as_it_expires_is_refused(
    stores: tuple[SQLiteLeaseStore, SQLiteLeaseStore], clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="renewed more often"):
        LeaseKeeper(stores[0], clock, holder="a", ttl=1.0, renew_every=1.0)
