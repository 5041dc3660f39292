"""The tool registry, the schema validator, the file tools' confinement to
``work_dir`` and the ``sessions_*`` tools' ownership rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime import AgentConfig, Principal, Runtime, ToolCall, ToolContext
from runtime.tools import SchemaError, ToolRegistry, builtin_registry, validate
from tests.support.agents import ScriptedAgent, calls, final

FILES = ("read_file", "list_files")


def context(runtime: Runtime, work_dir: Any, **fields: Any) -> ToolContext:
    return ToolContext(
        runtime=runtime,
        session_id="s",
        principal=Principal("alice"),
        agent_id="a",
        attributes={} if work_dir is None else {"work_dir": str(work_dir)},
        call_id="c",
        **fields,
    )


def call(registry: ToolRegistry, ctx: ToolContext, name: str, **arguments: Any) -> Any:
    outcome = registry.call(
        ToolCall("c", name, orjson.dumps(arguments).decode()), FILES, ctx
    )
    if outcome.status == "ok":
        return orjson.loads(outcome.content)
    return ("error", outcome.content)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("hello project\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "big.txt").write_text("x" * 300_000)
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "escape")
    os.symlink(tmp_path, root / "up")
    os.symlink(root / "README.md", root / "inside")
    return root


def test_read_file_reads_inside_work_dir_and_cuts_at_the_cap(
    runtime: Runtime, tree: Path
) -> None:
    registry, ctx = builtin_registry(), context(runtime, tree)
    found = call(registry, ctx, "read_file", path="README.md")
    assert found["content"] == "hello project\n"
    assert found["truncated"] is False
    assert call(registry, ctx, "read_file", path="./src/main.py")["size"] == 12
    assert (
        call(registry, ctx, "read_file", path="inside")["content"] == "hello project\n"
    )
    big = call(registry, ctx, "read_file", path="big.txt")
    assert len(big["content"]) == 64 * 1024
    assert big["truncated"] is True
    part = call(registry, ctx, "read_file", path="big.txt", offset=299_990, max_bytes=5)
    assert (part["content"], part["truncated"]) == ("xxxxx", True)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "relative"),
        ("../secret.txt", "'..'"),
        ("src/../../secret.txt", "'..'"),
        ("escape", "outside"),
        ("up/secret.txt", "outside"),
        ("~/x", "relative"),
        ("missing.txt", "no such file"),
        ("src", "not a regular file"),
    ],
)
def test_read_file_refuses_every_way_out_of_work_dir(
    runtime: Runtime, tree: Path, path: str, problem: str
) -> None:
    status, text = call(
        builtin_registry(), context(runtime, tree), "read_file", path=path
    )
    assert status == "error"
    assert problem in text
    assert "top secret" not in text


def test_list_files_lists_a_directory_without_following_symlinks(
    runtime: Runtime, tree: Path
) -> None:
    registry, ctx = builtin_registry(), context(runtime, tree)
    listed = call(registry, ctx, "list_files")
    kinds = {e["name"]: e["type"] for e in listed["entries"]}
    assert kinds == {
        "README.md": "file",
        "big.txt": "file",
        "escape": "symlink",
        "inside": "symlink",
        "src": "directory",
        "up": "symlink",
    }
    assert call(registry, ctx, "list_files", path="src")["entries"] == [
        {"name": "main.py", "type": "file", "size": 12}
    ]
    assert call(registry, ctx, "list_files", path="up")[0] == "error"
    assert call(registry, ctx, "list_files", path="..")[0] == "error"


def test_file_tools_need_a_work_dir_inside_the_work_root(
    runtime: Runtime, tree: Path, tmp_path: Path
) -> None:
    registry = builtin_registry()
    status, text = call(registry, context(runtime, None), "list_files")
    assert (status, text) == ("error", "the session has no work_dir attribute")
    other_root = tmp_path / "elsewhere"
    other_root.mkdir()
    ctx = context(runtime, tree, work_root=str(other_root))
    assert call(registry, ctx, "list_files")[1] == (
        "the session's work_dir is outside the server's work root"
    )
    assert call(registry, context(runtime, tree, work_root=str(tmp_path)), "list_files")


def test_the_schema_validator_reports_each_problem_by_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "mode": {"enum": ["a", "b"]},
            "name": {"type": ["string", "null"], "minLength": 2},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    assert validate({"n": 2, "tags": ["x"], "mode": "a", "name": None}, schema) == []
    assert validate({"n": 2.0}, schema) == []  # an integral number is an integer
    assert validate(
        {"n": 9, "tags": ["x", 1, "z"], "mode": "c", "name": "a", "more": 1}, schema
    ) == [
        "$.n: greater than 3",
        "$.tags: more than 2 items",
        "$.tags[1]: expected string, got integer",
        "$.mode: not one of the allowed values",
        "$.name: shorter than 2",
        "$: unexpected property 'more'",
    ]
    assert validate({}, schema) == ["$.n: required"]
    assert validate(True, {"type": "integer"}) == ["$: expected integer, got boolean"]


def test_a_tool_with_an_unsupported_schema_is_refused_at_registration() -> None:
    registry = ToolRegistry()
    with pytest.raises(SchemaError, match="pattern"):
        registry.register(
            "t",
            lambda a, c: None,
            description="d",
            parameters={"type": "object", "properties": {"s": {"pattern": "^a"}}},
        )
    with pytest.raises(ValueError, match="tool name"):
        registry.register("bad name", lambda a, c: None, description="d")
    assert registry.names() == []


def test_sessions_tools_act_only_as_the_calling_sessions_owner(
    runtime_factory: Any,
) -> None:
    runtime = runtime_factory()
    alice, bob = Principal("alice"), Principal("bob")
    bobs = runtime.create("echo", principal=bob, name="bob's")["id"]
    mine = runtime.create("echo", principal=alice, name="alice's other")["id"]
    agent = ScriptedAgent(
        [
            calls(
                ("l", "sessions_list", "{}"),
                ("e", "sessions_events", orjson.dumps({"session_id": bobs}).decode()),
                (
                    "m",
                    "sessions_message",
                    orjson.dumps(
                        {"session_id": mine, "content": "hi there", "mode": "sync"}
                    ).decode(),
                ),
                ("d", "sessions_delete", orjson.dumps({"session_id": bobs}).decode()),
            )
        ],
        [final("done")],
    )
    runtime.agents.register(
        "helper",
        agent,
        AgentConfig(
            id="helper",
            provider="python",
            tools=(
                "sessions_list",
                "sessions_events",
                "sessions_message",
                "sessions_delete",
            ),
        ),
    )
    sid = runtime.create("helper", principal=alice)["id"]

    result = runtime.send(sid, "look around", principal=alice)

    found = {c["id"]: c for c in result["tool_calls"]}
    listed = orjson.loads(found["l"]["result"])["sessions"]
    assert {s["session_id"] for s in listed} == {sid, mine}
    assert found["e"]["status"] == "error"
    assert found["e"]["result"].startswith("not_found")
    assert found["d"]["status"] == "error"
    assert runtime.get(bobs, principal=bob)["status"] == "active"
    sent = orjson.loads(found["m"]["result"])
    assert (sent["status"], sent["response"]) == ("completed", "hi there")
    assert [m["content"] for m in runtime.messages(mine, principal=alice)] == [
        "hi there",
        "hi there",
    ]


def test_an_agent_cannot_message_its_own_session(runtime: Runtime) -> None:
    agent = ScriptedAgent(
        [calls(("m", "sessions_message", '{"session_id": "SELF", "content": "x"}'))],
        [final("ok")],
    )
    runtime.agents.register(
        "self",
        agent,
        AgentConfig(id="self", provider="python", tools=("sessions_message",)),
    )
    sid = runtime.create("self", session_id="SELF")["id"]
    result = runtime.send(sid, "go")
    assert result["tool_calls"][0]["status"] == "error"
    assert "cannot message itself" in result["tool_calls"][0]["result"]
