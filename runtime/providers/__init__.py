"""Model providers: agents that talk to model servers.

``openai`` (:class:`~runtime.providers.openai.OpenAIAgent`) speaks the OpenAI
chat-completions protocol, so it works with OpenAI and with compatible servers
(vLLM, llama.cpp's server, Ollama, LM Studio).
"""

from __future__ import annotations

from runtime.providers.openai import OpenAIAgent

__all__ = ["OpenAIAgent"]
