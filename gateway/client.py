"""A Python client for sessiond's native HTTP API (``/v1``), over httpx.

``Client`` is synchronous; ``AsyncClient`` offers the same calls as coroutines
(and async iterators for the streams). Resources come back as the JSON the
server sent (plain dicts); see ``reference/native-api.md`` for their fields.
This module speaks only HTTP: it needs nothing else of sessiond.

Writes take ``if_match=`` (sent as ``If-Match``: the offset the caller expects
the session to be at) and ``idempotency_key=`` (``Idempotency-Key``: a retry with
the same key returns the first result and writes nothing).

Errors::

    ClientError        the call failed: the server could not be reached, a stream
    │                  broke for good, or the answer was not what the API sends
    └── ApiError       the server answered with an error (problem+json): status,
                       code, detail and the context fields (current_offset, ...)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "ServerSentEvent",
    "TailEvent",
]

R = TypeVar("R")
JSON = dict[str, Any]
DEFAULT_TIMEOUT = 30.0
TAIL_RETRIES = 8
TAIL_BACKOFF = 0.1
TAIL_MAX_BACKOFF = 2.0
PAGE_LIMIT = 100
_UNSET: Any = object()
_PROBLEM_FIELDS = frozenset({"type", "title", "status", "code", "detail"})


class ClientError(Exception):
    """A call failed before the API could answer it (or its answer was unusable)."""

    def __init__(
        self, detail: str, *, status: int | None = None, code: str = "client_error"
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class ApiError(ClientError):
    """The server answered with an error: ``status``, its stable ``code``, the
    ``detail``, and every other field of the problem body in ``context``."""

    def __init__(
        self, status: int, code: str, detail: str, body: JSON | None = None
    ) -> None:
        super().__init__(detail, status=status, code=code)
        self.body: JSON = dict(body or {})
        self.title: str | None = self.body.get("title")
        self.context: JSON = {
            k: v for k, v in self.body.items() if k not in _PROBLEM_FIELDS
        }

    @property
    def current_offset(self) -> int | None:
        """The session's offset, on a ``conflict``."""
        value = self.context.get("current_offset")
        return value if isinstance(value, int) else None

    @property
    def expires_at(self) -> str | None:
        """When the session expired, on ``session_expired``."""
        value = self.context.get("expires_at")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


@dataclass(frozen=True)
class ServerSentEvent:
    """One message of a ``text/event-stream``."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        """The data, decoded from JSON (``ClientError`` when it is not JSON)."""
        try:
            return json.loads(self.data) if self.data else None
        except ValueError:
            msg = f"the server sent a {self.event!r} event whose data is not JSON"
            raise ClientError(msg) from None


@dataclass(frozen=True)
class TailEvent:
    """One item of a session's live tail.

    A recorded event of the log has its ``offset`` and ``data`` is the ``Event``
    resource (``{offset, type, at, data}``); a live turn delta has no offset and
    ``data`` is the turn event (``{type: "text_delta", ...}``). ``event`` is the
    SSE event name.
    """

    event: str
    data: Any
    offset: int | None = None


@dataclass
class _SSEDecoder:
    """The ``text/event-stream`` line protocol (WHATWG), fed one line at a time."""

    event: str = ""
    data: list[str] = field(default_factory=list)
    id: str | None = None
    seen_id: bool = False

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self.data and not self.event and not self.seen_id:
                return None
            message = ServerSentEvent(
                event=self.event or "message",
                data="\n".join(self.data),
                id=self.id if self.seen_id else None,
            )
            self.event, self.data, self.seen_id = "", [], False
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.id, self.seen_id = value, True
        return None


def _sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    decoder = _SSEDecoder()
    for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message


async def _asse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    decoder = _SSEDecoder()
    async for line in lines:
        message = decoder.feed(line)
        if message is not None:
            yield message


def _path(session_id: str, *rest: str) -> str:
    return "/".join(
        ["/v1/sessions", quote(session_id, safe=""), *(quote(p, safe="") for p in rest)]
    )


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, leaving out the unset ones."""
    found: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        found[key] = (
            ("true" if value else "false") if isinstance(value, bool) else value
        )
    return found


