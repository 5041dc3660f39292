"""``Settings``: the one frozen configuration object, read once at start-up.

Nothing else in sessiond reads ``os.environ``. Values come from (lowest first)
defaults, the TOML config file, and the environment (``SESSIOND_*``, plus the
``SESSION_*_MINUTES`` timeout variables every surface shares). Agents come from
``[agents.<id>]`` tables and from ``SESSIOND_OPENAI_BASE_URL`` with
``SESSIOND_OPENAI_MODEL``; their API keys are read here, from the variables
their ``api_key_env`` names. An invalid configuration raises ``ConfigError``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aggregates.values import TimeoutLimits
from runtime.clock import Clock, ScaledClock, SystemClock

DEFAULT_DB = "./sessiond.db"
ECHO_AGENT_ID = "echo"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the agent and the field
    (never a secret's value)."""


PROVIDERS = ("echo", "openai", "python")
"""``python`` marks an agent registered in process (``AgentRegistry.register``)."""

_NUMBER = (int, float)

# The sampling parameters passed through to an OpenAI-compatible server, each
# with the check its value must pass. Anything else in an agent table is not
# sent: a typo must not become a request field some servers reject.
SAMPLING_PARAMS: Mapping[str, tuple[str, Any]] = {
    "temperature": ("a number", lambda v: _is_number(v)),
    "top_p": ("a number", lambda v: _is_number(v)),
    "top_k": ("an integer", lambda v: _is_int(v)),
    "min_p": ("a number", lambda v: _is_number(v)),
    "max_tokens": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "max_completion_tokens": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "stop": (
        "a string or a list of strings",
        lambda v: (
            isinstance(v, str)
            or (isinstance(v, list | tuple) and all(isinstance(x, str) for x in v))
        ),
    ),
    "seed": ("an integer", lambda v: _is_int(v)),
    "presence_penalty": ("a number", lambda v: _is_number(v)),
    "frequency_penalty": ("a number", lambda v: _is_number(v)),
    "logit_bias": (
        "a table of numbers",
        lambda v: isinstance(v, Mapping) and all(_is_number(x) for x in v.values()),
    ),
    "user": ("a string", lambda v: isinstance(v, str)),
    "parallel_tool_calls": ("true or false", lambda v: isinstance(v, bool)),
    "tool_choice": (
        "a string or a table",
        lambda v: isinstance(v, str | Mapping),
    ),
    "reasoning_effort": ("a string", lambda v: isinstance(v, str)),
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


CONTEXT_STRATEGIES = ("recent", "smart", "summarize")


@dataclass(frozen=True)
class ContextConfig:
    """An agent's context window (``context = {...}`` in ``[agents.<id>]``).

    The agent sees at most ``max_tokens - reserve_output_tokens`` tokens of
    history (its system prompt counted), measured by the token ``counter``
    (``heuristic``, ``words``, a name given to ``Runtime.register_token_counter``
    or a ``module:attribute`` import path), chosen by ``strategy`` (see
    :mod:`runtime.window`). ``summary_tokens`` is the room the ``summarize``
    strategy keeps for its summary; at most the ``max_messages`` most recent
    messages are considered.
    """

    strategy: str = "recent"
    max_tokens: int = 8192
    reserve_output_tokens: int = 1024
    counter: str = "heuristic"
    summary_tokens: int = 512
    max_messages: int = 1000

    @property
    def budget(self) -> int:
        """The tokens the history may take (before the system prompt)."""
        return self.max_tokens - self.reserve_output_tokens

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ContextConfig:
        """Build from the ``context`` table; a bad value is a ``ValueError``."""
        if not isinstance(table, Mapping):
            msg = "context must be a table"
            raise ValueError(msg)
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - names)
        if unknown:
            msg = f"unknown context keys: {', '.join(unknown)}"
            raise ValueError(msg)
        config = cls(**dict(table))
        config.check()
        return config

    def check(self) -> None:
        """Refuse values that cannot work (``ValueError``)."""
        if self.strategy not in CONTEXT_STRATEGIES:
            msg = f"context strategy must be one of {', '.join(CONTEXT_STRATEGIES)}"
            raise ValueError(msg)
        for name in ("max_tokens", "summary_tokens", "max_messages"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"context {name} must be a positive integer"
                raise ValueError(msg)
        reserve = self.reserve_output_tokens
        if not isinstance(reserve, int) or not 0 <= reserve < self.max_tokens:
            msg = "context reserve_output_tokens must be within 0..max_tokens - 1"
            raise ValueError(msg)
        if not isinstance(self.counter, str) or not self.counter:
            msg = "context counter must be a name"
            raise ValueError(msg)


@dataclass(frozen=True)
class AgentConfig:
    """One configured agent, checked when it is made (``ConfigError`` names the
    agent and the field).

    ``api_key`` is read once, by ``Settings.from_env``, from the environment
    variable ``api_key_env`` names; it is never shown in ``repr`` or compared.
    The request settings (timeouts, attempts, backoff) apply to ``openai``.
    """

    id: str
    provider: str = "echo"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    system_prompt: str | None = None
    tools: tuple[str, ...] = ()
    max_steps: int = 8
    timeout: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    """Sampling parameters (``SAMPLING_PARAMS``), sent with every request."""
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    """The longest wait for the next bytes of a response (a stalled stream)."""
    max_attempts: int = 3
    """Requests per step, retries included (429, 5xx, connection errors, and
    only before the first token was streamed)."""
    backoff_seconds: float = 0.5
    backoff_cap_seconds: float = 20.0
    """The longest wait between attempts; a ``Retry-After`` beyond it is not
    waited for (the step fails as ``provider_rate_limited``)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys of the agent's table this version does not know (tolerated)."""
    api_key: str | None = field(default=None, repr=False, compare=False)
    context: ContextConfig = field(default_factory=ContextConfig)
    """The agent's context window (see :class:`ContextConfig`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= 128:
            msg = "an agent id must be a string of 1 to 128 characters"
            raise ConfigError(msg)
        if isinstance(self.tools, list):
            object.__setattr__(self, "tools", tuple(self.tools))
        checks: list[tuple[str, bool, str]] = [
            ("provider", self.provider in PROVIDERS, f"one of {', '.join(PROVIDERS)}"),
            ("model", _optional(self.model, str), "a string"),
            ("base_url", _optional(self.base_url, str), "a string"),
            (
                "api_key_env",
                self.api_key_env is None
                or (
                    isinstance(self.api_key_env, str)
                    and bool(_ENV_NAME.match(self.api_key_env))
                ),
                "the name of an environment variable",
            ),
            ("system_prompt", _optional(self.system_prompt, str), "a string"),
            (
                "tools",
                isinstance(self.tools, tuple)
                and all(isinstance(name, str) and name for name in self.tools),
                "a list of tool names",
            ),
            (
                "max_steps",
                _is_int(self.max_steps) and self.max_steps >= 1,
                "a positive integer",
            ),
            ("timeout", isinstance(self.timeout, Mapping), "a table"),
            ("params", isinstance(self.params, Mapping), "a table"),
            ("extra", isinstance(self.extra, Mapping), "a table"),
            (
                "connect_timeout_seconds",
                _is_number(self.connect_timeout_seconds)
                and self.connect_timeout_seconds > 0,
                "a positive number",
            ),
            (
                "read_timeout_seconds",
                _is_number(self.read_timeout_seconds) and self.read_timeout_seconds > 0,
                "a positive number",
            ),
            (
                "max_attempts",
                _is_int(self.max_attempts) and self.max_attempts >= 1,
                "a positive integer",
            ),
            (
                "backoff_seconds",
                _is_number(self.backoff_seconds) and self.backoff_seconds >= 0,
                "a number of seconds (0 or more)",
            ),
            (
                "backoff_cap_seconds",
                _is_number(self.backoff_cap_seconds) and self.backoff_cap_seconds >= 0,
                "a number of seconds (0 or more)",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise self._error(name, f"must be {expected}")
        for name, value in self.params.items():
            if name not in SAMPLING_PARAMS:
                raise self._error(name, "is not a known sampling parameter")
            expected, check = SAMPLING_PARAMS[name]
            if not check(value):
                raise self._error(name, f"must be {expected}")
        if self.provider == "openai":
            if not self.model:
                raise self._error("model", "is required by the openai provider")
            if not self.base_url:
                raise self._error("base_url", "is required by the openai provider")
            if not self.base_url.startswith(("http://", "https://")):
                raise self._error("base_url", "must be an http:// or https:// URL")

    def _error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"agent {self.id!r}: {name} {problem}")

    @classmethod
    def from_table(cls, agent_id: str, table: Mapping[str, Any]) -> AgentConfig:
        """Build from an ``[agents.<id>]`` TOML table.

        Sampling parameters (``temperature``, ``max_tokens``...) sit in the
        table itself; keys this version does not know are kept in ``extra``.
        """
        if not isinstance(table, Mapping):
            msg = f"agent {agent_id!r}: its entry must be a table"
            raise ConfigError(msg)
        fields = {
            "provider",
            "model",
            "base_url",
            "api_key_env",
            "system_prompt",
            "tools",
            "max_steps",
            "timeout",
            "connect_timeout_seconds",
            "read_timeout_seconds",
            "max_attempts",
            "backoff_seconds",
            "backoff_cap_seconds",
            "context",
        }
        values = {k: v for k, v in table.items() if k in fields}
        if "context" in values:
            try:
                values["context"] = ContextConfig.from_table(values["context"])
            except ValueError as error:
                msg = f"agent {agent_id!r}: {error}"
                raise ConfigError(msg) from None
        if isinstance(values.get("tools"), list):
            values["tools"] = tuple(values["tools"])
        return cls(
            id=agent_id,
            params={k: v for k, v in table.items() if k in SAMPLING_PARAMS},
            extra={
                k: v
                for k, v in table.items()
                if k not in fields and k not in SAMPLING_PARAMS
            },
            **values,
        )


def _optional(value: Any, kind: type) -> bool:
    return value is None or isinstance(value, kind)


ADMIN_MARKER = "*"


@dataclass(frozen=True)
class ApiKey:
    """One accepted API key: the principal it stands for and the SHA-256 digest
    of the key (the key itself is never kept)."""

    principal: str
    digest: bytes = field(repr=False)

    @property
    def admin(self) -> bool:
        """Whether the key is an admin key (``*:KEY``): it sees every session."""
        return self.principal == ADMIN_MARKER


def key_digest(key: str) -> bytes:
    """The SHA-256 digest an API key is stored and compared as."""
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """Parse ``"alice:KEY1,bob:KEY2,*:KEY3"`` (``*`` marks an admin key).

    A principal may have several keys (rotation). Errors never quote a key.
    """
    keys: list[ApiKey] = []
    for number, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        principal, separator, key = entry.partition(":")
        principal, key = principal.strip(), key.strip()
        if not separator or not principal or not key:
            msg = f"SESSIOND_API_KEYS entry {number} is not principal:key"
            raise ValueError(msg)
        keys.append(ApiKey(principal=principal, digest=key_digest(key)))
    return tuple(keys)


def _default_agents() -> Mapping[str, AgentConfig]:
    return {ECHO_AGENT_ID: AgentConfig(id=ECHO_AGENT_ID)}


@dataclass(frozen=True)
class Settings:
    """Everything the runtime and gateway are configured by."""

    # Not in repr: a PostgreSQL DSN may carry a password.
    db: str = field(default=DEFAULT_DB, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    config_path: str | None = None
    log_level: str = "info"
    agents: Mapping[str, AgentConfig] = field(default_factory=_default_agents)
    timeout_limits: TimeoutLimits = field(default_factory=TimeoutLimits)
    max_live_actors: int = 1024
    history_cache_bytes: int = 32 * 2**20
    request_key_hours: float = 24.0
    """How long an ``Idempotency-Key`` of a write other than a message is kept."""
    request_claim_seconds: float = 60.0
    """How long a claimed key that was never completed (its process died) holds
    off a retry before the retry may run it."""
    """Memory for pages of history kept between reads (0: none kept); see
    :mod:`runtime.history_cache`."""
    actor_idle_seconds: float = 300.0
    actor_timeout: float = 30.0
    snapshot_interval: int = 100
    sqlite_lock_timeout: int = 10
    # PostgreSQL (``db`` is a ``postgresql://`` DSN): connections kept open, how
    # many more may be opened under load, and seconds to wait for a lock or for
    # a connection (from the pool or the server) before failing.
    postgres_pool_size: int = 5
    postgres_max_overflow: int = 15
    postgres_lock_timeout: int = 10
    postgres_connect_timeout: int = 10
    supervisor_interval: float = 0.5
    retention_days: float | None = 30.0
    retention_keep_checkpoints: bool = False
    webhooks: tuple[Mapping[str, Any], ...] = ()
    """Server-wide webhooks ``{url, headers, events}`` for every session."""
    webhook_max_attempts: int = 12
    webhook_backoff_seconds: float = 1.0
    webhook_backoff_cap_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    lease_seconds: float = 5.0
    """How long the supervisor lease lasts without renewal (fail-over time)."""
    lease_renew_seconds: float = 1.0
    """How often the lease holder renews it (and the others try to take it)."""
    feed_interval: float = 0.02
    """How often, while anyone here streams a session, the change feed looks
    for events recorded by other processes (SQLite polls)."""
    node_id: str | None = None
    """This process's name in the lease table (default: host:pid:random)."""
    on_disconnect: str = "continue"
    """What a streamed turn does when its caller goes away: ``continue`` (run
    to its end, the reply lands in the log) or ``cancel``."""
    work_root: str | None = None
    """When set, the file tools refuse a session ``work_dir`` outside it."""
    # Empty: no authentication, one local principal. Only digests are kept.
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)
    lease_clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)
    """The lease's time: real time even when ``clock`` runs fast (a ScaledClock
    started at another moment in each process would disagree across them)."""

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read the environment (and the config file it names) once.

        ``overrides`` (e.g. command-line flags) win over both.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_path = overrides.get("config_path") or env.get("SESSIOND_CONFIG")
        if config_path:
            values.update(_read_config_file(Path(config_path)))
            values["config_path"] = str(config_path)
        for name, key, convert in (
            ("db", "SESSIOND_DB", str),
            ("host", "SESSIOND_HOST", str),
            ("port", "SESSIOND_PORT", int),
            ("log_level", "SESSIOND_LOG_LEVEL", str),
            ("max_live_actors", "SESSIOND_MAX_LIVE_ACTORS", int),
            ("history_cache_bytes", "SESSIOND_HISTORY_CACHE_BYTES", int),
            ("request_key_hours", "SESSIOND_REQUEST_KEY_HOURS", float),
            ("request_claim_seconds", "SESSIOND_REQUEST_CLAIM_SECONDS", float),
            ("actor_idle_seconds", "SESSIOND_ACTOR_IDLE_SECONDS", float),
            ("supervisor_interval", "SESSIOND_SUPERVISOR_INTERVAL", float),
            ("lease_seconds", "SESSIOND_LEASE_SECONDS", float),
            ("lease_renew_seconds", "SESSIOND_LEASE_RENEW_SECONDS", float),
            ("feed_interval", "SESSIOND_FEED_INTERVAL", float),
            ("node_id", "SESSIOND_NODE_ID", str),
            ("on_disconnect", "SESSIOND_ON_DISCONNECT", str),
            ("work_root", "SESSIOND_WORK_ROOT", str),
            ("postgres_pool_size", "SESSIOND_POSTGRES_POOL_SIZE", int),
            ("postgres_max_overflow", "SESSIOND_POSTGRES_MAX_OVERFLOW", int),
            ("postgres_lock_timeout", "SESSIOND_POSTGRES_LOCK_TIMEOUT", int),
            ("postgres_connect_timeout", "SESSIOND_POSTGRES_CONNECT_TIMEOUT", int),
            ("retention_days", "SESSIOND_RETENTION_DAYS", _days),
            (
                "retention_keep_checkpoints",
                "SESSIOND_RETENTION_KEEP_CHECKPOINTS",
                _flag,
            ),
        ):
            if env.get(key):
                values[name] = convert(env[key])
        if env.get("SESSIOND_API_KEYS"):
            values["api_keys"] = parse_api_keys(env["SESSIOND_API_KEYS"])
        limits = TimeoutLimits()
        limit_values = {
            "default_timeout_minutes": "SESSION_DEFAULT_TIMEOUT_MINUTES",
            "min_timeout_minutes": "SESSION_MIN_TIMEOUT_MINUTES",
            "max_timeout_minutes": "SESSION_MAX_TIMEOUT_MINUTES",
            "max_duration_minutes": "SESSION_MAX_DURATION_MINUTES",
            "warning_threshold_minutes": "SESSION_WARNING_THRESHOLD_MINUTES",
        }
        values["timeout_limits"] = replace(
            limits,
            **{k: int(env[v]) for k, v in limit_values.items() if env.get(v)},
        )
        if env.get("SESSIOND_CLOCK_SPEED"):
            # A testing aid: whole lifecycles in fast motion (see ScaledClock).
            origin = env.get("SESSIOND_CLOCK_ORIGIN")
            values["clock"] = ScaledClock(
                float(env["SESSIOND_CLOCK_SPEED"]),
                origin=float(origin) if origin else None,
            )
        env_agent = _env_agent(env)
        if env_agent is not None:
            values["agents"] = {
                **values.get("agents", _default_agents()),
                env_agent.id: env_agent,
            }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("api_keys"), str):
            values["api_keys"] = parse_api_keys(values["api_keys"])
        if "agents" in values:
            values["agents"] = _with_api_keys(values["agents"], env)
        return cls(**values)


