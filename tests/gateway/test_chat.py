"""``sessiond chat`` driven through a real pseudo-terminal, in-process and
against a running server; every slash command's effect is checked on the
session itself afterwards."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.chat import Chat, RuntimeBackend
from gateway.client import Client
from runtime import Runtime, Settings
from tests.gateway.helpers import ALICE_KEY
from tests.support.server import ROOT, ServerProcess

WAIT = 30.0
ID = r"[0-9a-f]{32}"


class Terminal:
    """A process on the slave side of a pty; the test types and reads on the
    master side. Every read waits with ``select`` up to a deadline."""

    def __init__(self, *arguments: str) -> None:
        master, slave = os.openpty()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SESSIOND_", "SESSION_"))
        }
        env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "TERM": "dumb"})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "chat", *arguments],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = ""
        self.position = 0

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting until ``deadline``); ``False`` at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        ready, _, _ = select.select([self.master], [], [], remaining)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        if not chunk:
            return False
        self.output += chunk.decode(errors="replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """Wait for ``pattern`` after what was already matched; returns the match."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while True:
            found = compiled.search(self.output, self.position)
            if found is not None:
                self.position = found.end()
                return found
            if time.monotonic() >= deadline or not self._read(deadline):
                shown = self.output[self.position :]
                msg = f"{pattern!r} did not appear; the terminal shows:\n{shown}"
                raise AssertionError(msg)

    def type(self, line: str) -> None:
        """Type a line and press return."""
        os.write(self.master, line.encode() + b"\n")

    def command(self, line: str, answer: str) -> re.Match[str]:
        """Wait for the prompt, type ``line`` and wait for ``answer``."""
        self.expect(r"you> ")
        self.type(line)
        return self.expect(answer)

    def finish(self) -> int:
        """Wait for the process to exit (reading what it still prints)."""
        deadline = time.monotonic() + WAIT
        while self._read(deadline) and time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
        return self.process.wait(timeout=WAIT)

    def close(self) -> None:
        """Kill the process if it is still running, and close the pty."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    """Opens terminals, closing them all at teardown."""
    opened: list[Terminal] = []

    class Opened(Terminal):
        def __init__(self, *arguments: str) -> None:
            super().__init__(*arguments)
            opened.append(self)

    yield Opened
    for term in opened:
        term.close()


def test_in_process_chat_streams_replies_and_every_command_acts_on_the_session(
    terminal: type[Terminal], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    exported = tmp_path / "export.md"
    term = terminal("--db", str(db))
    first = term.expect(rf"session ({ID}) \(agent echo\)").group(1)

    term.command("hello world", r"echo> hello world\n")
    term.command(
        "/session",
        rf"session {first}\n  agent echo, status active\n"
        r"  2 messages visible, 0 checkpoints, log at offset 4",
    )
    saved = term.command(
        '/checkpoint save "after hello"',
        rf"saved checkpoint ({ID}) 'after hello' at offset 4 \(2 messages\)",
    ).group(1)
    term.command("second message", r"echo> second message\n")
    term.command(
        "/checkpoint list",
        rf"{saved}  'after hello'  offset 4  2 messages .*\n1 checkpoint\n",
    )
    term.command(
        f"/checkpoint restore {saved}",
        rf"restored checkpoint {saved}; 2 messages visible",
    )
    term.command(
        "/history",
        r"\[2\] user: hello world\n\[3\] assistant: hello world\n2 messages\n",
    )
    temp = term.command(
        "/checkpoint save temp", rf"saved checkpoint ({ID}) 'temp'"
    ).group(1)
    term.command("/checkpoint delete temp", rf"deleted checkpoint {temp}")
    term.command(
        "/history export", rf"# {first}\n\n- Session: `{first}`(.|\n)*hello world"
    )
    term.command(f"/history export {exported}", rf"wrote {re.escape(str(exported))}")
    term.command("/history clear", r"history cleared")
    term.command("/history", r"\n0 messages\n")
    second = term.command(
        "/reset", rf"session {first} ended; continuing in ({ID})"
    ).group(1)
    term.command("in the second", r"echo> in the second\n")
    third = term.command('/new "Side chat"', rf"new session ({ID}) 'Side chat'").group(
        1
    )
    listing = term.command("/session list", r"2 active sessions\n").string
    term.command(f"/session use {second}", rf"now in session {second}")
    term.command("//slash first", r"echo> //slash first\n")
    term.command(
        "/session idle-reset 90", r"echo> The session resets after 90 idle minutes\.\n"
    )
    term.command("/bogus", r"unknown command /bogus; /help lists the commands")
    term.command("/histroy", r"unknown command /histroy; did you mean /history\?")
    term.command("/checkpoint", r"usage: /checkpoint save")
    term.command('/checkpoint save "unclosed', r"cannot read that command")
    term.command("/help", r"/checkpoint restore ID\|NAME")
    term.expect(r"you> ")
    term.type("/quit")
    assert term.finish() == 0

    session_lines = listing[listing.rfind("/session list") :]
    assert f"\n  {second}  2 messages  last active " in session_lines
    assert f"\n* {third} 'Side chat'  0 messages  last active " in session_lines
    assert f"* {third} 'Side chat'" in session_lines
    assert first not in session_lines
    assert exported.read_text().startswith(f"# {first}")

    # --session continues a session; Ctrl-D leaves like /quit
    again = terminal("--db", str(db), "--session", second)
    again.expect(rf"session {second} \(agent echo\)")
    again.command("/history", r"\n6 messages\n")
    again.command("one more", r"echo> one more\n")
    again.expect(r"you> ")
    os.write(again.master, b"\x04")
    assert again.finish() == 0

    with Runtime(Settings(db=str(db))) as rt:
        old = rt.get(first)
        assert old["status"] == "ended"
        assert old["message_count"] == 0
        assert [c["id"] for c in rt.checkpoints(first)] == [saved]
        log = rt.events(first, limit=100)["events"]
        kinds = [e["type"] for e in log]
        assert kinds.count("checkpoint_saved") == 2
        assert "checkpoint_deleted" in kinds
        assert "rewound" in kinds
        assert "history_cleared" in kinds
        assert [
            e["data"]["content"] for e in log if e["type"] == "message_appended"
        ] == [
            "hello world",
            "hello world",
            "second message",
            "second message",
        ]
        assert [m["content"] for m in rt.messages(second)] == [
            "in the second",
            "in the second",
            "//slash first",
            "//slash first",
            "/session idle-reset 90",
            "The session resets after 90 idle minutes.",
            "one more",
            "one more",
        ]
        assert rt.get(second)["reset_policy"]["idle_minutes"] == 90
        assert rt.get(third)["name"] == "Side chat"
        assert rt.get(third)["message_count"] == 0
        active = {s["id"] for s in rt.list(status="active")["sessions"]}
        assert active == {second, third}


def test_chat_against_a_running_server(
    terminal: type[Terminal], server: ServerProcess
) -> None:
    term = terminal("--url", server.url, "--name", "chat: over HTTP")
    sid = term.expect(rf"session ({ID}) \(agent echo\)").group(1)
    term.command("over the wire", r"echo> over the wire\n")
    saved = term.command(
        '/checkpoint save "wire"', rf"saved checkpoint ({ID}) 'wire'"
    ).group(1)
    term.command("more", r"echo> more\n")
    term.command(f"/checkpoint restore {saved}", r"2 messages visible")
    term.command(
        "/session",
        rf"session {sid} 'chat: over HTTP'\n  agent echo, status active\n"
        r"  2 messages visible, 1 checkpoint, log at offset 9",
    )
    term.command("/history export", r"# chat: over HTTP")
    fresh = term.command("/reset", rf"continuing in ({ID})").group(1)
    term.expect(r"you> ")
    term.type("/quit")
    assert term.finish() == 0

    with Client(server.url) as client:
        assert client.get_session(sid)["status"] == "ended"
        assert [m["content"] for m in client.iter_history(sid)] == ["over the wire"] * 2
        assert [c["name"] for c in client.list_checkpoints(sid)] == ["wire"]
        assert client.get_session(fresh)["status"] == "active"


def test_chat_sends_its_api_key_and_reports_a_refused_one(
    terminal: type[Terminal], auth_server: ServerProcess
) -> None:
    term = terminal("--url", auth_server.url, "--api-key", ALICE_KEY)
    sid = term.expect(rf"session ({ID}) \(agent echo\)").group(1)
    term.command("keyed", r"echo> keyed\n")
    term.expect(r"you> ")
    term.type("/quit")
    assert term.finish() == 0
    with Client(auth_server.url, ALICE_KEY) as alice:
        assert alice.get_session(sid)["message_count"] == 2

    refused = terminal("--url", auth_server.url)
    refused.expect(r"sessiond chat: unauthorized: ")
    assert refused.finish() == 1


def test_chat_reports_a_server_it_cannot_reach(terminal: type[Terminal]) -> None:
    term = terminal("--url", "http://127.0.0.1:9")
    term.expect(r"sessiond chat: client_error: ")
    assert term.finish() == 1


def test_each_text_delta_is_written_and_flushed_as_it_arrives(tmp_path: Path) -> None:
    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recorder()
    with Runtime(Settings(db=str(tmp_path / "chat.db"))) as rt:
        chat = Chat(RuntimeBackend(rt), out=out)
        chat.start()
        chat.handle("one two three")
    reply = [text for text in out.flushed if "echo> " in text]
    assert reply[-1].endswith("echo> one two three\n")
    # the reply appeared piece by piece: a flush after each word
    assert [text.split("echo> ")[1] for text in reply] == [
        "",
        "one ",
        "one two ",
        "one two three",
        "one two three\n",
    ]


def test_tool_calls_are_named_and_a_reply_without_deltas_is_printed_whole(
    tmp_path: Path,
) -> None:
    class ToolingBackend(RuntimeBackend):
        def stream(self, session_id: str, content: str) -> Iterator[dict[str, Any]]:
            yield {"type": "message_start", "user_message": {"content": content}}
            for part in ('{"q":', ' "x"}'):
                yield {
                    "type": "input_json_delta",
                    "id": "c1",
                    "name": "search",
                    "partial_json": part,
                }
            yield {"type": "message_stop", "message": {"content": "found it"}}
            yield {"type": "done", "session": self.runtime.get(session_id)}

    out = io.StringIO()
    with Runtime(Settings(db=str(tmp_path / "chat.db"))) as rt:
        chat = Chat(ToolingBackend(rt), out=out)
        chat.start()
        chat.handle("look it up")
    assert out.getvalue().endswith("echo> [tool search] found it\n")
