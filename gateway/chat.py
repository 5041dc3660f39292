"""``sessiond chat``: talk to an agent from a terminal, replies streamed as they come.

::

    sessiond chat --url http://127.0.0.1:8000 [--api-key KEY]   a running server
    sessiond chat --db ./sessiond.db                            in-process

Both backends implement :class:`ChatBackend`, so :class:`Chat` handles the slash
commands once, through the API (they are not recorded as messages). The session
settings only the runtime's in-band commands offer (``/session scope``,
``reset-time``, ``idle-reset``; see :mod:`runtime`) are sent to the session as
messages, which it answers. Message content is shown on the terminal and never
logged.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from gateway.client import Client, ClientError
from runtime import DomainError, Runtime, RuntimeFault, Settings

JSON = dict[str, Any]
LIST_LIMIT = 50
EXIT_OK = 0
EXIT_ERROR = 1

HELP = """\
Type a message to send it (text that starts with // is sent as it is). Commands:
  /new ["name"]                  start a new session and switch to it
  /reset                         end this session, continue in a fresh one
  /session                       this session: id, name, status, counts
  /session list                  your active sessions (* marks this one)
  /session use ID                switch to another session
  /session scope main|channel|peer, /session reset-time HH:MM|off,
  /session idle-reset MINUTES|off    sent to the session, which answers
  /checkpoint save "name"        save a checkpoint here
  /checkpoint list               this session's checkpoints
  /checkpoint restore ID|NAME    move back to a checkpoint (the log keeps the rest)
  /checkpoint delete ID|NAME     delete a checkpoint
  /history                       the visible history
  /history export [FILE]         the history as markdown (printed, or written to FILE)
  /history clear                 empty the visible history (the session stays)
  /help                          this list
  /quit                          leave (Ctrl-D too)"""

USAGE = {
    "session": "usage: /session | /session list | /session use ID"
    " | /session scope|reset-time|idle-reset VALUE",
    "checkpoint": 'usage: /checkpoint save "name" | list | restore ID | delete ID',
    "history": "usage: /history | /history export [FILE] | /history clear",
    "new": 'usage: /new ["name"]',
}
# Commands only the session itself understands: sent to it as a message.
IN_BAND = {("session", "scope"), ("session", "reset-time"), ("session", "idle-reset")}


class ChatBackend(Protocol):
    """What the chat needs of sessiond; sessions and messages are API resources."""

    def create(self, agent_id: str, name: str | None) -> JSON:
        """Create a session."""
        ...

    def get(self, session_id: str) -> JSON:
        """One session."""
        ...

    def sessions(self, limit: int) -> JSON:
        """A page of the caller's active sessions: ``{sessions, total, ...}``."""
        ...

    def stream(self, session_id: str, content: str) -> Iterator[JSON]:
        """Send a message; the turn's events as they happen."""
        ...

    def reset(self, session_id: str) -> JSON:
        """End the session; its successor."""
        ...

    def clear(self, session_id: str) -> JSON:
        """Empty the visible history."""
        ...

    def messages(self, session_id: str) -> list[JSON]:
        """The visible history, oldest first."""
        ...

    def markdown(self, session_id: str) -> str:
        """The markdown export."""
        ...

    def checkpoint_save(self, session_id: str, name: str) -> JSON:
        """Save a checkpoint."""
        ...

    def checkpoints(self, session_id: str) -> list[JSON]:
        """The session's checkpoints."""
        ...

    def checkpoint_restore(self, session_id: str, checkpoint_id: str) -> JSON:
        """Restore a checkpoint; the session."""
        ...

    def checkpoint_delete(self, session_id: str, checkpoint_id: str) -> None:
        """Delete a checkpoint."""
        ...

    def close(self) -> None:
        """Release what the backend holds."""
        ...


class RuntimeBackend:
    """In-process: the :class:`runtime.Runtime` facade, as the local principal."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def create(self, agent_id: str, name: str | None) -> JSON:
        """Create a session."""
        return self.runtime.create(agent_id, name=name)

    def get(self, session_id: str) -> JSON:
        """One session."""
        return self.runtime.get(session_id)

    def sessions(self, limit: int) -> JSON:
        """A page of active sessions."""
        return self.runtime.list(status="active", limit=limit)

    def stream(self, session_id: str, content: str) -> Iterator[JSON]:
        """Send a message; the turn's events."""
        return self.runtime.stream(session_id, content)

    def reset(self, session_id: str) -> JSON:
        """End the session; its successor."""
        return self.runtime.reset(session_id)

    def clear(self, session_id: str) -> JSON:
        """Empty the visible history."""
        return self.runtime.clear(session_id)

    def messages(self, session_id: str) -> list[JSON]:
        """The visible history, oldest first."""
        return self.runtime.messages(session_id)

    def markdown(self, session_id: str) -> str:
        """The markdown export."""
        return self.runtime.history_text(session_id, format="markdown")

    def checkpoint_save(self, session_id: str, name: str) -> JSON:
        """Save a checkpoint."""
        return self.runtime.checkpoint_save(session_id, name)

    def checkpoints(self, session_id: str) -> list[JSON]:
        """The session's checkpoints."""
        return self.runtime.checkpoints(session_id)

    def checkpoint_restore(self, session_id: str, checkpoint_id: str) -> JSON:
        """Restore a checkpoint."""
        return self.runtime.checkpoint_restore(session_id, checkpoint_id)

    def checkpoint_delete(self, session_id: str, checkpoint_id: str) -> None:
        """Delete a checkpoint."""
        self.runtime.checkpoint_delete(session_id, checkpoint_id)

    def close(self) -> None:
        """Stop the runtime."""
        self.runtime.close()


class HttpBackend:
    """A running server, through :class:`gateway.client.Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, agent_id: str, name: str | None) -> JSON:
        """Create a session."""
        return dict(self.client.create_session(agent_id, name=name))

    def get(self, session_id: str) -> JSON:
        """One session."""
        return dict(self.client.get_session(session_id))

    def sessions(self, limit: int) -> JSON:
        """A page of active sessions."""
        return dict(self.client.list_sessions(status="active", limit=limit))

    def stream(self, session_id: str, content: str) -> Iterator[JSON]:
        """Send a message; the turn's events."""
        return self.client.stream_message(session_id, content)

    def reset(self, session_id: str) -> JSON:
        """End the session; its successor."""
        return dict(self.client.reset(session_id))

    def clear(self, session_id: str) -> JSON:
        """Empty the visible history."""
        return dict(self.client.clear(session_id))

    def messages(self, session_id: str) -> list[JSON]:
        """The visible history, oldest first."""
        return list(self.client.iter_history(session_id))

    def markdown(self, session_id: str) -> str:
        """The markdown export."""
        return str(self.client.export(session_id, format="markdown"))

    def checkpoint_save(self, session_id: str, name: str) -> JSON:
        """Save a checkpoint."""
        return dict(self.client.save_checkpoint(session_id, name))

    def checkpoints(self, session_id: str) -> list[JSON]:
        """The session's checkpoints."""
        return list(self.client.list_checkpoints(session_id))

    def checkpoint_restore(self, session_id: str, checkpoint_id: str) -> JSON:
        """Restore a checkpoint."""
        return dict(self.client.restore_checkpoint(session_id, checkpoint_id))

    def checkpoint_delete(self, session_id: str, checkpoint_id: str) -> None:
        """Delete a checkpoint."""
        self.client.delete_checkpoint(session_id, checkpoint_id)

    def close(self) -> None:
        """Close the connections."""
        self.client.close()


# What a backend raises when sessiond refuses a call; all carry code and detail.
BACKEND_ERRORS = (RuntimeFault, DomainError, ClientError)


class Chat:
    """The chat loop and its slash commands, over any :class:`ChatBackend`."""

    def __init__(
        self,
        backend: ChatBackend,
        *,
        agent_id: str = "echo",
        out: TextIO | None = None,
    ) -> None:
        self.backend = backend
        self.agent_id = agent_id
        self.out = out or sys.stdout
        self.session: JSON = {}
        self.commands: dict[str, Callable[[list[str]], bool]] = {
            "new": self._new,
            "reset": self._reset,
            "session": self._session,
            "checkpoint": self._checkpoint,
            "history": self._history,
            "help": self._help,
            "quit": self._quit,
            "exit": self._quit,
        }

    @property
    def session_id(self) -> str:
        """The current session's id."""
        return str(self.session["id"])

    def say(self, text: str = "", *, end: str = "\n") -> None:
        """Write to the terminal at once."""
        self.out.write(text + end)
        self.out.flush()

    def start(self, session_id: str | None = None, name: str | None = None) -> None:
        """Open (or create) the session to talk in."""
        if session_id:
            self.session = self.backend.get(session_id)
        else:
            self.session = self.backend.create(self.agent_id, name)
        agent = self.session["agent_id"]
        self.say(f"session {self.session_id} (agent {agent}); /help lists the commands")

    def run(self, read: Callable[[str], str] = input) -> int:
        """Read lines until ``/quit`` or end of input."""
        while True:
            try:
                line = read("you> ")
            except EOFError:
                self.say()
                return EXIT_OK
            except KeyboardInterrupt:
                self.say()
                continue
            if not self.handle(line):
                return EXIT_OK

    def handle(self, line: str) -> bool:
        """Act on one line; ``False`` means leave."""
        text = line.strip()
        if not text:
            return True
        try:
            if text.startswith("/") and not text.startswith("//"):
                return self.command(text[1:])
            self.send(text)
        except BACKEND_ERRORS as error:
            self.say(f"error: {error.code}: {error.detail}")
        except KeyboardInterrupt:
            self.say("\n(interrupted)")
        return True

    def command(self, text: str) -> bool:
        """Run a slash command (without its slash)."""
        try:
            words = shlex.split(text)
        except ValueError as error:
            self.say(f"cannot read that command: {error}")
            return True
        if not words:
            self.say("type /help for the commands")
            return True
        name, arguments = words[0].lower(), words[1:]
        if (name, arguments[0].lower() if arguments else "") in IN_BAND:
            self.send("/" + text)
            return True
        handler = self.commands.get(name)
        if handler is None:
            near = difflib.get_close_matches(name, self.commands, n=1)
            hint = f"did you mean /{near[0]}? " if near else ""
            self.say(f"unknown command /{name}; {hint}/help lists the commands")
            return True
        return handler(arguments)

    def send(self, content: str) -> None:
        """Send a message and print the reply as it streams in."""
        agent = self.session.get("agent_id", self.agent_id)
        replying = streamed = False
        tools: set[str] = set()

        def write(text: str) -> None:
            nonlocal replying
            if not replying:
                self.say(f"{agent}> ", end="")
                replying = True
            self.say(text, end="")

        try:
            for event in self.backend.stream(self.session_id, content):
                kind = event.get("type")
                if kind == "text_delta":
                    write(str(event.get("text", "")))
                    streamed = True
                elif kind == "input_json_delta":
                    call = str(event.get("id"))
                    if call not in tools:
                        tools.add(call)
                        write(f"[tool {event.get('name')}] ")
                elif kind == "message_stop" and not streamed:
                    write(str((event.get("message") or {}).get("content", "")))
                elif kind == "done":
                    self.session = dict(event.get("session") or self.session)
        finally:
            if replying:
                self.say()

    # --- commands

    def _new(self, arguments: list[str]) -> bool:
        if len(arguments) > 1:
            self.say(USAGE["new"])
            return True
        self.session = self.backend.create(
            self.session.get("agent_id", self.agent_id),
            arguments[0] if arguments else None,
        )
        self.say(f"new session {self.session_id}{self._name_suffix(self.session)}")
        return True

    def _reset(self, arguments: list[str]) -> bool:
        old = self.session_id
        self.session = self.backend.reset(old)
        self.say(f"session {old} ended; continuing in {self.session_id}")
        return True

    def _session(self, arguments: list[str]) -> bool:
        if not arguments:
            session = self.session = self.backend.get(self.session_id)
            messages = _count(session["message_count"], "message")
            checkpoints = _count(
                len(self.backend.checkpoints(self.session_id)), "checkpoint"
            )
            offset = session["offset"]
            self.say(
                f"session {session['id']}{self._name_suffix(session)}\n"
                f"  agent {session['agent_id']}, status {session['status']}\n"
                f"  {messages} visible, {checkpoints}, log at offset {offset}"
            )
        elif arguments == ["list"]:
            page = self.backend.sessions(LIST_LIMIT)
            for session in page["sessions"]:
                mark = "*" if session["id"] == self.session_id else " "
                self.say(
                    f"{mark} {session['id']}{self._name_suffix(session)}  "
                    f"{_count(session['message_count'], 'message')}  "
                    f"last active {session['last_activity_at']}"
                )
            shown = len(page["sessions"])
            total = page.get("total", shown)
            more = f" ({shown} shown)" if total > shown else ""
            self.say(f"{_count(total, 'active session')}{more}")
        elif len(arguments) == 2 and arguments[0] == "use":
            self.session = self.backend.get(arguments[1])
            self.say(
                f"now in session {self.session_id}{self._name_suffix(self.session)}"
            )
        else:
            self.say(USAGE["session"])
        return True

    def _checkpoint(self, arguments: list[str]) -> bool:
        action, rest = (arguments[0], arguments[1:]) if arguments else ("", [])
        if action == "save" and len(rest) == 1:
            saved = self.backend.checkpoint_save(self.session_id, rest[0])
            self.say(
                f"saved checkpoint {saved['id']} {saved['name']!r} at offset "
                f"{saved['offset']} ({_count(saved['message_count'], 'message')})"
            )
        elif action == "list" and not rest:
            checkpoints = self.backend.checkpoints(self.session_id)
            for checkpoint in checkpoints:
                messages = _count(checkpoint["message_count"], "message")
                self.say(
                    f"  {checkpoint['id']}  {checkpoint['name']!r}  "
                    f"offset {checkpoint['offset']}  {messages}  "
                    f"{checkpoint['created_at']}"
                )
            self.say(_count(len(checkpoints), "checkpoint"))
        elif action in ("restore", "delete") and len(rest) == 1:
            checkpoint_id = self._checkpoint_id(rest[0])
            if action == "restore":
                self.session = self.backend.checkpoint_restore(
                    self.session_id, checkpoint_id
                )
                self.say(
                    f"restored checkpoint {checkpoint_id}; "
                    f"{_count(self.session['message_count'], 'message')} visible"
                )
            else:
                self.backend.checkpoint_delete(self.session_id, checkpoint_id)
                self.say(f"deleted checkpoint {checkpoint_id}")
        else:
            self.say(USAGE["checkpoint"])
        return True

    def _checkpoint_id(self, given: str) -> str:
        """The id of the checkpoint named by id or, failing that, by its unique name."""
        checkpoints = self.backend.checkpoints(self.session_id)
        if any(c["id"] == given for c in checkpoints):
            return given
        named = [c["id"] for c in checkpoints if c["name"] == given]
        return str(named[0]) if len(named) == 1 else given

    def _history(self, arguments: list[str]) -> bool:
        if not arguments:
            messages = self.backend.messages(self.session_id)
            for message in messages:
                self.say(
                    f"[{message['offset']}] {message['role']}: {message['content']}"
                )
            self.say(_count(len(messages), "message"))
        elif arguments[0] == "export" and len(arguments) <= 2:
            markdown = self.backend.markdown(self.session_id)
            if len(arguments) == 2:
                Path(arguments[1]).write_text(markdown, encoding="utf-8")
                self.say(f"wrote {arguments[1]}")
            else:
                self.say(markdown)
        elif arguments == ["clear"]:
            self.session = self.backend.clear(self.session_id)
            self.say("history cleared (the log keeps it)")
        else:
            self.say(USAGE["history"])
        return True

    def _help(self, arguments: list[str]) -> bool:
        self.say(HELP)
        return True

    def _quit(self, arguments: list[str]) -> bool:
        return False

    @staticmethod
    def _name_suffix(session: JSON) -> str:
        return f" {session['name']!r}" if session.get("name") else ""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sessiond chat``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument(
        "--db",
        help="in-process on this SQLite file (default $SESSIOND_DB or ./sessiond.db)",
    )
    parser.add_argument(
        "--api-key", help="the server's API key (default $SESSIOND_API_KEY)"
    )
    parser.add_argument(
        "--config", help="TOML config file, in-process (default $SESSIOND_CONFIG)"
    )
    parser.add_argument(
        "--agent", default="echo", help="the agent of new sessions (default echo)"
    )
    parser.add_argument(
        "--session", metavar="ID", help="continue this session instead of starting one"
    )
    parser.add_argument("--name", help="the name of the session started")


def _backend(args: argparse.Namespace, environ: Mapping[str, str]) -> ChatBackend:
    if args.url:
        return HttpBackend(
            Client(args.url, args.api_key or environ.get("SESSIOND_API_KEY"))
        )
    return RuntimeBackend(
        Runtime(Settings.from_env(db=args.db, config_path=args.config))
    )


def main(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``sessiond chat`` with parsed arguments (``environ`` defaults to the
    process environment, read for ``SESSIOND_API_KEY`` only)."""
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401 - line editing and recall for input()
    try:
        backend = _backend(args, os.environ if environ is None else environ)
    except (RuntimeFault, DomainError, OSError) as error:
        sys.stderr.write(f"sessiond chat: cannot start: {error}\n")
        return EXIT_ERROR
    try:
        chat = Chat(backend, agent_id=args.agent)
        try:
            chat.start(args.session, args.name)
        except BACKEND_ERRORS as error:
            sys.stderr.write(f"sessiond chat: {error.code}: {error.detail}\n")
            return EXIT_ERROR
        return chat.run()
    finally:
        backend.close()
