"""The tool registry: Python callables an agent may call, by name, with a JSON
schema for their arguments.

A tool is ``function(arguments, context) -> result``: ``arguments`` is the
validated JSON object, ``context`` a :class:`ToolContext` (the session, its
principal, the runtime, the turn's cancellation). The result is text (a
``str``) or any JSON value (sent to the model as JSON text). Raising
:class:`ToolError` makes a result with status ``error`` whose text is the
error's message (meant for the model); any other exception also does, with only
its type named, since its message may hold what the model must not see.

:meth:`ToolRegistry.call` never raises for a bad call: an unknown tool, one the
agent may not use, arguments that are not JSON or do not match the schema all
become an ``error`` result, which the model sees and can correct.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from runtime.agents import ToolCall, ToolSpec
from runtime.tools.schema import check_schema, validate

if TYPE_CHECKING:
    from runtime.facade import Runtime
    from runtime.principal import Principal

logger = logging.getLogger(__name__)

RESULT_MAX_CHARS = 256 * 1024
"""Longer results are cut (and say so): a tool must not flood the history."""
NAME_PATTERN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
)

OK = "ok"
ERROR = "error"
IN_DOUBT = "in_doubt"


class ToolError(Exception):
    """Raised by a tool to fail with a message the model should read."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool knows of the call: the session it runs for, as whom, and the
    turn's cancellation (a long tool should check ``cancelled`` now and then)."""

    runtime: Runtime
    session_id: str
    principal: Principal
    agent_id: str
    attributes: Mapping[str, Any]
    call_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    work_root: str | None = None


ToolFunction = Callable[[dict[str, Any], ToolContext], Any]


@dataclass(frozen=True)
class Tool:
    """A registered tool: its spec (name, description, schema) and function."""

    spec: ToolSpec
    function: ToolFunction


@dataclass(frozen=True)
class ToolOutcome:
    """What one call produced: ``status`` ``ok`` or ``error``, the text the
    model reads, and how long it ran."""

    status: str
    content: str
    duration_ms: int = 0


def _cut(text: str) -> str:
    if len(text) <= RESULT_MAX_CHARS:
        return text
    return text[:RESULT_MAX_CHARS] + f"\n[cut at {RESULT_MAX_CHARS} characters]"


def render(result: Any) -> str:
    """A tool's return value as the text the model reads."""
    if isinstance(result, str):
        return _cut(result)
    try:
        return _cut(orjson.dumps(result).decode())
    except TypeError:
        return _cut(str(result))


class ToolRegistry:
    """The tools of one runtime, by name; thread-safe."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        function: ToolFunction,
        *,
        description: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> ToolSpec:
        """Add (or replace) a tool. ``parameters`` is its arguments' JSON schema
        (default: an object with no properties); an unsupported schema is refused
        (``SchemaError``)."""
        if not name or len(name) > 64 or not set(name) <= NAME_PATTERN_CHARS:
            msg = "a tool name is 1 to 64 letters, digits, '_' or '-'"
            raise ValueError(msg)
        schema = dict(parameters or {"type": "object", "properties": {}})
        check_schema(schema)
        if schema.get("type") != "object":
            msg = "a tool's parameters schema must be of type object"
            raise ValueError(msg)
        spec = ToolSpec(name=name, description=description, parameters=schema)
        with self._lock:
            self._tools[name] = Tool(spec=spec, function=function)
        return spec

    def names(self) -> list[str]:
        """Every registered tool name."""
        with self._lock:
            return sorted(self._tools)

    def specs(self, names: Iterable[str]) -> list[ToolSpec]:
        """The specs of the registered tools among ``names``, in that order
        (names of tools not registered are left out)."""
        with self._lock:
            return [self._tools[n].spec for n in names if n in self._tools]

    def call(
        self, call: ToolCall, allowed: Iterable[str], context: ToolContext
    ) -> ToolOutcome:
        """Run one call; every failure is an ``error`` outcome, never raised."""
        started = time.perf_counter()
        outcome = self._call(call, set(allowed), context)
        elapsed = int((time.perf_counter() - started) * 1000)
        return ToolOutcome(outcome.status, outcome.content, elapsed)

    def _call(
        self, call: ToolCall, allowed: set[str], context: ToolContext
    ) -> ToolOutcome:
        with self._lock:
            tool = self._tools.get(call.name) if call.name in allowed else None
        if tool is None:
            return ToolOutcome(ERROR, f"unknown tool {call.name[:64]!r}")
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return ToolOutcome(ERROR, "the arguments are not valid JSON")
        problems = validate(arguments, tool.spec.parameters)
        if problems:
            return ToolOutcome(ERROR, "invalid arguments: " + "; ".join(problems[:20]))
        try:
            result = tool.function(arguments, context)
        except ToolError as error:
            return ToolOutcome(ERROR, _cut(str(error)))
        except Exception as error:
            # The message may hold anything (paths, data): the log and the model
            # get the type only.
            logger.warning(
                "tool raised",
                extra={
                    "tool": call.name,
                    "session_id": context.session_id,
                    "error": type(error).__name__,
                },
            )
            return ToolOutcome(ERROR, f"the tool failed ({type(error).__name__})")
        return ToolOutcome(OK, render(result))
