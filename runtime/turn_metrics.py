"""Counters of agent turns for the metrics endpoint: tokens by agent and
direction, turns by agent and outcome, tool calls by tool and status."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


class TurnMetrics:
    """Thread-safe counters since the process started (Prometheus counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens: dict[tuple[str, str], int] = {}
        self.turns: dict[tuple[str, str], int] = {}
        self.tool_calls: dict[tuple[str, str], int] = {}

    def count_tokens(self, agent_id: str, usage: Mapping[str, Any] | None) -> None:
        """Add a step's usage to its agent's input and output counters."""
        with self._lock:
            for direction in ("input", "output"):
                amount = int((usage or {}).get(f"{direction}_tokens", 0) or 0)
                key = (agent_id, direction)
                self.tokens[key] = self.tokens.get(key, 0) + amount

    def count_turn(self, agent_id: str, status: str) -> None:
        """Count an ended turn."""
        with self._lock:
            key = (agent_id, status)
            self.turns[key] = self.turns.get(key, 0) + 1

    def count_tool_call(self, name: str, status: str) -> None:
        """Count a recorded tool result."""
        with self._lock:
            key = (name, status)
            self.tool_calls[key] = self.tool_calls.get(key, 0) + 1

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every series as ``{labels..., "value"}`` rows."""
        with self._lock:
            return {
                "tokens": [
                    {"agent": a, "direction": d, "value": v}
                    for (a, d), v in sorted(self.tokens.items())
                ],
                "turns": [
                    {"agent": a, "status": s, "value": v}
                    for (a, s), v in sorted(self.turns.items())
                ],
                "tool_calls": [
                    {"tool": t, "status": s, "value": v}
                    for (t, s), v in sorted(self.tool_calls.items())
                ],
            }
