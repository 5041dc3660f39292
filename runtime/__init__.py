"""The sessiond runtime: the ``Runtime`` facade, its settings and its errors."""

from __future__ import annotations

from runtime.agents import Agent, EchoAgent, FinalMessage, TextDelta, ToolCallDelta
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
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    RenewalRefusedError,
    RuntimeFault,
    SessionEndedError,
    SessionExistsError,
    SessionExpiredError,
    SessionNotFoundError,
    StorageUnavailableError,
    SummaryNotFoundError,
    TurnTimeoutError,
)
from runtime.facade import LOCAL_PRINCIPAL, AsyncRuntime, Principal, Runtime
from runtime.settings import AgentConfig, ConfigError, Settings
from runtime.tail import TailInterrupted

__all__ = [
    "LOCAL_PRINCIPAL",
    "ActorUnavailableError",
    "Agent",
    "AgentConfig",
    "AgentNotFoundError",
    "AsyncRuntime",
    "CheckpointNotFoundError",
    "Clock",
    "ConcurrencyConflictError",
    "ConfigError",
    "DomainError",
    "EchoAgent",
    "FakeClock",
    "FinalMessage",
    "InvalidRequestError",
    "NameTakenError",
    "OffsetConflictError",
    "OffsetOutOfRangeError",
    "Principal",
    "ProviderError",
    "ProviderRateLimitedError",
    "ProviderTimeoutError",
    "RenewalRefusedError",
    "Runtime",
    "RuntimeFault",
    "ScaledClock",
    "SessionEndedError",
    "SessionExistsError",
    "SessionExpiredError",
    "SessionNotFoundError",
    "Settings",
    "StorageUnavailableError",
    "SummaryNotFoundError",
    "SystemClock",
    "TailInterrupted",
    "TextDelta",
    "ToolCallDelta",
    "TurnTimeoutError",
]
