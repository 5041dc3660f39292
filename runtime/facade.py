"""``Runtime``: the in-process API of sessiond, and the only one the gateway uses.

Every call carries a :class:`Principal` (a local one by default) and the facade
enforces ownership: a session owned by another principal does not exist for the
caller (``SessionNotFoundError``), whatever the call. Writes go to the session's
actor (the single writer); reads come from the views, which are written in the
same transaction as the events, so a read that follows an acknowledged write
always sees it.

``AsyncRuntime`` offers the same calls as coroutines that never block the event
loop (each call hops to a worker thread).
"""

from __future__ import annotations

from runtime.async_facade import AsyncRuntime
from runtime.calls_branches import BranchCalls, checkpoint_document
from runtime.calls_context import ContextCalls
from runtime.calls_lifecycle import LifecycleCalls
from runtime.calls_requests import RequestCalls
from runtime.calls_sessions import SessionCalls
from runtime.principal import LOCAL_PRINCIPAL, Principal
from runtime.turns import TurnCalls

__all__ = [
    "LOCAL_PRINCIPAL",
    "AsyncRuntime",
    "Principal",
    "Runtime",
    "checkpoint_document",
]


class Runtime(
    SessionCalls, TurnCalls, BranchCalls, LifecycleCalls, ContextCalls, RequestCalls
):
    """The synchronous in-process API; thread-safe. Use as a context manager, or
    call :meth:`close`.

    Its calls are grouped by subject in :mod:`runtime.calls_sessions`,
    :mod:`runtime.calls_messages`, :mod:`runtime.calls_branches`,
    :mod:`runtime.calls_lifecycle`, :mod:`runtime.calls_context`,
    :mod:`runtime.calls_requests` and
    :mod:`runtime.turns`, on the shared :mod:`runtime.core`.
    """
