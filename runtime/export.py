"""Rendering a session's history as markdown or plain text, and its export."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

EXPORT_FORMAT = "sessiond.export/v1"


def _title(session: Mapping[str, Any]) -> str:
    return str(session.get("name") or session["id"])


def render_markdown(
    session: Mapping[str, Any], messages: Iterable[Mapping[str, Any]]
) -> str:
    """A readable transcript with the session's metadata on top."""
    lines = [
        f"# {_title(session)}",
        "",
        f"- Session: `{session['id']}`",
        f"- Agent: `{session['agent_id']}`",
        f"- User: `{session['user_id']}`",
        f"- Created: {session['created_at']}",
        f"- Messages: {session['message_count']}",
        "",
    ]
    for message in messages:
        lines += [
            f"### {str(message['role']).capitalize()} · {message['created_at']}",
            "",
            str(message["content"]),
            "",
        ]
    return "\n".join(lines)


def render_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """One ``role: content`` paragraph per message."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def export_document(
    session: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    exported_at: str | None,
) -> dict[str, Any]:
    """The JSON export: the session, its checkpoints and its visible history."""
    return {
        "format": EXPORT_FORMAT,
        "exported_at": exported_at,
        "session": dict(session),
        "checkpoints": list(checkpoints),
        "messages": list(messages),
    }
