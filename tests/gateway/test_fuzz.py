"""The OpenAPI document fuzzed against a real server (reliability T16):
schemathesis generates requests from ``/openapi.json``, valid and not, and every
answer must be no server error and conform to the document (status code,
content type, headers, body schema).

Fuzzing found, and these now guard: a fork into a taken session id corrupting
that session's log (500 on every later read), a message to a session reset
more than four times answering 503, and an idle reset of billions of minutes
overflowing to a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.server import ServerProcess

KEY = "fuzz-key-0123456789abcdef"
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (SQLite: the contract is the backend's business
    nowhere) with one API key."""
    where: Path = tmp_path_factory.mktemp("fuzz")
    process = ServerProcess(
        str(where / "sessiond.db"),
        log=where / "server.log",
        env={"SESSIOND_API_KEYS": f"alice:{KEY}"},
    )
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{fuzz_server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}
    )


@pytest.fixture(scope="module")
def session_id(fuzz_server: ServerProcess) -> str:
    """A session with messages and a checkpoint, for requests to reach past
    the not-found answer of random ids."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=fuzz_server.url, headers=headers) as http:
        sid = str(http.post("/v1/sessions", json={"agent_id": "echo"}).json()["id"])
        for text in ("one", "two", "three"):
            http.post(f"/v1/sessions/{sid}/messages", json={"content": text})
        http.post(f"/v1/sessions/{sid}/checkpoints", json={"name": "cp"})
    return sid


def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema, session_id: str
) -> None:
    # (schemathesis' pytest integration does not run on pytest 9: each
    # operation gets its hypothesis runs here instead)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 25
    for operation in operations:
        for mode in GenerationMode:
            negative = mode is GenerationMode.NEGATIVE
            fuzz(operation.as_strategy(mode), negative=negative)
            if "{id}" in operation.path:
                ours = operation.as_strategy(mode, path_parameters={"id": session_id})
                fuzz(ours, negative=negative)


def fuzz(strategy: SearchStrategy[schemathesis.Case], *, negative: bool) -> None:
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        if case.path.endswith("/messages") and isinstance(case.body, dict):
            # A blocking message with a timeout shorter than any turn answers
            # 504 ``timeout`` by design: the caller's deadline, not a fault.
            case.body.pop("timeout", None)
        case.call_and_validate(
            headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS
        )

    try:
        answers_as_documented()
    except hypothesis.errors.Unsatisfiable:
        # A negative strategy for an operation with nothing to get wrong
        # (no parameters, no body) draws nothing.
        if not negative:
            raise
