"""Tools agents call through the runtime's tool loop: the registry, the JSON
schema subset arguments are checked against, and the built-in tools
(``sessions_*`` over the runtime; ``read_file`` and ``list_files`` confined to
the session's ``work_dir``)."""

from __future__ import annotations

from runtime.tools.files import register_file_tools
from runtime.tools.registry import (
    ERROR,
    IN_DOUBT,
    OK,
    Tool,
    ToolContext,
    ToolError,
    ToolFunction,
    ToolOutcome,
    ToolRegistry,
)
from runtime.tools.schema import SchemaError, check_schema, validate
from runtime.tools.sessions import register_session_tools

__all__ = [
    "ERROR",
    "IN_DOUBT",
    "OK",
    "SchemaError",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFunction",
    "ToolOutcome",
    "ToolRegistry",
    "builtin_registry",
    "check_schema",
    "validate",
]


def builtin_registry() -> ToolRegistry:
    """A registry holding the built-in tools."""
    registry = ToolRegistry()
    register_session_tools(registry)
    register_file_tools(registry)
    return registry