OPENAI_BASE_URL = "SESSIOND_OPENAI_BASE_URL"
OPENAI_MODEL = "SESSIOND_OPENAI_MODEL"
OPENAI_API_KEY_ENV = "SESSIOND_OPENAI_API_KEY_ENV"
OPENAI_AGENT_ID = "SESSIOND_OPENAI_AGENT_ID"


def _env_agent(env: Mapping[str, str]) -> AgentConfig | None:
    """The ``openai`` agent the ``SESSIOND_OPENAI_*`` variables define, if any."""
    base_url, model = env.get(OPENAI_BASE_URL), env.get(OPENAI_MODEL)
    if not base_url and not model:
        return None
    agent_id = env.get(OPENAI_AGENT_ID) or "openai"
    for name, value in ((OPENAI_BASE_URL, base_url), (OPENAI_MODEL, model)):
        if not value:
            msg = f"agent {agent_id!r}: {name} must be set too"
            raise ConfigError(msg)
    return AgentConfig(
        id=agent_id,
        provider="openai",
        model=model,
        base_url=base_url,
        api_key_env=env.get(OPENAI_API_KEY_ENV) or None,
    )


def _with_api_keys(
    agents: Mapping[str, AgentConfig], env: Mapping[str, str]
) -> dict[str, AgentConfig]:
    """The agents with their API keys read from the variables they name (once:
    nothing later reads the environment)."""
    resolved: dict[str, AgentConfig] = {}
    for agent_id, config in agents.items():
        if config.api_key_env and config.api_key is None:
            key = env.get(config.api_key_env)
            if not key:
                msg = (
                    f"agent {agent_id!r}: api_key_env names "
                    f"{config.api_key_env}, which is not set"
                )
                raise ConfigError(msg)
            config = replace(config, api_key=key)
        resolved[agent_id] = config
    return resolved


def _days(value: str) -> float | None:
    days = float(value)
    return None if days <= 0 else days


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _read_config_file(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        document = tomllib.load(file)
    values: dict[str, Any] = {}
    agents = dict(_default_agents())
    tables = document.get("agents", {})
    if not isinstance(tables, dict):
        msg = f"{path}: agents must be a table of [agents.<id>] tables"
        raise ConfigError(msg)
    for agent_id, table in tables.items():
        agents[agent_id] = AgentConfig.from_table(agent_id, table)
    values["agents"] = agents
    webhooks = document.get("webhooks", [])
    if webhooks:
        values["webhooks"] = tuple(
            {
                "url": str(hook["url"]),
                "headers": dict(hook.get("headers", {})),
                "events": list(hook["events"]) if "events" in hook else None,
            }
            for hook in webhooks
        )
    server = document.get("server", {})
    for key in (
        "db",
        "host",
        "port",
        "log_level",
        "max_live_actors",
        "history_cache_bytes",
        "on_disconnect",
        "work_root",
    ):
        if key in server:
            values[key] = server[key]
    return values
