"""The sessiond runtime: the ``Runtime`` facade, its settings and its errors."""

from __future__ import annotations

from runtime.agents import (
    Agent,
    EchoAgent,
    FinalMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from runtime.clock import Clock, FakeClock, ScaledClock, SystemClock
from runtime.errors import (
    ActorUnavailableError,
    AgentNotFoundError,
    CheckpointNotFoundError,
    ConcurrencyConflictError,
    DomainError,
    InvalidRequestError,
    NameTakenError,
    OffsetConflictError,
    OffsetOutOfRangeError,
    RenewalRefusedError,
    RuntimeFault,
    SessionBusyError,
    SessionEndedError,
    SessionExistsError,
    SessionExpiredError,
    SessionNotFoundError,
    StorageUnavailableError,
    TurnCancelledError,
    TurnFailedError,
    TurnTimeoutError,
)
from runtime.facade import LOCAL_PRINCIPAL, AsyncRuntime, Principal, Runtime
from runtime.settings import AgentConfig, Settings
from runtime.tools import ToolContext, ToolError
from runtime.turn_control import CancelToken

__all__ = [
    "LOCAL_PRINCIPAL",
    "ActorUnavailableError",
    "Agent",
    "AgentConfig",
    "AgentNotFoundError",
    "AsyncRuntime",
    "CancelToken",
    "CheckpointNotFoundError",
    "Clock",
    "ConcurrencyConflictError",
    "DomainError",
    "EchoAgent",
    "FakeClock",
    "FinalMessage",
    "InvalidRequestError",
    "NameTakenError",
    "OffsetConflictError",
    "OffsetOutOfRangeError",
    "Principal",
    "RenewalRefusedError",
    "Runtime",
    "RuntimeFault",
    "ScaledClock",
    "SessionBusyError",
    "SessionEndedError",
    "SessionExistsError",
    "SessionExpiredError",
    "SessionNotFoundError",
    "Settings",
    "StorageUnavailableError",
    "SystemClock",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolContext",
    "ToolError",
    "ToolSpec",
    "TurnCancelledError",
    "TurnFailedError",
    "TurnTimeoutError",
]
