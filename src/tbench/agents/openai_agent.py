"""`openai:<name>`: a tool-calling model on any OpenAI-compatible server, driving the shared tool loop."""

from __future__ import annotations

from tbench.agents.tool_loop import ToolLoopAgent
from tbench.llm.chat import ChatTransport
from tbench.llm.openai_compat import DEFAULT_ENDPOINT, OpenAICompatTransport


class OpenAIAgent(ToolLoopAgent):
    name = "openai"
    raw_output_file = "openai-chat.jsonl"

    def make_transport(self) -> ChatTransport:
        assert self.config.model, "parse_model guarantees a model name for openai"
        return OpenAICompatTransport(self.config.endpoint or DEFAULT_ENDPOINT, self.config.model, self.config.options)