def _body(**values: Any) -> JSON:
    """A JSON body, leaving out the fields that were not given."""
    return {k: v for k, v in values.items() if v is not None and v is not _UNSET}


def _write_headers(if_match: int | None, idempotency_key: str | None) -> dict[str, str]:
    headers = {}
    if if_match is not None:
        headers["If-Match"] = str(if_match)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _error(response: httpx.Response) -> ApiError:
    """The error a non-2xx response stands for (its body must have been read)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    code = body.get("code") or f"http_{response.status_code}"
    detail = body.get("detail") or body.get("title") or response.reason_phrase
    return ApiError(response.status_code, str(code), str(detail), body)


def _decoded(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    if response.status_code == 204 or not response.content:
        return None
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type:
        return response.text
    try:
        return response.json()
    except ValueError:
        raise ClientError(
            f"the server sent invalid JSON ({response.status_code})",
            status=response.status_code,
        ) from None


def _turn_event(message: ServerSentEvent) -> JSON:
    """A turn event from its SSE message; an ``error`` event (a problem
    document) raises :class:`ApiError`."""
    data = message.json()
    if message.event == "error":
        problem: JSON = data if isinstance(data, dict) else {}
        raise ApiError(
            int(problem.get("status") or 500),
            str(problem.get("code") or "internal_error"),
            str(problem.get("detail") or "the turn failed"),
            problem,
        )
    event: JSON = data if isinstance(data, dict) else {"data": data}
    event.setdefault("type", message.event)
    return event


def _tail_event(message: ServerSentEvent) -> TailEvent:
    offset = int(message.id) if message.id and message.id.isdigit() else None
    return TailEvent(event=message.event, data=message.json(), offset=offset)


class _Resume:
    """Where a tail is, and whether (and when) it may reconnect.

    It yields a recorded event only when its offset is past the last one
    yielded, and gives up after ``retries`` attempts in a row that brought
    nothing new.
    """

    RETRY_STATUSES = frozenset({502, 503, 504})

    def __init__(
        self, session_id: str, after: int, retries: int, backoff: float
    ) -> None:
        self.session_id = session_id
        self.last = after
        self.attempts = 0
        self.failures = 0
        self.retries = retries
        self.backoff = backoff

    def headers(self) -> dict[str, str]:
        self.attempts += 1
        headers = {"Accept": "text/event-stream"}
        if self.attempts > 1:
            # As EventSource does: the same URL, and the last id seen.
            headers["Last-Event-ID"] = str(self.last)
        return headers

    def must_raise(self, response: httpx.Response) -> bool:
        return (
            response.status_code >= 400
            and response.status_code not in self.RETRY_STATUSES
        )

    @staticmethod
    def finished(response: httpx.Response) -> bool:
        """204: the session is no longer active and every event was sent."""
        return response.status_code == 204

    def accept(self, message: ServerSentEvent) -> TailEvent | None:
        if message.event == "ping":
            return None
        item = _tail_event(message)
        if item.offset is not None:
            if item.offset <= self.last:
                return None
            self.last = item.offset
        self.failures = 0
        return item

    def delay(self, cause: BaseException | None) -> float:
        """How long to wait before reconnecting; raises when out of retries."""
        self.failures += 1
        if self.failures > self.retries:
            msg = (
                f"the tail of {self.session_id} broke {self.failures} times in a row"
                f" at offset {self.last}"
            )
            raise ClientError(msg) from cause
        return float(min(TAIL_MAX_BACKOFF, self.backoff * 2 ** (self.failures - 1)))


class _Api(Generic[R]):
    """The calls of the API, written once: ``_call`` sends the request and returns
    the decoded answer (``Client``) or an awaitable of it (``AsyncClient``)."""

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: JSON | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        pick: str | None = None,
    ) -> R:
        raise NotImplementedError

    # --- sessions

    def create_session(
        self,
        agent_id: str = "echo",
        *,
        user_id: str | None = None,
        channel_id: str | None = None,
        peer_id: str | None = None,
        scope: str | None = None,
        group: bool | None = None,
        session_id: str | None = None,
        name: str | None = None,
        metadata: JSON | None = None,
        attributes: JSON | None = None,
        timeout: JSON | None = None,
        concurrency: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Create a session (with ``scope``: get or create the one for its key)."""
        body = _body(
            agent_id=agent_id,
            user_id=user_id,
            channel_id=channel_id,
            peer_id=peer_id,
            scope=scope,
            group=group,
            session_id=session_id,
            name=name,
            metadata=metadata,
            attributes=attributes,
            timeout=timeout,
            concurrency=concurrency,
        )
        headers = _write_headers(None, idempotency_key)
        return self._call("POST", "/v1/sessions", body=body, headers=headers)

    def get_session(self, session_id: str) -> R:
        """One ``Session``."""
        return self._call("GET", _path(session_id))

    def list_sessions(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        pinned: bool | None = None,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> R:
        """A page of sessions, newest first: ``{sessions, next_cursor, total}``."""
        params = _params(
            user_id=user_id,
            agent_id=agent_id,
            status=status,
            pinned=pinned,
            q=q,
            limit=limit,
            cursor=cursor,
        )
        return self._call("GET", "/v1/sessions", params=params)

    def update_session(
        self,
        session_id: str,
        *,
        name: str | None = _UNSET,
        pinned: bool | None = None,
        attributes: JSON | None = None,
        metadata: JSON | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Rename (``name=None`` clears it), pin, merge attributes, replace metadata."""
        body = _body(pinned=pinned, attributes=attributes, metadata=metadata)
        if name is not _UNSET:
            body["name"] = name
        headers = _write_headers(if_match, idempotency_key)
        return self._call("PATCH", _path(session_id), body=body, headers=headers)

    def delete_session(
        self,
        session_id: str,
        *,
        purge: bool = False,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """End the session; ``purge=True`` also makes its content unrecoverable."""
        params = _params(purge=True) if purge else None
        headers = _write_headers(if_match, idempotency_key)
        return self._call("DELETE", _path(session_id), params=params, headers=headers)

    # --- messages

    def send(
        self,
        session_id: str,
        content: str,
        *,
        role: str | None = None,
        attachments: list[Any] | None = None,
        metadata: JSON | None = None,
        timeout: float | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Send a message and wait for the reply: ``{user_message, reply,
        tool_calls, usage, steps, session}``. ``timeout`` bounds the turn (seconds)."""
        body = _body(
            content=content,
            role=role,
            attachments=attachments,
            metadata=metadata,
            timeout=timeout,
        )
        return self._call(
            "POST",
            _path(session_id, "messages"),
            body=body,
            headers=_write_headers(if_match, idempotency_key),
            timeout=timeout,
        )

    def submit(
        self,
        session_id: str,
        content: str,
        *,
        role: str | None = None,
        attachments: list[Any] | None = None,
        metadata: JSON | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Send a message without waiting (``?wait=false``): the recorded user
        ``Message``; the reply arrives on the session's tail."""
        body = _body(
            content=content, role=role, attachments=attachments, metadata=metadata
        )
        return self._call(
            "POST",
            _path(session_id, "messages"),
            params={"wait": "false"},
            body=body,
            headers=_write_headers(if_match, idempotency_key),
        )

    def history(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
        after: int | None = None,
        order: str | None = None,
    ) -> R:
        """A page of the visible history: ``{messages, has_more}`` (newest first
        unless ``order="asc"``; ``before``/``after`` are exclusive offsets)."""
        params = _params(limit=limit, before=before, after=after, order=order)
        return self._call("GET", _path(session_id, "messages"), params=params)

    def events(
        self, session_id: str, *, after: int | None = None, limit: int | None = None
    ) -> R:
        """A page of the session's log after ``after``: ``{events, has_more}``."""
        params = _params(after=after, limit=limit)
        return self._call("GET", _path(session_id, "events"), params=params)

    def state_at(self, session_id: str, offset: int | None = None) -> R:
        """The session as it was at ``offset`` (default: now)."""
        return self._call(
            "GET", _path(session_id, "state"), params=_params(offset=offset)
        )

    # --- branches

    def save_checkpoint(
        self,
        session_id: str,
        name: str,
        *,
        description: str | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Save a named checkpoint at the current offset: the ``Checkpoint``."""
        return self._call(
            "POST",
            _path(session_id, "checkpoints"),
            body=_body(name=name, description=description),
            headers=_write_headers(if_match, idempotency_key),
        )

    def list_checkpoints(self, session_id: str) -> R:
        """The session's checkpoints (a list of ``Checkpoint``)."""
        return self._call("GET", _path(session_id, "checkpoints"), pick="checkpoints")

    def restore_checkpoint(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Move the head back to a checkpoint (later messages stay in the log)."""
        return self._call(
            "POST",
            _path(session_id, "checkpoints", checkpoint_id, "restore"),
            headers=_write_headers(if_match, idempotency_key),
        )

    def delete_checkpoint(
        self,
        session_id: str,
        checkpoint_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Delete a checkpoint (the history it pointed at is untouched)."""
        return self._call(
            "DELETE",
            _path(session_id, "checkpoints", checkpoint_id),
            headers=_write_headers(if_match, idempotency_key),
        )

    def rewind(
        self,
        session_id: str,
        offset: int,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Move the head back to the visible history as of ``offset``."""
        return self._call(
            "POST",
            _path(session_id, "rewind"),
            body={"offset": offset},
            headers=_write_headers(if_match, idempotency_key),
        )

    def fork(
        self,
        session_id: str,
        *,
        offset: int | None = None,
        new_session_id: str | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """A new session whose history is this one's at ``offset`` (default: its
        head), with ``parent``; ``new_session_id`` chooses the fork's id."""
        return self._call(
            "POST",
            _path(session_id, "fork"),
            body=_body(offset=offset, session_id=new_session_id),
            headers=_write_headers(if_match, idempotency_key),
        )

    def branches(self, session_id: str) -> R:
        """The tree of the session's restores and forks."""
        return self._call("GET", _path(session_id, "branches"))

    def clear(
        self,
        session_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Empty the visible history; the session stays."""
        return self._call(
            "POST",
            _path(session_id, "clear"),
            headers=_write_headers(if_match, idempotency_key),
        )

    def reset(
        self,
        session_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """End the session and open a fresh one on its scope key; returns the
        new ``Session``."""
        return self._call(
            "POST",
            _path(session_id, "reset"),
            headers=_write_headers(if_match, idempotency_key),
        )

    def export(self, session_id: str, *, format: str = "json") -> R:
        """The session with its metadata: a dict for ``json``, a string for
        ``markdown`` and ``text``."""
        return self._call("GET", _path(session_id, "export"), params={"format": format})

    # --- lifecycle

    def heartbeat(
        self,
        session_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Record activity (renews the session when its policy auto-renews)."""
        return self._call(
            "POST",
            _path(session_id, "heartbeat"),
            headers=_write_headers(if_match, idempotency_key),
        )

    def renew(
        self,
        session_id: str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Renew now (``renewal_refused`` past the maximum duration)."""
        return self._call(
            "POST",
            _path(session_id, "renew"),
            headers=_write_headers(if_match, idempotency_key),
        )

    def update_timeout(
        self,
        session_id: str,
        *,
        timeout_minutes: int | None = None,
        auto_renew: bool | None = None,
        max_duration_minutes: int | None = None,
        warning_threshold_minutes: int | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Change only the named fields of the timeout policy."""
        body = _body(
            timeout_minutes=timeout_minutes,
            auto_renew=auto_renew,
            max_duration_minutes=max_duration_minutes,
            warning_threshold_minutes=warning_threshold_minutes,
        )
        return self._call(
            "PATCH",
            _path(session_id, "timeout"),
            body=body,
            headers=_write_headers(if_match, idempotency_key),
        )

    # --- operations

    def health(self) -> R:
        """``{status, store, live_actors, sessions_active, version}``; a 503 (the
        store is unreachable) is returned as its body, not raised."""
        return self._call("GET", "/v1/health")

    def metrics(self) -> R:
        """The Prometheus text of ``/metrics``."""
        return self._call("GET", "/metrics")


def _advanced(after: int | None, offset: int) -> int:
    """The next page's ``after``: it must move on, or paging would never end."""
    if after is not None and offset <= after:
        msg = f"the history did not advance past offset {after}"
        raise ClientError(msg)
    return offset


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _timeout(default: httpx.Timeout, turn: float | None) -> httpx.Timeout:
    if turn is None:
        return default
    # The server answers once the turn's own timeout passed; leave it room to.
    return httpx.Timeout(
        default.connect,
        read=turn + (default.read or 0),
        write=default.write,
        pool=default.pool,
    )


def _finish(response: httpx.Response, path: str, pick: str | None) -> Any:
    if path == "/v1/health" and response.status_code == 503:
        return response.json()
    decoded = _decoded(response)
    if pick is not None and isinstance(decoded, dict):
        return decoded[pick]
    return decoded


class Client(_Api[Any]):
    """The synchronous client. Use as a context manager, or call :meth:`close`.

    ``tail_retries`` and ``tail_backoff`` bound how a tail reconnects after its
    connection breaks (exponential backoff from ``tail_backoff`` seconds, capped at
    ``TAIL_MAX_BACKOFF``). ``transport`` is passed to httpx (tests, UDS).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tail_retries: int = TAIL_RETRIES,
        tail_backoff: float = TAIL_BACKOFF,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.tail_retries = tail_retries
        self.tail_backoff = tail_backoff
        self._http = httpx.Client(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: JSON | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        pick: str | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=body,
                headers=headers,
                timeout=_timeout(self._http.timeout, timeout),
            )
        except httpx.HTTPError as error:
            raise ClientError(f"{method} {path} failed: {error!r}") from error
        return _finish(response, path, pick)

    def iter_sessions(
        self, *, page_size: int = PAGE_LIMIT, **filters: Any
    ) -> Iterator[JSON]:
        """Every session matching ``filters`` (those of :meth:`list_sessions`),
        page after page."""
        cursor: str | None = None
        while True:
            page = self.list_sessions(limit=page_size, cursor=cursor, **filters)
            yield from page["sessions"]
            if page["next_cursor"] is None or page["next_cursor"] == cursor:
                return
            cursor = page["next_cursor"]

    def iter_history(
        self, session_id: str, *, page_size: int = PAGE_LIMIT
    ) -> Iterator[JSON]:
        """The whole visible history, oldest first, page after page."""
        after: int | None = None
        while True:
            page = self.history(session_id, limit=page_size, after=after, order="asc")
            yield from page["messages"]
            if not page["has_more"] or not page["messages"]:
                return
            after = _advanced(after, page["messages"][-1]["offset"])

    def stream_message(
        self,
        session_id: str,
        content: str,
        *,
        role: str | None = None,
        attachments: list[Any] | None = None,
        metadata: JSON | None = None,
        timeout: float | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> Iterator[JSON]:
        """Send a message and iterate the turn's events as they happen
        (``message_start``, ``text_delta``, ..., ``done``). The request is sent
        when iteration starts; an ``error`` event raises :class:`ApiError`."""
        body = _body(
            content=content,
            role=role,
            attachments=attachments,
            metadata=metadata,
            timeout=timeout,
        )
        headers = _write_headers(if_match, idempotency_key)
        headers["Accept"] = "text/event-stream"
        path = _path(session_id, "messages")
        try:
            with self._http.stream(
                "POST",
                path,
                json=body,
                headers=headers,
                timeout=_timeout(self._http.timeout, timeout),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                for message in _sse(response.iter_lines()):
                    if message.event == "ping":
                        continue
                    event = _turn_event(message)
                    yield event
                    if event["type"] == "done":
                        return
        except httpx.HTTPError as error:
            raise ClientError(f"POST {path} failed: {error!r}") from error

    def tail(self, session_id: str, after: int = 0) -> Iterator[TailEvent]:
        """Follow the session's log live from offset ``after``: recorded events
        (with their offset) and turn deltas, for as long as the caller iterates.

        When the connection breaks (a network fault, a server restart) the tail
        reconnects with ``Last-Event-ID`` set to the last offset it yielded, so no
        recorded event is skipped or repeated; it gives up with
        :class:`ClientError` after ``tail_retries`` attempts in a row that brought
        nothing new. It ends when the session is no longer active and every event
        was sent, or when the client is closed. The request is sent when
        iteration starts.
        """
        resume = _Resume(session_id, after, self.tail_retries, self.tail_backoff)
        path = _path(session_id, "events")
        while not self._http.is_closed:
            cause: BaseException | None = None
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params={"after": after},
                    headers=resume.headers(),
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None),
                ) as response:
                    if resume.must_raise(response):
                        response.read()
                        raise _error(response)
                    if resume.finished(response):
                        return
                    if response.status_code == 200:
                        for message in _sse(response.iter_lines()):
                            item = resume.accept(message)
                            if item is not None:
                                yield item
            except httpx.HTTPError as error:
                cause = error
            time.sleep(resume.delay(cause))


class AsyncClient(_Api[Awaitable[Any]]):
    """The same calls as :class:`Client`, as coroutines; the streams
    (:meth:`stream_message`, :meth:`tail`) and iterators are async iterators.
    Use as an async context manager, or await :meth:`aclose`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tail_retries: int = TAIL_RETRIES,
        tail_backoff: float = TAIL_BACKOFF,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tail_retries = tail_retries
        self.tail_backoff = tail_backoff
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: JSON | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        pick: str | None = None,
    ) -> Awaitable[Any]:
        async def call() -> Any:
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=_timeout(self._http.timeout, timeout),
                )
            except httpx.HTTPError as error:
                raise ClientError(f"{method} {path} failed: {error!r}") from error
            return _finish(response, path, pick)

        return call()

    async def iter_sessions(
        self, *, page_size: int = PAGE_LIMIT, **filters: Any
    ) -> AsyncIterator[JSON]:
        """Every session matching ``filters``, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_sessions(limit=page_size, cursor=cursor, **filters)
            for session in page["sessions"]:
                yield session
            if page["next_cursor"] is None or page["next_cursor"] == cursor:
                return
            cursor = page["next_cursor"]

    async def iter_history(
        self, session_id: str, *, page_size: int = PAGE_LIMIT
    ) -> AsyncIterator[JSON]:
        """The whole visible history, oldest first, page after page."""
        after: int | None = None
        while True:
            page = await self.history(
                session_id, limit=page_size, after=after, order="asc"
            )
            for message in page["messages"]:
                yield message
            if not page["has_more"] or not page["messages"]:
                return
            after = _advanced(after, page["messages"][-1]["offset"])

    async def stream_message(
        self,
        session_id: str,
        content: str,
        *,
        role: str | None = None,
        attachments: list[Any] | None = None,
        metadata: JSON | None = None,
        timeout: float | None = None,
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[JSON]:
        """:meth:`Client.stream_message` as an async iterator."""
        body = _body(
            content=content,
            role=role,
            attachments=attachments,
            metadata=metadata,
            timeout=timeout,
        )
        headers = _write_headers(if_match, idempotency_key)
        headers["Accept"] = "text/event-stream"
        path = _path(session_id, "messages")
        try:
            async with self._http.stream(
                "POST",
                path,
                json=body,
                headers=headers,
                timeout=_timeout(self._http.timeout, timeout),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                async for message in _asse(response.aiter_lines()):
                    if message.event == "ping":
                        continue
                    event = _turn_event(message)
                    yield event
                    if event["type"] == "done":
                        return
        except httpx.HTTPError as error:
            raise ClientError(f"POST {path} failed: {error!r}") from error

    async def tail(self, session_id: str, after: int = 0) -> AsyncIterator[TailEvent]:
        """:meth:`Client.tail` as an async iterator (same resume rules)."""
        resume = _Resume(session_id, after, self.tail_retries, self.tail_backoff)
        path = _path(session_id, "events")
        while not self._http.is_closed:
            cause: BaseException | None = None
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    params={"after": after},
                    headers=resume.headers(),
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None),
                ) as response:
                    if resume.must_raise(response):
                        await response.aread()
                        raise _error(response)
                    if resume.finished(response):
                        return
                    if response.status_code == 200:
                        async for message in _asse(response.aiter_lines()):
                            item = resume.accept(message)
                            if item is not None:
                                yield item
            except httpx.HTTPError as error:
                cause = error
            await asyncio.sleep(resume.delay(cause))
