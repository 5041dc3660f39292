"""A scriptable OpenAI chat-completions server on loopback, for tests.

It is a real HTTP/1.1 server (``ThreadingHTTPServer`` on ``127.0.0.1``, an
ephemeral port, one thread) that answers ``POST /v1/chat/completions`` from a
queue of scripted replies: streamed as server-sent events (``data: {...}`` then
``data: [DONE]``) when the request says ``stream: true``, else as one JSON
completion. It records every request (headers and JSON body) and whether the
client went away before the reply was over.

A reply can stream text in given pieces, stream tool calls split across chunks
(several calls, optionally interleaved), send usage (only when the request asks
for it with ``stream_options.include_usage``, as OpenAI does), answer an HTTP
error (429 with ``Retry-After``, 500, 400...), drop the connection without
answering or in the middle of the stream (``cut_after``), answer one JSON
completion to a streaming request (``as_json``), wait before answering until the
test opens a gate, or stall in the middle of the stream until released (or until
the client disconnects)::

    from tests.support.openai_server import OpenAIServer, error_reply, text_reply
    from tests.support.openai_server import tool_call, tool_reply

    with OpenAIServer() as server:
        server.script(
            error_reply(429, retry_after=0.01),
            text_reply(["Hel", "lo"], usage=(12, 2)),
            tool_reply(tool_call("call_1", "search", '{"q": "lyon"}', pieces=3)),
        )
        base_url = server.base_url            # http://127.0.0.1:PORT/v1
        ...                                   # point an agent at base_url
        first = server.wait_for_requests(1)[0]
        assert first.body["stream"] is True
        assert first.headers.get("authorization") is None

A reply with ``stall_after=n`` sends ``n`` chunks and then holds the stream
open until ``reply.release`` is set; ``request.disconnected`` is set when the
client closes the connection meanwhile (cancellation tests wait on it). When
the queue is empty the server answers 500 (``when_empty="error"``, the default)
or echoes the last user message (``when_empty="echo"``). ``route``, a function
of the request body, may answer a request itself instead of the queue (return a
:class:`Reply`, or ``None`` to leave it to the queue): a test that cannot know
when a side request comes (a context summary) answers it by what it asks.

It also runs as a process, for tests that kill the process using it::

    python -m tests.support.openai_server --port 0 --script script.json

prints ``listening on http://127.0.0.1:PORT/v1`` once it accepts requests. The
script file is ``{"replies": [...], "when_empty": "echo"}`` where each reply is
the JSON form :func:`reply_from_json` reads. While it runs, ``POST
/_control/replies`` (``{"replies": [...]}``) appends replies, ``POST
/_control/release`` opens every gate and stall, and ``GET /_control/requests``
lists the recorded requests. :func:`running_process` starts and stops one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOLD_LIMIT = 30.0
"""The longest a gate or a stall holds a reply (so a failing test cannot hang)."""

POLL = 0.01
"""How often a held reply looks for a client that went away."""

MODEL = "test-model"


@dataclass(frozen=True)
class ToolCallScript:
    """One tool call of a reply, its arguments in the pieces to stream."""

    call_id: str
    name: str
    pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        """The whole JSON text of the arguments."""
        return "".join(self.pieces)


def tool_call(
    call_id: str, name: str, arguments: str, pieces: int = 1
) -> ToolCallScript:
    """A tool call whose ``arguments`` stream in ``pieces`` about equal parts."""
    size = max(1, -(-len(arguments) // pieces))
    parts = tuple(arguments[i : i + size] for i in range(0, len(arguments), size))
    return ToolCallScript(call_id, name, parts or ("",))


@dataclass
class Reply:
    """One scripted answer to one request."""

    pieces: Sequence[str] = ()
    tool_calls: Sequence[ToolCallScript] = ()
    interleave: bool = False
    """Stream the calls' argument pieces round-robin instead of call by call."""
    finish_reason: str | None = None
    """Default: ``tool_calls`` if the reply calls tools, else ``stop``."""
    usage: tuple[int, int] | None = None
    """``(prompt_tokens, completion_tokens)``; ``None``: no usage is sent."""
    chunks: Sequence[Mapping[str, Any]] | None = None
    """Raw stream payloads, sent instead of the ones built from the above."""
    status: int = 200
    body: Any = None
    """The JSON body of an error reply."""
    headers: Mapping[str, str] = field(default_factory=dict)
    done: bool = True
    """End the stream with ``data: [DONE]``."""
    drop: bool = False
    """Close the connection without answering."""
    cut_after: int | None = None
    """Close the connection after this many chunks (a failure mid-stream)."""
    as_json: bool = False
    """Answer one JSON completion even to a streaming request."""
    gate: threading.Event | None = None
    """If given, nothing is sent before it is set."""
    stall_after: int | None = None
    """Hold the stream after this many chunks until ``release`` is set."""
    release: threading.Event = field(default_factory=threading.Event)
    model: str = MODEL

    @property
    def text(self) -> str:
        """The reply's whole text."""
        return "".join(self.pieces)

    def stream_chunks(self, include_usage: bool) -> list[Mapping[str, Any]]:
        """The payloads of the streamed reply, in order."""
        if self.chunks is not None:
            return list(self.chunks)
        chunks: list[Mapping[str, Any]] = [
            self._chunk({"role": "assistant", "content": ""})
        ]
        chunks.extend(self._chunk({"content": piece}) for piece in self.pieces)
        for index, call in enumerate(self.tool_calls):
            head = {
                "index": index,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            chunks.append(self._chunk({"tool_calls": [head]}))
            if not self.interleave:
                chunks.extend(self._argument_chunks(index, call.pieces))
        if self.interleave:
            longest = max((len(call.pieces) for call in self.tool_calls), default=0)
            for position in range(longest):
                for index, call in enumerate(self.tool_calls):
                    if position < len(call.pieces):
                        chunks.extend(
                            self._argument_chunks(index, [call.pieces[position]])
                        )
        chunks.append(self._chunk({}, finish_reason=self.final_reason))
        if include_usage and self.usage is not None:
            chunks.append(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "model": self.model,
                    "choices": [],
                    "usage": self._usage(),
                }
            )
        return chunks

    def completion(self) -> Mapping[str, Any]:
        """The reply as one (non-streamed) completion."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        document: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.final_reason}
            ],
        }
        if self.usage is not None:
            document["usage"] = self._usage()
        return document

    @property
    def final_reason(self) -> str:
        """The ``finish_reason`` the reply ends with."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def _argument_chunks(
        self, index: int, pieces: Sequence[str]
    ) -> list[Mapping[str, Any]]:
        return [
            self._chunk(
                {"tool_calls": [{"index": index, "function": {"arguments": p}}]}
            )
            for p in pieces
        ]

    def _chunk(
        self, delta: Mapping[str, Any], finish_reason: str | None = None
    ) -> Mapping[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def _usage(self) -> Mapping[str, int]:
        assert self.usage is not None
        prompt, completion = self.usage
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


_WORDS = re.compile(r"\S+\s*|\s+")


def text_reply(
    text: str | Sequence[str],
    *,
    usage: tuple[int, int] | None = (10, 5),
    **options: Any,
) -> Reply:
    """A text reply streamed in ``text``'s pieces (a string: word by word)."""
    pieces = _WORDS.findall(text) if isinstance(text, str) else list(text)
    return Reply(pieces=pieces, usage=usage, **options)


def tool_reply(
    *calls: ToolCallScript,
    text: str | Sequence[str] = (),
    usage: tuple[int, int] | None = (20, 8),
    **options: Any,
) -> Reply:
    """A reply that calls ``calls`` (after ``text``, if any)."""
    pieces = _WORDS.findall(text) if isinstance(text, str) else list(text)
    return Reply(pieces=pieces, tool_calls=calls, usage=usage, **options)


def error_reply(
    status: int,
    *,
    retry_after: float | str | None = None,
    code: str | None = None,
    message: str = "scripted failure",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An HTTP error with an OpenAI-style body (and ``Retry-After`` if given)."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    error_type = "rate_limit_error" if status == 429 else "server_error"
    body = {"error": {"message": message, "type": error_type, "code": code}}
    return Reply(status=status, body=body, headers=all_headers)


def dropped() -> Reply:
    """Close the connection without answering (a connection failure)."""
    return Reply(drop=True)


def reply_from_json(spec: Mapping[str, Any]) -> Reply:
    """A reply from its JSON form (script files, ``/_control/replies``).

    ``{"text": "..."}`` or ``{"pieces": [...]}``; ``{"tool_calls": [{"id",
    "name", "arguments", "pieces"}]}``; ``{"error": 429, "retry_after": 1}``;
    ``{"drop": true}``. Options: ``usage`` (``[prompt, completion]`` or
    ``null``), ``finish_reason``, ``stall_after``, ``cut_after``, ``gated`` (wait for
    ``/_control/release``), ``done``, ``interleave``.
    """
    if "error" in spec:
        return error_reply(
            int(spec["error"]),
            retry_after=spec.get("retry_after"),
            code=spec.get("code"),
        )
    if spec.get("drop"):
        return dropped()
    pieces = spec.get("pieces")
    if pieces is None:
        pieces = _WORDS.findall(str(spec.get("text", "")))
    usage = spec.get("usage", [10, 5])
    return Reply(
        pieces=list(pieces),
        tool_calls=[
            tool_call(c["id"], c["name"], c["arguments"], int(c.get("pieces", 1)))
            for c in spec.get("tool_calls", ())
        ],
        interleave=bool(spec.get("interleave", False)),
        finish_reason=spec.get("finish_reason"),
        usage=None if usage is None else (int(usage[0]), int(usage[1])),
        done=bool(spec.get("done", True)),
        stall_after=spec.get("stall_after"),
        cut_after=spec.get("cut_after"),
        gate=threading.Event() if spec.get("gated") else None,
    )


@dataclass
class RecordedRequest:
    """One request the server received."""

    path: str
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: Any
    client_port: int = 0
    """The client's port (the same on a reused connection)."""
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when the client went away before the reply was over."""
    answered: threading.Event = field(default_factory=threading.Event)
    """Set when the server is done with the request (whole reply sent, or not)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``/_control/requests`` lists."""
        return {
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body,
            "client_port": self.client_port,
            "disconnected": self.disconnected.is_set(),
            "answered": self.answered.is_set(),
        }


class OpenAIServer:
    """The server; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        port: int = 0,
        when_empty: str = "error",
        route: Callable[[Any], Reply | None] | None = None,
    ) -> None:
        if when_empty not in ("error", "echo"):
            raise ValueError("when_empty is error or echo")
        self.when_empty = when_empty
        self.route = route
        self._replies: deque[Reply] = deque()
        self._held: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._changed = threading.Condition()
        self.closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The base URL an agent is configured with (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release every held reply and stop serving."""
        self.closing.set()
        self.release_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order, one per request."""
        with self._changed:
            self._replies.extend(replies)

    def release_all(self) -> None:
        """Open every gate and end every stall, now and for queued replies."""
        with self._changed:
            for reply in [*self._held, *self._replies]:
                reply.release.set()
                if reply.gate is not None:
                    reply.gate.set()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, in order."""
        with self._changed:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._changed:
            return len(self._replies)

    def wait_for_requests(
        self, count: int, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """The first ``count`` requests, once they arrived (``TimeoutError`` if not)."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: len(self._requests) >= count, timeout
            ):
                msg = f"{len(self._requests)} of {count} requests arrived"
                raise TimeoutError(msg)
            return list(self._requests[:count])

    def _take(self, request: RecordedRequest) -> Reply:
        routed = self.route(request.body) if self.route is not None else None
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            if routed is not None:
                return routed
            if self._replies:
                reply = self._replies.popleft()
                self._held.append(reply)
                return reply
        if self.when_empty == "echo":
            return _echo(request.body)
        return error_reply(500, code="script_exhausted", message="no scripted reply")


def _echo(body: Any) -> Reply:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    last = next(
        (m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    words = len(str(last).split())
    return text_reply(str(last), usage=(words, words))


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # each chunk goes out when written, as a model server's tokens do
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read what they need from the recorded requests

        def do_GET(self) -> None:
            if self.path == "/_control/requests":
                self._json(200, [r.to_json() for r in server.requests])
            else:
                self._json(404, {"error": {"message": "no such route"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if self.path == "/_control/replies":
                replies = body["replies"] if isinstance(body, dict) else []
                server.script(*(reply_from_json(r) for r in replies))
                self._json(200, {"pending": server.pending})
                return
            if self.path == "/_control/release":
                server.release_all()
                self._json(200, {})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": "no such route"}})
                return
            request = RecordedRequest(
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_port=int(self.client_address[1]),
            )
            reply = server._take(request)
            try:
                self._answer(request, reply)
            except (BrokenPipeError, ConnectionResetError):
                request.disconnected.set()
                self.close_connection = True
            finally:
                request.answered.set()

        def _answer(self, request: RecordedRequest, reply: Reply) -> None:
            if reply.gate is not None and not self._hold(request, reply.gate):
                return
            if reply.drop:
                self._cut()
                return
            if reply.status >= 400:
                self._json(reply.status, reply.body, reply.headers)
                return
            body = request.body if isinstance(request.body, dict) else {}
            if reply.as_json or not body.get("stream"):
                self._json(200, reply.completion(), reply.headers)
                return
            options = body.get("stream_options") or {}
            chunks = reply.stream_chunks(bool(options.get("include_usage")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            for number, chunk in enumerate(chunks):
                if number == reply.cut_after:
                    self._cut()
                    return
                if (
                    reply.stall_after is not None
                    and number == reply.stall_after
                    and not self._hold(request, reply.release)
                ):
                    return
                self._write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if (
                reply.stall_after is not None
                and reply.stall_after >= len(chunks)
                and not self._hold(request, reply.release)
            ):
                return
            if reply.done:
                self._write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _cut(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _write(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _hold(self, request: RecordedRequest, until: threading.Event) -> bool:
            """Wait for ``until``; ``False`` if the client left first (or the
            hold limit passed: the connection is then closed)."""
            waited = 0.0
            while not until.wait(POLL):
                if server.closing.is_set() or self._client_left():
                    request.disconnected.set()
                    self.close_connection = True
                    return False
                waited += POLL
                if waited > HOLD_LIMIT:
                    self.close_connection = True
                    return False
            return True

        def _client_left(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
            except OSError:
                return True

        def _json(
            self, status: int, document: Any, headers: Mapping[str, str] | None = None
        ) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def running_process(
    script: Mapping[str, Any], directory: Path, timeout: float = 20.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run the server as a process on ``script``; yields ``(process, base_url)``
    and stops it afterwards."""
    path = directory / "openai-script.json"
    path.write_text(json.dumps(script))
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--port",
            "0",
            "--script",
            str(path),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            msg = "the OpenAI test server did not start"
            raise RuntimeError(msg)
        yield process, line.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a script file until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.openai_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", type=Path)
    parser.add_argument("--when-empty", choices=("error", "echo"))
    args = parser.parse_args(argv)
    script: dict[str, Any] = {}
    if args.script is not None:
        script = json.loads(args.script.read_text())
    when_empty = args.when_empty or script.get("when_empty", "error")
    server = OpenAIServer(port=args.port, when_empty=when_empty)
    server.script(*(reply_from_json(r) for r in script.get("replies", ())))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        print(f"listening on {server.base_url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
