"""``Settings``: the one frozen configuration object, read once at start-up.

Nothing else in sessiond reads ``os.environ``. Values come from (lowest first)
defaults, the TOML config file, and the environment (``SESSIOND_*``, plus the
``SESSION_*_MINUTES`` timeout variables every surface shares).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aggregates.values import TimeoutLimits
from runtime.clock import Clock, ScaledClock, SystemClock

DEFAULT_DB = "./sessiond.db"
ECHO_AGENT_ID = "echo"


@dataclass(frozen=True)
class AgentConfig:
    """One configured agent."""

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

    @classmethod
    def from_table(cls, agent_id: str, table: Mapping[str, Any]) -> AgentConfig:
        """Build from a ``[agents.<id>]`` TOML table."""
        known = {
            "provider",
            "model",
            "base_url",
            "api_key_env",
            "system_prompt",
            "tools",
            "max_steps",
            "timeout",
        }
        return cls(
            id=agent_id,
            provider=str(table.get("provider", "echo")),
            model=table.get("model"),
            base_url=table.get("base_url"),
            api_key_env=table.get("api_key_env"),
            system_prompt=table.get("system_prompt"),
            tools=tuple(table.get("tools", ())),
            max_steps=int(table.get("max_steps", 8)),
            timeout=dict(table.get("timeout", {})),
            params={k: v for k, v in table.items() if k not in known},
        )


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
    # Empty: no authentication, one local principal. Only digests are kept.
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)

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
            ("actor_idle_seconds", "SESSIOND_ACTOR_IDLE_SECONDS", float),
            ("supervisor_interval", "SESSIOND_SUPERVISOR_INTERVAL", float),
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
            values["clock"] = ScaledClock(float(env["SESSIOND_CLOCK_SPEED"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("api_keys"), str):
            values["api_keys"] = parse_api_keys(values["api_keys"])
        return cls(**values)


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
    for agent_id, table in document.get("agents", {}).items():
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
    for key in ("db", "host", "port", "log_level", "max_live_actors"):
        if key in server:
            values[key] = server[key]
    return values
