"""Context windows: which part of the visible history an agent sees.

Pure functions of message documents (oldest first), a token budget, a
:class:`~runtime.tokens.TokenCounter` and, for ``summarize``, the summary in use.
No I/O: the runtime reads the history and records summaries.

**Units.** Messages are chosen in *units* that are in or out together: an
assistant message that called tools (``metadata.tool_calls``) with every
``role: tool`` result answering it (``metadata.tool_call_id`` equal to one of
its call ids; a result belongs to the latest such call before it). Any other
message is a unit by itself. A tool result whose call is not in the history is
never shown (a model API refuses a result without its call).

**Strategies**, within ``budget`` tokens:

- ``recent``: the most recent units that fit, newest first, stopping at the
  first that does not (the window is a contiguous run of the history, so the
  agent never sees a gap).
- ``smart``: first every unit holding a ``role: system`` message (oldest
  first), then every *important* unit (newest first) — one holding a message
  whose ``metadata.important`` or ``metadata.pinned`` is ``true`` — each if it
  still fits; then the most recent units that fit, as ``recent``.
- ``summarize``: as ``recent``, but the units entirely at or before the summary's
  ``to_offset`` are represented by the summary (a ``role: system`` message with
  ``metadata.summary = {"from_offset", "to_offset"}``), shown if it fits, before
  the first unit that reaches past ``to_offset``. The recent run keeps
  ``summary_reserve`` tokens free for a summary (at least the current one's
  size), and the units older than the run not covered by the summary are
  returned as :attr:`Window.fold`: what a new summary should fold in.

In every strategy the latest user message is always shown, even alone over the
budget; otherwise the window never exceeds the budget. Messages keep their order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.tokens import TokenCounter, tool_calls_of

Message = Mapping[str, Any]

RECENT = "recent"
SMART = "smart"
SUMMARIZE = "summarize"
STRATEGIES = (RECENT, SMART, SUMMARIZE)


def is_important(message: Message) -> bool:
    """Whether a message is pinned for ``smart`` windows (``metadata.important``
    or ``metadata.pinned`` is ``true``)."""
    metadata = message.get("metadata") or {}
    return isinstance(metadata, Mapping) and (
        metadata.get("important") is True or metadata.get("pinned") is True
    )


@dataclass(frozen=True)
class Unit:
    """Messages that are in or out of a window together (indexes into the
    history, ascending) and the tokens they take."""

    indexes: tuple[int, ...]
    tokens: int

    @property
    def last(self) -> int:
        """The index of its newest message."""
        return self.indexes[-1]


def units_of(
    messages: Sequence[Message], counter: TokenCounter
) -> tuple[list[Unit], list[int]]:
    """The history's units, ordered by their first message, and the indexes of
    tool results whose call is not in the history (never shown)."""
    members: dict[int, list[int]] = {}
    open_calls: dict[str, int] = {}  # call id -> index of the latest asking it
    orphans: list[int] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            metadata = message.get("metadata") or {}
            call_id = (
                metadata.get("tool_call_id") if isinstance(metadata, Mapping) else None
            )
            owner = open_calls.get(call_id) if isinstance(call_id, str) else None
            if owner is None:
                orphans.append(index)
            else:
                members[owner].append(index)
            continue
        members[index] = [index]
        if role == "assistant":
            for call in tool_calls_of(message):
                call_id = call.get("id")
                if isinstance(call_id, str):
                    open_calls[call_id] = index
    units = [
        Unit(tuple(indexes), sum(counter.count(messages[i]) for i in indexes))
        for _, indexes in sorted(members.items())
    ]
    return units, orphans


@dataclass(frozen=True)
class Window:
    """What an agent is handed, and what was left out."""

    messages: list[dict[str, Any]]
    """The history the agent sees, oldest first (the summary message included)."""
    tokens: int
    """Tokens of :attr:`messages`, by the counter used."""
    budget: int
    dropped: list[dict[str, Any]] = field(default_factory=list)
    """Visible messages not shown and not covered by the summary, oldest first."""
    fold: list[dict[str, Any]] = field(default_factory=list)
    """(``summarize``) The dropped units older than the shown run: what a new
    summary should fold in, oldest first, whole units only."""
    summary_used: bool = False

    @property
    def over_budget(self) -> bool:
        """Whether the latest user message alone did not fit."""
        return self.tokens > self.budget


def build_window(
    messages: Sequence[Message],
    *,
    strategy: str,
    budget: int,
    counter: TokenCounter,
    summary: Message | None = None,
    summary_reserve: int = 0,
) -> Window:
    """Choose the part of ``messages`` (the visible history, oldest first) an
    agent sees; see the module docstring for the rules.

    ``summary`` is the summary message in use (``metadata.summary`` holds its
    range); it is used only by ``summarize``.
    """
    if strategy not in STRATEGIES:
        msg = f"context strategy must be one of {', '.join(STRATEGIES)}"
        raise ValueError(msg)
    units, _orphans = units_of(messages, counter)
    selected: set[int] = set()  # positions in ``units``
    used = 0

    def fits(position: int, limit: int) -> bool:
        return used + units[position].tokens <= limit

    def take(position: int) -> None:
        nonlocal used
        selected.add(position)
        used += units[position].tokens

    last_user = next(
        (
            position
            for position in range(len(units) - 1, -1, -1)
            if messages[units[position].indexes[0]].get("role") == "user"
        ),
        None,
    )
    if last_user is not None:
        take(last_user)

    covered: set[int] = set()
    summary_tokens = 0
    to_offset: int | None = None
    if strategy == SUMMARIZE and summary is not None:
        to_offset = int(summary["metadata"]["summary"]["to_offset"])
        summary_tokens = counter.count(summary)
        covered = {
            position
            for position, unit in enumerate(units)
            if position != last_user
            and all(int(messages[i]["offset"]) <= to_offset for i in unit.indexes)
        }

    if strategy == SMART:
        system = [
            p
            for p, unit in enumerate(units)
            if any(messages[i].get("role") == "system" for i in unit.indexes)
        ]
        important = [
            p
            for p, unit in enumerate(units)
            if p not in system and any(is_important(messages[i]) for i in unit.indexes)
        ]
        for position in [*system, *reversed(important)]:
            if position not in selected and fits(position, budget):
                take(position)

    run_limit = budget
    if strategy == SUMMARIZE:
        uncovered = sum(
            unit.tokens
            for p, unit in enumerate(units)
            if p not in covered and p not in selected
        )
        if used + uncovered + summary_tokens > budget:
            # Something must be folded: keep room for the summary to come.
            run_limit = budget - max(summary_reserve, summary_tokens)
    for position in sorted(
        range(len(units)), key=lambda p: units[p].last, reverse=True
    ):
        if position in covered:
            break  # every older unit is covered too (or already shown)
        if position in selected:
            continue
        if not fits(position, run_limit):
            break
        take(position)

    show_summary = (
        summary is not None
        and strategy == SUMMARIZE
        and used + summary_tokens <= budget
    )
    if show_summary:
        used += summary_tokens

    shown_indexes = sorted(i for p in selected for i in units[p].indexes)
    shown: list[dict[str, Any]] = [dict(messages[i]) for i in shown_indexes]
    if show_summary:
        assert summary is not None
        assert to_offset is not None
        # Before the first unit reaching past the summary, never inside one.
        first_after = min(
            (
                units[p].indexes[0]
                for p in selected
                if any(int(messages[i]["offset"]) > to_offset for i in units[p].indexes)
            ),
            default=None,
        )
        at = len(shown) if first_after is None else shown_indexes.index(first_after)
        shown.insert(at, dict(summary))
    left_out = sorted(
        i
        for p, unit in enumerate(units)
        if p not in selected and p not in covered
        for i in unit.indexes
    )
    dropped = [dict(messages[i]) for i in left_out]
    return Window(
        messages=shown,
        tokens=used,
        budget=budget,
        dropped=dropped,
        # Whatever summarize leaves out is older than the run it shows.
        fold=dropped if strategy == SUMMARIZE else [],
        summary_used=show_summary,
    )
