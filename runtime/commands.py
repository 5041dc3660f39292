"""Chat commands: a user message that starts with ``/`` is a command to its session.

Commands are understood on every surface (they run inside ``Runtime.send`` and
``Runtime.stream``). The command message is recorded in the log like any message,
the command acts on the real session, and its answer is recorded as the
assistant's reply (with ``metadata.command``). A failed command answers what went
wrong; an unknown one answers with the list of commands.

::

    /new, /reset                     end this session, carry on in a fresh one
    /session                         this session's id, name, counts and expiry
    /session list                    the user's live sessions
    /session scope main|channel|peer which conversations share this session
    /session reset-time HH:MM|off    daily reset at that UTC time
    /session idle-reset MINUTES|off  reset after that long without activity
    /checkpoint save "name"          a named checkpoint here
    /checkpoint list
    /checkpoint restore ID           back to a checkpoint (nothing is deleted)
    /checkpoint delete ID
    /history                         the last messages
    /history export                  the whole history as markdown
    /history clear                   empty the visible history
    /help
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aggregates.errors import DomainError
from aggregates.values import Scope
from runtime.errors import RuntimeFault

if TYPE_CHECKING:
    from runtime.facade import Principal, Runtime

HELP = __doc__.split("::", 1)[1].strip("\n") if __doc__ else ""
HISTORY_SHOWN = 20
SCOPES = {"main": Scope.MAIN, "peer": Scope.PER_PEER, "channel": Scope.PER_CHANNEL_PEER}


@dataclass(frozen=True)
class CommandResult:
    """What a command answers, and whether the conversation moves to a fresh
    session once the answer is recorded."""

    name: str
    text: str
    reset: bool = False


def is_command(content: str) -> bool:
    """Whether a user message is a chat command (``/word``; ``//`` escapes)."""
    return content.startswith("/") and len(content) > 1 and not content.startswith("//")


class ChatCommands:
    """Runs chat commands against a runtime, as the calling principal."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def run(self, session_id: str, content: str, principal: Principal) -> CommandResult:
        """Carry out one command; errors become the answer, never an exception."""
        try:
            words = shlex.split(content[1:])
        except ValueError:
            return CommandResult(
                "error", "I could not read that command (unbalanced quotes?)."
            )
        if not words:
            return self._help("help")
        name, arguments = words[0].lower(), words[1:]
        handler: Callable[[str, list[str], Principal], CommandResult] | None = {
            "new": self._reset,
            "reset": self._reset,
            "session": self._session,
            "checkpoint": self._checkpoint,
            "history": self._history,
            "help": lambda *_: self._help("help"),
        }.get(name)
        if handler is None:
            return self._help("unknown", f"Unknown command /{name}.")
        try:
            return handler(session_id, arguments, principal)
        except (DomainError, RuntimeFault) as error:
            return CommandResult(name, f"/{name} failed: {error.detail}")

    # --- commands

    def _help(self, name: str, lead: str = "") -> CommandResult:
        text = f"{lead}\nCommands:\n{HELP}" if lead else f"Commands:\n{HELP}"
        return CommandResult(name, text)

    def _reset(
        self, _session_id: str, _arguments: list[str], _p: Principal
    ) -> CommandResult:
        return CommandResult(
            "reset",
            "Starting a fresh session; this one is kept in the log.",
            reset=True,
        )

    def _session(
        self, session_id: str, arguments: list[str], principal: Principal
    ) -> CommandResult:
        rt = self._runtime
        if not arguments:
            doc = rt.get(session_id, principal=principal)
            return CommandResult(
                "session",
                f"Session {doc['id']}"
                + (f" ({doc['name']})" if doc["name"] else "")
                + f": {doc['message_count']} messages, agent {doc['agent_id']}, "
                f"created {doc['created_at']}, expires {doc['expires_at']}.",
            )
        action, rest = arguments[0].lower(), arguments[1:]
        if action == "list":
            user_id = rt.get(session_id, principal=principal)["user_id"]
            sessions = rt.list(principal=principal, user_id=user_id, limit=50)[
                "sessions"
            ]
            lines = [
                f"{'*' if s['id'] == session_id else '-'} {s['id']}"
                + (f" {s['name']}" if s["name"] else "")
                + f" ({s['message_count']} messages, updated {s['updated_at']})"
                for s in sessions
            ]
            return CommandResult("session list", "Sessions:\n" + "\n".join(lines))
        if action == "scope" and len(rest) == 1 and rest[0].lower() in SCOPES:
            return self._rescope(session_id, rest[0].lower(), principal)
        if action == "reset-time" and len(rest) == 1:
            daily_at = None if rest[0].lower() == "off" else rest[0]
            rt.set_reset_policy(session_id, principal=principal, daily_at=daily_at)
            text = (
                "Daily reset off."
                if daily_at is None
                else f"Daily reset at {daily_at} UTC."
            )
            return CommandResult("session reset-time", text)
        if action == "idle-reset" and len(rest) == 1:
            minutes = self._minutes(rest[0])
            if minutes is False:
                return CommandResult(
                    "session idle-reset", "Give a whole number of minutes, or off."
                )
            rt.set_reset_policy(session_id, principal=principal, idle_minutes=minutes)
            text = (
                "Idle reset off."
                if minutes is None
                else f"The session resets after {minutes} idle minutes."
            )
            return CommandResult("session idle-reset", text)
        return self._help(
            "session",
            "Usage: /session [list | scope main|channel|peer | "
            "reset-time HH:MM|off | idle-reset MINUTES|off]",
        )

    @staticmethod
    def _minutes(text: str) -> int | bool | None:
        if text.lower() == "off":
            return None
        return int(text) if text.isdigit() and int(text) >= 1 else False

    def _rescope(
        self, session_id: str, scope: str, principal: Principal
    ) -> CommandResult:
        self._runtime.rescope(session_id, SCOPES[scope].value, principal=principal)
        return CommandResult(
            "session scope", f"This session is now the {scope} session."
        )

    def _checkpoint(
        self, session_id: str, arguments: list[str], principal: Principal
    ) -> CommandResult:
        rt = self._runtime
        action = arguments[0].lower() if arguments else "list"
        rest = arguments[1:]
        if action == "save":
            name = " ".join(rest).strip() or "checkpoint"
            saved = rt.checkpoint_save(session_id, name, principal=principal)
            return CommandResult(
                "checkpoint save",
                f'Saved checkpoint {saved["id"]} "{saved["name"]}" '
                f"({saved['message_count']} messages).",
            )
        if action == "list":
            found = rt.checkpoints(session_id, principal=principal)
            if not found:
                return CommandResult("checkpoint list", "No checkpoints yet.")
            lines = [
                f'- {c["id"]} "{c["name"]}" '
                f"({c['message_count']} messages, {c['created_at']})"
                for c in found
            ]
            return CommandResult("checkpoint list", "Checkpoints:\n" + "\n".join(lines))
        if action in ("restore", "delete") and len(rest) == 1:
            if action == "restore":
                doc = rt.checkpoint_restore(session_id, rest[0], principal=principal)
                return CommandResult(
                    "checkpoint restore",
                    f"Restored checkpoint {rest[0]}: "
                    f"{doc['message_count']} messages visible; "
                    "later ones stay in the log.",
                )
            rt.checkpoint_delete(session_id, rest[0], principal=principal)
            return CommandResult("checkpoint delete", f"Deleted checkpoint {rest[0]}.")
        return self._help(
            "checkpoint",
            'Usage: /checkpoint save "name" | list | restore ID | delete ID',
        )

    def _history(
        self, session_id: str, arguments: list[str], principal: Principal
    ) -> CommandResult:
        rt = self._runtime
        action = arguments[0].lower() if arguments else ""
        if action == "export":
            text = rt.export(session_id, principal=principal, format="markdown")
            assert isinstance(text, str)
            return CommandResult("history export", text)
        if action == "clear":
            rt.clear(session_id, principal=principal)
            return CommandResult(
                "history clear", "History cleared; it stays in the log."
            )
        if action:
            return self._help("history", "Usage: /history [export | clear]")
        page = rt.history(session_id, principal=principal, limit=HISTORY_SHOWN + 1)
        # The newest message is this command itself.
        shown: list[dict[str, Any]] = list(reversed(page["messages"][1:]))
        if not shown:
            return CommandResult("history", "No messages yet.")
        lines = [f"{m['role']}: {m['content']}" for m in shown]
        return CommandResult("history", "\n".join(lines))
