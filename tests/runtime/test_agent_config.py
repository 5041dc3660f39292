"""Agent configuration: the config file's ``[agents.<id>]`` tables, the
``SESSIOND_OPENAI_*`` variables, API keys read once, and start-up validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from runtime import (
    AgentConfig,
    AgentNotFoundError,
    ConfigError,
    Runtime,
    Settings,
)
from runtime.providers.openai import OpenAIAgent
from tests.conftest import RuntimeFactory

KEY = "sk-config-test-abcdef0123456789"

OPENAI_AGENT = """
[agents.local]
provider = "openai"
model = "qwen2.5:7b"
base_url = "http://127.0.0.1:11434/v1"
api_key_env = "LOCAL_MODEL_KEY"
system_prompt = "You are helpful."
tools = ["sessions_list", "read_file"]
max_steps = 4
timeout = { timeout_minutes = 60, auto_renew = true }
temperature = 0.3
max_tokens = 256
stop = ["END"]
seed = 1
read_timeout_seconds = 30
max_attempts = 5

[agents.local.context]
strategy = "recent"
"""


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sessiond.toml"
    path.write_text(text)
    return str(path)


def settings_of(tmp_path: Path, text: str | None = None, **environ: str) -> Settings:
    if text is not None:
        environ["SESSIOND_CONFIG"] = write_config(tmp_path, text)
    return Settings.from_env(environ)


def test_an_openai_agent_is_read_from_the_config_file(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, OPENAI_AGENT, LOCAL_MODEL_KEY=KEY)

    config = settings.agents["local"]
    assert config.provider == "openai"
    assert config.model == "qwen2.5:7b"
    assert config.base_url == "http://127.0.0.1:11434/v1"
    assert config.system_prompt == "You are helpful."
    assert config.tools == ("sessions_list", "read_file")
    assert config.max_steps == 4
    assert config.timeout == {"timeout_minutes": 60, "auto_renew": True}
    assert config.params == {
        "temperature": 0.3,
        "max_tokens": 256,
        "stop": ["END"],
        "seed": 1,
    }
    assert config.read_timeout_seconds == 30
    assert config.max_attempts == 5
    assert config.connect_timeout_seconds == 10.0  # a default
    assert config.context.strategy == "recent"
    assert config.extra == {}
    assert "echo" in settings.agents  # always there


def test_the_api_key_is_read_once_from_the_named_variable_and_never_shown(
    tmp_path: Path,
) -> None:
    settings = settings_of(tmp_path, OPENAI_AGENT, LOCAL_MODEL_KEY=KEY)

    assert settings.agents["local"].api_key == KEY
    assert KEY not in repr(settings.agents["local"])
    assert KEY not in repr(settings)


def test_an_api_key_variable_that_is_not_set_is_a_start_up_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, OPENAI_AGENT)

    assert str(caught.value) == (
        "agent 'local': api_key_env names LOCAL_MODEL_KEY, which is not set"
    )


def test_an_agent_without_a_key_sends_none(tmp_path: Path) -> None:
    text = OPENAI_AGENT.replace('api_key_env = "LOCAL_MODEL_KEY"\n', "")

    assert settings_of(tmp_path, text).agents["local"].api_key is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('provider = "anthropic"', "agent 'bad': provider must be one of"),
        ('provider = "openai"\nbase_url = "http://x/v1"', "agent 'bad': model is"),
        ('provider = "openai"\nmodel = "m"', "agent 'bad': base_url is required"),
        (
            'provider = "openai"\nmodel = "m"\nbase_url = "127.0.0.1:8080"',
            "agent 'bad': base_url must be an http:// or https:// URL",
        ),
        ('max_steps = "8"', "agent 'bad': max_steps must be a positive integer"),
        ("max_steps = 0", "agent 'bad': max_steps must be a positive integer"),
        ('tools = "read_file"', "agent 'bad': tools must be a list of tool names"),
        ("tools = [1]", "agent 'bad': tools must be a list of tool names"),
        ('temperature = "hot"', "agent 'bad': temperature must be a number"),
        ("max_tokens = -1", "agent 'bad': max_tokens must be a positive integer"),
        ("stop = [1]", "agent 'bad': stop must be a string or a list of strings"),
        ("model = 3", "agent 'bad': model must be a string"),
        ('timeout = "long"', "agent 'bad': timeout must be a table"),
        ('api_key_env = "NOT A NAME"', "agent 'bad': api_key_env must be the name"),
        (
            "read_timeout_seconds = 0",
            "agent 'bad': read_timeout_seconds must be a positive number",
        ),
        ("max_attempts = true", "agent 'bad': max_attempts must be a positive integer"),
    ],
)
def test_an_invalid_agent_is_a_start_up_error_naming_agent_and_field(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, f"[agents.bad]\n{table}\n")

    assert str(caught.value).startswith(message)


def test_an_agent_entry_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent 'bad': its entry must be a table"):
        settings_of(tmp_path, 'agents = { bad = "openai" }\n')


def test_agents_made_in_python_are_checked_too() -> None:
    with pytest.raises(
        ConfigError, match="agent 'x': temprature is not a known sampling"
    ):
        AgentConfig(id="x", params={"temprature": 0.1})
    with pytest.raises(ConfigError, match="model is required"):
        AgentConfig(id="x", provider="openai", base_url="http://h/v1")
    assert AgentConfig(id="x", tools=["a"]).tools == ("a",)  # type: ignore[arg-type]


def test_an_openai_agent_can_be_defined_by_the_environment(tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path,
        SESSIOND_OPENAI_BASE_URL="http://127.0.0.1:8080/v1",
        SESSIOND_OPENAI_MODEL="llama-3.1-8b",
        SESSIOND_OPENAI_API_KEY_ENV="MY_KEY",
        MY_KEY=KEY,
    )

    config = settings.agents["openai"]
    assert (config.provider, config.model, config.base_url) == (
        "openai",
        "llama-3.1-8b",
        "http://127.0.0.1:8080/v1",
    )
    assert config.api_key == KEY
    assert set(settings.agents) == {"echo", "openai"}


def test_the_environment_agent_takes_its_id_and_joins_the_config_file(
    tmp_path: Path,
) -> None:
    settings = settings_of(
        tmp_path,
        OPENAI_AGENT,
        LOCAL_MODEL_KEY=KEY,
        SESSIOND_OPENAI_BASE_URL="https://api.openai.com/v1",
        SESSIOND_OPENAI_MODEL="gpt-4o-mini",
        SESSIOND_OPENAI_AGENT_ID="cloud",
    )

    assert set(settings.agents) == {"echo", "local", "cloud"}
    assert settings.agents["cloud"].api_key is None


@pytest.mark.parametrize(
    "environ",
    [
        {"SESSIOND_OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"},
        {"SESSIOND_OPENAI_MODEL": "m"},
    ],
)
def test_half_an_environment_agent_is_an_error(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="agent 'openai': SESSIOND_OPENAI_"):
        settings_of(tmp_path, **environ)


def test_config_defined_agents_open_sessions_and_unknown_ids_are_refused(
    tmp_path: Path, runtime_factory: RuntimeFactory
) -> None:
    agents = settings_of(tmp_path, OPENAI_AGENT, LOCAL_MODEL_KEY=KEY).agents
    runtime = runtime_factory(agents=agents)

    session = runtime.create("local")

    assert session["agent_id"] == "local"
    with pytest.raises(AgentNotFoundError) as caught:
        runtime.create("remote")
    assert caught.value.code == "agent_not_found"


def test_the_registry_builds_openai_agents_and_closes_them_with_the_runtime(
    tmp_path: Path, runtime_factory: RuntimeFactory
) -> None:
    agents = settings_of(tmp_path, OPENAI_AGENT, LOCAL_MODEL_KEY=KEY).agents
    runtime: Any = runtime_factory(agents=agents)

    agent = runtime.agents.get("local")
    assert isinstance(agent, OpenAIAgent)
    assert runtime.agents.config("local").max_steps == 4
    runtime.close()

    assert agent._client.is_closed


def test_serve_with_an_invalid_config_exits_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(tmp_path, '[agents.bad]\nprovider = "openai"\nmodel = "m"\n')
    monkeypatch.delenv("SESSIOND_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("SESSIOND_OPENAI_MODEL", raising=False)

    status = cli.main(["serve", "--config", path, "--db", str(tmp_path / "x.db")])

    assert status == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "sessiond: invalid configuration: "
        "agent 'bad': base_url is required by the openai provider\n"
    )


def test_an_invalid_agent_cannot_even_be_made() -> None:
    with pytest.raises(ConfigError, match="agent 'x': provider must be one of"):
        Runtime(Settings(agents={"x": AgentConfig(id="x", provider="nope")}))
