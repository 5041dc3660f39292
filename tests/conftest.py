"""Shared fixtures: runtimes on a real SQLite file in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from hypothesis import settings as hypothesis_settings

from runtime import FakeClock, Runtime, Settings

hypothesis_settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True
)
hypothesis_settings.register_profile("dev", max_examples=30, deadline=None)
hypothesis_settings.load_profile("ci")

RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh SQLite file path."""
    return str(tmp_path / "sessiond.db")


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when told to."""
    return FakeClock()


@pytest.fixture
def runtime_factory(db_path: str, clock: FakeClock) -> Iterator[RuntimeFactory]:
    """Builds runtimes on the test's SQLite file (all closed at teardown).

    Keyword arguments are ``Settings`` fields (``db`` defaults to the test's file,
    ``clock`` to the test's fake clock).
    """
    made: list[Runtime] = []

    def make(**changes: Any) -> Runtime:
        changes.setdefault("db", db_path)
        changes.setdefault("clock", clock)
        runtime = Runtime(Settings(**changes))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory) -> Runtime:
    """A runtime on a fresh SQLite file."""
    return runtime_factory()


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()
