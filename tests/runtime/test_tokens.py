"""Token counters: the offline defaults, plugging another, and the config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from runtime import Settings
from runtime.settings import AgentConfig, ContextConfig
from runtime.tokens import (
    MESSAGE_OVERHEAD,
    TOOL_CALL_OVERHEAD,
    HeuristicCounter,
    TokenCounters,
    WordCounter,
    load_counter,
)


class CharCounter:
    """A plugged-in counter: one token per character."""

    def count_text(self, text: str) -> int:
        return len(text)

    def count(self, message: Mapping[str, Any]) -> int:
        return len(str(message.get("content") or ""))


def test_the_heuristic_counts_about_four_characters_per_token() -> None:
    counter = HeuristicCounter()
    text = "The quick brown fox jumps over the lazy dog near the riverbank."
    assert counter.count_text(text) == math.ceil(len(text) / 4)
    assert counter.count_text("") == 0


def test_the_heuristic_counts_no_fewer_tokens_than_words() -> None:
    assert HeuristicCounter().count_text("a b c d e f") == 6


def test_the_heuristic_counts_a_token_per_non_ascii_character() -> None:
    assert HeuristicCounter().count_text("会議は明日です") == 7
    assert HeuristicCounter().count_text("café") == 2  # ceil(3 / 4) + 1


def test_the_heuristic_adds_overhead_per_message_and_counts_tool_calls() -> None:
    counter = HeuristicCounter()
    plain = {"role": "user", "content": "hello there"}
    assert counter.count(plain) == MESSAGE_OVERHEAD + 3
    calling = {
        "role": "assistant",
        "content": "",
        "metadata": {
            "tool_calls": [{"id": "c1", "name": "read", "arguments": '{"path": "a"}'}]
        },
    }
    assert counter.count(calling) == (
        MESSAGE_OVERHEAD + TOOL_CALL_OVERHEAD + 1 + counter.count_text('{"path": "a"}')
    )


def test_counting_is_deterministic() -> None:
    message = {"role": "user", "content": "same text every time " * 20}
    assert len({HeuristicCounter().count(message) for _ in range(5)}) == 1


def test_the_word_counter_counts_like_the_echo_agent() -> None:
    assert WordCounter().count({"role": "user", "content": "one two  three"}) == 3


def test_a_counter_is_registered_by_name_or_imported_by_path() -> None:
    counters = TokenCounters()
    counters.register("chars", CharCounter())
    assert counters.get("chars").count_text("abc") == 3
    imported = counters.get("runtime.tokens:WordCounter")
    assert isinstance(imported, WordCounter)
    assert counters.get("runtime.tokens:WordCounter") is imported  # kept


@pytest.mark.parametrize(
    "name", ["nothing", "runtime.tokens:Missing", "no.such.module:X", "runtime.tokens:"]
)
def test_an_unknown_counter_is_a_clear_error(name: str) -> None:
    with pytest.raises(ValueError, match="token counter"):
        TokenCounters().get(name)


def test_something_that_is_not_a_counter_is_refused() -> None:
    with pytest.raises(ValueError, match="not a token counter"):
        load_counter("runtime.tokens:MESSAGE_OVERHEAD")
    with pytest.raises(TypeError):
        TokenCounters().register("bad", object())  # type: ignore[arg-type]


def test_the_context_table_is_read_from_the_agent_config(tmp_path: Path) -> None:
    config = tmp_path / "sessiond.toml"
    config.write_text(
        "[agents.helper]\n"
        'provider = "echo"\n'
        "temperature = 0.2\n"
        'context = { strategy = "smart", max_tokens = 8000, '
        'reserve_output_tokens = 1024, counter = "words" }\n'
    )
    settings = Settings.from_env({"SESSIOND_CONFIG": str(config)})
    agent = settings.agents["helper"]
    assert agent.context == ContextConfig(
        strategy="smart", max_tokens=8000, reserve_output_tokens=1024, counter="words"
    )
    assert agent.context.budget == 6976
    assert agent.params == {"temperature": 0.2}
    assert settings.agents["echo"].context == ContextConfig()


@pytest.mark.parametrize(
    "table",
    [
        {"strategy": "everything"},
        {"max_tokens": 0},
        {"max_tokens": 100, "reserve_output_tokens": 100},
        {"reserve_output_tokens": -1},
        {"summary_tokens": "many"},
        {"counter": ""},
        {"window": 3},
    ],
)
def test_a_bad_context_table_is_refused(table: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="context"):
        AgentConfig.from_table("helper", {"context": table})
