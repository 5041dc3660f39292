"""Golden logs replay deterministically (reliability.md T09).

Every ``tests/golden/v*/*.jsonl`` was recorded from a released event schema
(``python -m tests.golden.record vN``) and is never rewritten. Today's code must
fold each to the recorded state digest, twice alike, and a snapshot taken at
any offset plus the log's tail must fold to the same state as the whole log.
Every event must still read as the API's documents. Together the logs hold every
event class ``Session`` has, so a new class needs a new recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregates.session import Session
from projections.codec import MESSAGE_TOPIC, decode_state
from projections.documents import event_document, message_document
from tests.golden.fold import (
    GOLDEN,
    canonical,
    digest,
    event_topics,
    fold,
    mapper,
    read_log,
)

LOGS = sorted(GOLDEN.glob("v*/*.jsonl"))


def test_there_are_golden_logs() -> None:
    assert LOGS, "no golden logs: run python -m tests.golden.record v1"


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_golden_log_folds_to_its_recorded_state(log: Path) -> None:
    events = read_log(log)
    recorded = log.with_suffix(".digest").read_text().strip()

    assert digest(fold(events)) == recorded
    assert digest(fold(events)) == recorded  # and again, alike


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_snapshot_and_the_tail_fold_to_the_whole_log(log: Path) -> None:
    events = read_log(log)
    whole = canonical(fold(events))
    convert = mapper()
    for cut in range(1, len(events)):
        taken = Session.Snapshot.take(fold(events[:cut]))
        stored = convert.to_stored_event(taken)
        snapshot = convert.to_domain_event(stored)
        restored = snapshot.mutate(None)
        assert canonical(fold(events[cut:], start=restored)) == whole, cut


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_golden_event_reads_as_documents(log: Path) -> None:
    for stored in read_log(log):
        state = decode_state(stored.state)
        document = event_document(stored.originator_version, stored.topic, state)
        assert document["offset"] == stored.originator_version
        if stored.topic == MESSAGE_TOPIC:
            message = message_document(
                str(stored.originator_id), stored.originator_version, state
            )
            assert message["offset"] == stored.originator_version


def test_the_golden_logs_hold_every_event_class() -> None:
    recorded = {stored.topic for log in LOGS for stored in read_log(log)}
    topics = event_topics()
    assert {"s.open", "s.msg", "s.turn_end"} <= topics  # the scan finds them

    missing = sorted(topics - recorded)
    assert not missing, f"record a new golden log version: {missing} never recorded"
