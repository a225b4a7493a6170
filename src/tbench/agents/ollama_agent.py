"""`ollama:<name>`: any tool-calling model on an Ollama server, driving the shared tool loop."""

from __future__ import annotations

from tbench.agents.tool_loop import ToolLoopAgent
from tbench.llm.chat import ChatTransport
from tbench.llm.ollama import DEFAULT_ENDPOINT, OllamaTransport


class OllamaAgent(ToolLoopAgent):
    name = "ollama"
    raw_output_file = "ollama-chat.jsonl"

    def make_transport(self) -> ChatTransport:
        assert self.config.model, "parse_model guarantees a model name for ollama"
        return OllamaTransport(self.config.endpoint or DEFAULT_ENDPOINT, self.config.model, self.config.options)
