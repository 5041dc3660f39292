"""The supervisor lease on a real store (a SQLite file, a PostgreSQL database),
with fake clocks: one holder at a time, renewal, take-over only after expiry,
release on stop, and the holder stepping down before the store lets anyone else
in (issue 7, item 3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from eventsourcing.persistence import InfrastructureFactory

from runtime import FakeClock
from runtime.lease import LeaseKeeper, LeaseStore
from runtime.persistence import SessionStoreFactory, eventsourcing_env
from tests.conftest import settings_for

TTL = 5.0

Stores = tuple[LeaseStore, LeaseStore]


@pytest.fixture
def stores(db: str) -> Iterator[Stores]:
    """Two lease stores on one database, each with its own connections (as two
    processes have)."""
    factories: list[Any] = [
        InfrastructureFactory.construct(eventsourcing_env(settings_for(db)))
        for _ in range(2)
    ]
    made = [cast("SessionStoreFactory", f).lease_store() for f in factories]
    yield made[0], made[1]
    for factory in factories:
        factory.close()


def keeper(store: LeaseStore, clock: FakeClock, holder: str) -> LeaseKeeper:
    return LeaseKeeper(store, clock, holder=holder, ttl=TTL, renew_every=1.0)


def test_the_first_to_try_holds_the_lease_and_the_second_does_not(
    stores: Stores, clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    assert a.renew_once() is True
    assert b.renew_once() is False
    assert a.held()
    assert not b.held()
    assert stores[1].current("supervisor") == ("a", 1_767_225_600_000 + 5000)


def test_renewing_keeps_the_lease_past_its_first_expiry(
    stores: Stores, clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    for _ in range(10):
        clock.advance(1.0)
        assert a.renew_once()
        assert a.held()
        assert not b.renew_once()


def test_another_process_takes_over_only_once_the_holders_lease_expired(
    stores: Stores, clock: FakeClock
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
    stores: Stores, clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    clock.advance(TTL - 1.0)  # renewals stalled: a stops acting first
    assert not a.held()
    assert not b.renew_once()  # and nobody else acts yet either


def test_stopping_releases_the_lease_for_an_immediate_take_over(
    stores: Stores, clock: FakeClock
) -> None:
    a, b = keeper(stores[0], clock, "a"), keeper(stores[1], clock, "b")
    a.renew_once()
    a.stop()
    assert not a.held()
    assert b.renew_once()


def test_a_new_holder_is_announced_once(stores: Stores, clock: FakeClock) -> None:
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
    stores: Stores, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="renewed more often"):
        LeaseKeeper(stores[0], clock, holder="a", ttl=1.0, renew_every=1.0)


def test_holders_racing_for_a_free_lease_get_it_once(
    stores: Stores, clock: FakeClock
) -> None:
    now_ms = int(clock.now().timestamp() * 1000)
    barrier = threading.Barrier(8)

    def race(n: int) -> bool:
        barrier.wait(10)
        return stores[n % 2].try_acquire("race", f"h{n}", now_ms, 5000)

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(race, range(8)))
    assert won.count(True) == 1
    winner = f"h{won.index(True)}"
    assert stores[0].current("race") == (winner, now_ms + 5000)
