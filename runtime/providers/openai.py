"""``OpenAIAgent``: one model step against any OpenAI-compatible server.

A step is one ``POST {base_url}/chat/completions`` with ``stream: true``; its
server-sent chunks become :class:`TextDelta` and :class:`ToolCallDelta` as they
arrive, then one :class:`FinalMessage` (text, complete tool calls, usage,
stop reason). A server that ignores ``stream`` and answers one JSON completion is
understood too.

Failures:

- 429, 5xx and connection failures are retried with exponential backoff and
  jitter (honouring ``Retry-After``), at most ``max_attempts`` requests, and only
  while nothing has been streamed: once a token reached the caller, a retry
  would stream a different answer after it, so the step fails instead.
- A read timeout (the server connected but went silent) is not retried: the
  request may still be running upstream.
- Other 4xx are not retried.

Every failure is a :class:`ProviderError` whose text holds the agent id, the
HTTP status and at most a short error code of the server's: never the request,
the response's content, the URL or the API key.

Closing the generator ``run`` returns (``close()``) closes the HTTP response,
which drops the connection, so the server sees the client go away. A step
blocked on a silent stream cannot be closed (its generator is running); its
``abort()``, callable from any thread, shuts the response's socket down, so
the read returns at once, the server sees the disconnect and nothing is retried.
A step still waiting for the response's headers is released when they arrive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random as _random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from runtime.agents import AgentOutput, ToolSpec
from runtime.errors import ProviderError, ProviderRateLimitedError, ProviderTimeoutError
from runtime.providers.openai_wire import (
    StepAssembler,
    estimate_input_tokens,
    request_messages,
    request_tools,
)
from runtime.providers.retry import backoff_delay, retry_after_seconds
from runtime.providers.sse import sse_data
from runtime.settings import AgentConfig

logger = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 16 * 1024
"""How much of an error response is read (for its error code)."""

USER_AGENT = "sessiond"

# An upstream error code is quoted only if it looks like an identifier:
# free text from the server may quote the prompt.
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class _Retryable(Exception):
    """A failed attempt that may be tried again (before anything streamed)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.detail)
        self.error = error


