"""Request keys (the durable ``Idempotency-Key`` records of writes other than
messages): claimed before the write, completed with its response or released on
failure; shared by every runtime on the database; a claim never completed lapses."""

from __future__ import annotations

import pytest

from runtime import FakeClock, InvalidRequestError, Principal, Runtime
from tests.conftest import RuntimeFactory
from tests.support.database import query

ALICE = Principal("alice")
BOB = Principal("bob")
PRINT = b"\x01" * 32
OTHER_PRINT = b"\x02" * 32


def test_a_claimed_key_is_busy_until_completed_then_replays(runtime: Runtime) -> None:
    assert runtime.claim_request("k", PRINT, principal=ALICE).outcome == "run"
    assert runtime.claim_request("k", PRINT, principal=ALICE).outcome == "busy"

    runtime.complete_request("k", 201, b'{"location":"/x"}', b"body", principal=ALICE)

    claim = runtime.claim_request("k", PRINT, principal=ALICE)
    assert (claim.outcome, claim.status, claim.headers, claim.body) == (
        "replay",
        201,
        b'{"location":"/x"}',
        b"body",
    )


def test_the_same_key_for_another_request_is_refused(runtime: Runtime) -> None:
    assert runtime.claim_request("k", PRINT).outcome == "run"
    assert runtime.claim_request("k", OTHER_PRINT).outcome == "reused"
    runtime.complete_request("k", 200, b"{}", b"")
    assert runtime.claim_request("k", OTHER_PRINT).outcome == "reused"


def test_a_released_key_runs_again(runtime: Runtime) -> None:
    assert runtime.claim_request("k", PRINT).outcome == "run"
    runtime.release_request("k")
    assert runtime.claim_request("k", PRINT).outcome == "run"


def test_keys_belong_to_their_principal(runtime: Runtime) -> None:
    assert runtime.claim_request("k", PRINT, principal=ALICE).outcome == "run"
    runtime.complete_request("k", 200, b"{}", b"alice's", principal=ALICE)
    assert runtime.claim_request("k", OTHER_PRINT, principal=BOB).outcome == "run"


def test_another_runtime_on_the_database_sees_the_key(
    runtime_factory: RuntimeFactory,
) -> None:
    first = runtime_factory(supervisor_interval=0)
    second = runtime_factory(supervisor_interval=0)
    assert first.claim_request("k", PRINT).outcome == "run"
    assert second.claim_request("k", PRINT).outcome == "busy"
    first.complete_request("k", 201, b"{}", b"first")
    claim = second.claim_request("k", PRINT)
    assert (claim.outcome, claim.body) == ("replay", b"first")


def test_a_claim_never_completed_lapses_and_is_taken_over_once(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    first = runtime_factory(lease_clock=clock, request_claim_seconds=60)
    second = runtime_factory(lease_clock=clock, request_claim_seconds=60)
    assert first.claim_request("k", PRINT).outcome == "run"  # then its process died
    clock.advance(59)
    assert second.claim_request("k", PRINT).outcome == "busy"
    clock.advance(2)
    assert second.claim_request("k", PRINT).outcome == "run"
    assert first.claim_request("k", PRINT).outcome == "busy"  # taken: renewed


def test_keys_are_dropped_after_their_retention(
    runtime_factory: RuntimeFactory, clock: FakeClock
) -> None:
    runtime = runtime_factory(lease_clock=clock, request_key_hours=1)
    runtime.claim_request("old", PRINT)
    runtime.complete_request("old", 200, b"{}", b"")
    clock.advance(3600 + 120)  # past the retention and the pruning interval
    assert runtime.claim_request("new", PRINT).outcome == "run"
    assert query(runtime.settings.db, "SELECT request_key FROM request_keys") == [
        ("new",)
    ]
    assert runtime.claim_request("old", PRINT).outcome == "run"  # a new request


def test_a_claim_needs_a_key_and_a_fingerprint(runtime: Runtime) -> None:
    with pytest.raises(InvalidRequestError):
        runtime.claim_request("", PRINT)
    with pytest.raises(InvalidRequestError):
        runtime.claim_request("k", "not bytes")  # type: ignore[arg-type]
