"""Token counting for context windows: pluggable, with offline defaults.

A :class:`TokenCounter` measures text and message documents. Two are built in and
need no download:

- ``heuristic`` (the default): about four characters per token for English, the
  usual figure for BPE tokenizers. A text counts ``ceil(ascii_chars / 4)`` plus
  one token per non-ASCII character (CJK text is about one token per character,
  accented Latin a little less: the estimate errs on the safe side), and never
  fewer tokens than it has whitespace-separated words. A message adds
  :data:`MESSAGE_OVERHEAD` tokens for its role and separators (chat formats spend
  3 to 4), and its tool calls (name and JSON arguments) count like text.
- ``words``: whitespace-separated words, no overhead: the measure the ``echo``
  agent reports its usage in.

Both are deterministic. Another counter (a real tokenizer, say) is plugged in
with ``Runtime.register_token_counter(name, counter)`` or named in the agent's
config as ``"package.module:attribute"`` (a counter, or a class or factory
called without arguments).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

MESSAGE_OVERHEAD = 4
"""Tokens the heuristic adds per message (role, separators)."""
TOOL_CALL_OVERHEAD = 3
"""Tokens the heuristic adds per tool call (its id and framing)."""


@runtime_checkable
class TokenCounter(Protocol):
    """Measures text and messages in tokens."""

    def count_text(self, text: str) -> int:
        """Tokens of a bare text."""
        ...

    def count(self, message: Mapping[str, Any]) -> int:
        """Tokens a message document takes in a model's context."""
        ...


def tool_calls_of(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tool calls an assistant message carries (``metadata.tool_calls``)."""
    metadata = message.get("metadata") or {}
    calls = metadata.get("tool_calls") if isinstance(metadata, Mapping) else None
    if not isinstance(calls, list):
        return []
    return [call for call in calls if isinstance(call, Mapping)]


class HeuristicCounter:
    """About four characters per token; see the module docstring."""

    name = "heuristic"

    def count_text(self, text: str) -> int:
        """``ceil(ascii / 4) + non_ascii``, at least the number of words."""
        if not text:
            return 0
        # encode(..., "ignore") keeps the ASCII characters, at C speed.
        ascii_chars = len(text.encode("ascii", "ignore"))
        estimate = -(-ascii_chars // 4) + (len(text) - ascii_chars)
        return max(estimate, len(text.split()))

    def count(self, message: Mapping[str, Any]) -> int:
        """Content, tool calls and :data:`MESSAGE_OVERHEAD`."""
        total = MESSAGE_OVERHEAD + self.count_text(str(message.get("content") or ""))
        for call in tool_calls_of(message):
            total += TOOL_CALL_OVERHEAD
            total += self.count_text(str(call.get("name") or ""))
            total += self.count_text(str(call.get("arguments") or ""))
        return total


class WordCounter:
    """Whitespace-separated words, no overhead (how ``echo`` counts usage)."""

    name = "words"

    def count_text(self, text: str) -> int:
        """The number of words."""
        return len(text.split())

    def count(self, message: Mapping[str, Any]) -> int:
        """Words of the content and of the tool calls' arguments."""
        total = self.count_text(str(message.get("content") or ""))
        for call in tool_calls_of(message):
            total += self.count_text(str(call.get("arguments") or ""))
        return total


def load_counter(path: str) -> TokenCounter:
    """Import a counter named ``package.module:attribute`` (an instance, or a
    class or factory called without arguments).

    Raises:
        ValueError: the path does not name a token counter.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        msg = f"token counter {path!r} is not a known name or module:attribute"
        raise ValueError(msg)
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        msg = f"token counter {path!r} cannot be imported"
        raise ValueError(msg) from None
    if isinstance(found, type) or (
        callable(found) and not isinstance(found, TokenCounter)
    ):
        found = found()
    if not isinstance(found, TokenCounter):
        msg = f"{path!r} is not a token counter (count and count_text)"
        raise ValueError(msg)
    return found


class TokenCounters:
    """The token counters a runtime knows, by name (thread-safe)."""

    def __init__(self) -> None:
        self._counters: dict[str, TokenCounter] = {
            HeuristicCounter.name: HeuristicCounter(),
            WordCounter.name: WordCounter(),
        }
        self._guard = threading.Lock()

    def register(self, name: str, counter: TokenCounter) -> None:
        """Add (or replace) a counter under ``name``."""
        if not isinstance(counter, TokenCounter):
            msg = "a token counter has count(message) and count_text(text)"
            raise TypeError(msg)
        with self._guard:
            self._counters[name] = counter

    def get(self, name: str) -> TokenCounter:
        """The counter called ``name``; a ``module:attribute`` path is imported
        once and kept.

        Raises:
            ValueError: no such counter.
        """
        with self._guard:
            found = self._counters.get(name)
        if found is not None:
            return found
        if ":" not in name:
            msg = f"no token counter {name!r} is registered"
            raise ValueError(msg)
        counter = load_counter(name)
        with self._guard:
            return self._counters.setdefault(name, counter)