class OpenAIAgent:
    """An :class:`~runtime.agents.Agent` over the chat-completions API.

    One pooled ``httpx.Client`` per agent, shared by the turns of every session
    (it is thread-safe); :meth:`close` closes it. ``transport``, ``sleep`` and
    ``random`` are for tests (an in-memory transport, instant or recorded waits,
    fixed jitter).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if config.base_url is None or config.model is None:
            msg = f"agent {config.id!r}: the openai provider needs model and base_url"
            raise ValueError(msg)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._random = random
        headers = {"user-agent": USER_AGENT}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_seconds,
                read=config.read_timeout_seconds,
                write=config.read_timeout_seconds,
                pool=config.connect_timeout_seconds,
            ),
            # turns are what bounds concurrency; keep a few connections warm
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool (the runtime calls this on shutdown)."""
        self._client.close()

    def request_body(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The JSON body of the request for the step after ``history``."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": request_messages(history, self.config.system_prompt),
            **self.config.params,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = request_tools(tools)
        return body

    def run(
        self, history: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Iterator[AgentOutput]:
        """Stream the next step after ``history``; it may call any of ``tools``."""
        body = self.request_body(history, tools)
        upstream = _Upstream()
        return _Step(
            self._step(body, estimate_input_tokens(body["messages"]), upstream),
            upstream,
        )

    def _step(
        self, body: dict[str, Any], input_estimate: int, upstream: _Upstream
    ) -> Iterator[AgentOutput]:
        attempt = 0
        while True:
            attempt += 1
            assembler = StepAssembler(_new_call_id)
            try:
                yield from self._attempt(body, assembler, input_estimate, upstream)
                return
            except _Retryable as failure:
                error = failure.error
            if upstream.aborted or attempt >= self.config.max_attempts:
                raise error
            delay = self._delay(attempt, error)
            if delay is None:
                raise error
            logger.info(
                "model request failed; retrying",
                extra={
                    "agent_id": self.config.id,
                    "attempt": attempt,
                    "status": error.status,
                    "code": error.code,
                    "delay": round(delay, 3),
                },
            )
            self._sleep(delay)

    def _delay(self, attempt: int, error: ProviderError) -> float | None:
        """The wait before the next attempt; ``None`` when the server asked for
        a longer wait than ``backoff_cap_seconds`` (not worth holding a turn)."""
        cap = self.config.backoff_cap_seconds
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= cap else None
        return backoff_delay(attempt, self.config.backoff_seconds, cap, self._random)

    def _attempt(
        self,
        body: dict[str, Any],
        assembler: StepAssembler,
        input_estimate: int,
        upstream: _Upstream,
    ) -> Iterator[AgentOutput]:
        """One request. Raises ``_Retryable`` for a failure that may be retried
        (nothing was streamed yet), ``ProviderError`` for one that may not."""
        try:
            with (
                self._client.stream("POST", self.url, json=body) as response,
                upstream.holding(response),
            ):
                if response.status_code >= 400:
                    raise self._status_error(response)
                if "text/event-stream" in response.headers.get("content-type", ""):
                    yield from self._events(response, assembler, input_estimate)
                else:
                    yield from self._whole(response, assembler, input_estimate)
        except httpx.TimeoutException as timeout:
            raise self._timeout_error(timeout, assembler) from None
        except httpx.TransportError as failure:
            error = ProviderError(
                f"agent {self.config.id!r}: the connection to the model server "
                f"failed ({type(failure).__name__})",
                agent_id=self.config.id,
            )
            if assembler.streamed_anything:
                raise error from None
            raise _Retryable(error) from None

    def _events(
        self, response: httpx.Response, assembler: StepAssembler, input_estimate: int
    ) -> Iterator[AgentOutput]:
        done = False
        for data in sse_data(response.iter_lines()):
            if data.strip() == "[DONE]":
                # keep reading to the end of the body: the connection goes
                # back to the pool instead of being dropped
                done = True
                continue
            if done:
                continue
            chunk = self._chunk(data)
            yield from assembler.feed(chunk)
        if not done and assembler.finish_reason is None:
            error = ProviderError(
                f"agent {self.config.id!r}: the model server's stream ended early",
                agent_id=self.config.id,
                status=response.status_code,
            )
            if assembler.streamed_anything:
                raise error
            raise _Retryable(error)
        yield assembler.final(input_estimate)

    def _whole(
        self, response: httpx.Response, assembler: StepAssembler, input_estimate: int
    ) -> Iterator[AgentOutput]:
        """A server that answered one JSON completion instead of a stream."""
        yield from assembler.feed(self._chunk(response.read().decode()))
        yield assembler.final(input_estimate)

    def _chunk(self, data: str) -> Mapping[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            msg = f"agent {self.config.id!r}: the model server sent malformed JSON"
            raise ProviderError(msg, agent_id=self.config.id)
        if chunk.get("error"):
            code = _safe_code(chunk["error"])
            msg = f"agent {self.config.id!r}: the model server reported an error"
            raise ProviderError(
                msg + (f" ({code})" if code else ""), agent_id=self.config.id
            )
        return chunk

    def _status_error(self, response: httpx.Response) -> Exception:
        """The error of an HTTP error response: ``_Retryable`` for 429 and 5xx."""
        status = response.status_code
        code = _safe_code(_error_document(response))
        detail = f"agent {self.config.id!r}: the model server answered {status}"
        if code:
            detail += f" ({code})"
        retry_after = retry_after_seconds(response.headers)
        if status == 429:
            return _Retryable(
                ProviderRateLimitedError(
                    detail,
                    agent_id=self.config.id,
                    status=status,
                    retry_after=retry_after,
                )
            )
        error = ProviderError(
            detail,
            agent_id=self.config.id,
            status=status,
            retry_after=retry_after if status >= 500 else None,
        )
        return _Retryable(error) if status >= 500 else error

    def _timeout_error(
        self, timeout: httpx.TimeoutException, assembler: StepAssembler
    ) -> Exception:
        config = self.config
        if isinstance(timeout, httpx.ReadTimeout):
            # connected and silent: the request may still run upstream
            return ProviderTimeoutError(
                f"agent {config.id!r}: the model server sent nothing for "
                f"{config.read_timeout_seconds:g} s",
                agent_id=config.id,
            )
        error = ProviderTimeoutError(
            f"agent {config.id!r}: the model server did not accept the request "
            f"within {config.connect_timeout_seconds:g} s",
            agent_id=config.id,
        )
        return error if assembler.streamed_anything else _Retryable(error)


class _Upstream:
    """The response a step is reading, so another thread can cut it off."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self.aborted = False

    @contextlib.contextmanager
    def holding(self, response: httpx.Response) -> Iterator[None]:
        """While the step reads ``response`` (cut at once if it was aborted).

        Let go before the response is closed: its connection then goes back to
        the pool, where another request may take it, and must not be cut."""
        with self._lock:
            self._response = response
            if self.aborted:
                _shut_down(response)
        try:
            yield
        finally:
            with self._lock:
                self._response = None

    def abort(self) -> None:
        """Stop the step: no more attempts, and the current response's
        connection is shut down (a read blocked on it returns at once)."""
        with self._lock:
            self.aborted = True
            if self._response is not None:
                _shut_down(self._response)


def _shut_down(response: httpx.Response) -> None:
    # ``shutdown`` (unlike ``close``) wakes a thread blocked reading the socket;
    # the connection is then dropped from the pool as broken.
    stream = response.extensions.get("network_stream")
    raw = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


class _Step(Iterator[AgentOutput]):
    """The iterator ``OpenAIAgent.run`` returns: the step's generator, plus
    ``abort()`` for a caller that must not wait for the next chunk."""

    def __init__(self, outputs: Iterator[AgentOutput], upstream: _Upstream) -> None:
        self._outputs = outputs
        self._upstream = upstream

    def __next__(self) -> AgentOutput:
        return next(self._outputs)

    def close(self) -> None:
        """Close the generator (releases the response when it is not running)."""
        close = getattr(self._outputs, "close", None)
        if close is not None:
            close()

    def abort(self) -> None:
        """Cut the step off from any thread (see the module docstring)."""
        self._upstream.abort()


def _error_document(response: httpx.Response) -> Any:
    """The JSON of an error response's body (read up to ``ERROR_BODY_LIMIT``)."""
    data = bytearray()
    try:
        for part in response.iter_bytes():
            data.extend(part)
            if len(data) >= ERROR_BODY_LIMIT:
                break
        return json.loads(bytes(data))
    except (httpx.HTTPError, ValueError):
        return None


def _safe_code(document: Any) -> str | None:
    """A short identifier-like error code from an OpenAI-style error body."""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(document, dict) and not isinstance(error, dict):
        error = document  # an ``error`` chunk's own object
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and _SAFE_CODE.match(value):
            return value
    return None


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
