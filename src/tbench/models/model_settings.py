"""Model settings kept in config.json and worker jobs: which agent and model (`ModelConfig`), the run's other
model settings (`ModelSettings`: endpoints, sampler options, validation rate, seed — never a key or token), and the
model-call options of chat-API agents (`ChatOptions`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from tbench.secrets import real_url, stored_url

ModelType = Literal["claude-code", "ollama", "openai", "oracle", "nop"]


class ChatOptions(BaseModel):
    """Model-call settings (`--model-option KEY=VALUE`), stored in config.json so a resume runs the same way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_ctx: int = Field(default=32768, ge=512)
    """Context window asked of the server. Ollama's own default (2-4k on small GPUs) is far too small for an
    agent; capped at the model's trained context when the server reports it."""
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    """Nucleus sampling: only the most likely tokens whose probabilities add up to this are drawn from."""
    seed: int | None = None
    """Sampler seed; defaults to `--seed` when that is given."""
    keep_alive: str | None = None
    """How long the server keeps the model loaded after a call ("30m", "-1" = forever); server default if unset."""
    num_predict: int | None = Field(default=None, ge=1)
    """Cap on tokens generated per turn."""
    think: bool | None = None
    """Ask a thinking-capable model to think (True) or not (False); the model's default if unset."""
    request_timeout_sec: float = Field(default=300.0, gt=0)
    """Longest silence from the server inside one call (connect, first token, between chunks). Loading a big
    model counts, so keep it generous."""
    retries: int = Field(default=3, ge=0, le=20)
    """Retries of one call after a connection error, a 5xx, a mid-stream error or a stall."""
    retry_backoff_sec: float = Field(default=2.0, ge=0)
    """First retry delay; doubles each retry."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ModelType
    model: str | None = None
    """For ollama: "codellama:34b"; for claude-code: an optional model name."""
    endpoint: str | None = None
    options: ChatOptions = Field(default_factory=ChatOptions)
    """Model-call settings of chat-API agents (ollama)."""
    unsafe_host_agent: bool = False
    """The user accepted running this agent's commands unconfined on the host where no sandbox exists."""

    @field_validator("endpoint")
    @classmethod
    def _restore(cls, value: str | None) -> str | None:
        return real_url(value)

    @field_serializer("endpoint")
    def _redact(self, value: str | None) -> str | None:
        """worker-job.json holds no credentials; the worker restores them from its inherited environment."""
        return stored_url(value)

    @property
    def label(self) -> str:
        """How the model is named in results and episodes: the `--model` string, normalised."""
        return f"{self.type}:{self.model}" if self.model else self.type


class ModelSettings(BaseModel):
    """A run's model settings besides `--model`, kept in config.json: endpoints yes, keys and tokens never."""

    model_config = ConfigDict(extra="forbid")

    ollama_endpoint: str | None = None
    openai_endpoint: str | None = None
    """Base URL of an OpenAI-compatible server (`--openai-endpoint` or OPENAI_BASE_URL); OPENAI_API_KEY is
    read from the environment at each call and never stored."""
    anthropic_base_url: str | None = None
    """Recorded from ANTHROPIC_BASE_URL for the record; the key that goes with it is never stored."""
    options: ChatOptions = Field(default_factory=ChatOptions)
    claude_validation_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int | None = None
    unsafe_host_agent: bool = False

    @field_validator("ollama_endpoint", "openai_endpoint", "anthropic_base_url")
    @classmethod
    def _restore(cls, value: str | None) -> str | None:
        return real_url(value)

    @field_serializer("ollama_endpoint", "openai_endpoint", "anthropic_base_url")
    def _redact(self, value: str | None) -> str | None:
        """Credentials in an endpoint URL never reach a file (secrets.py keeps them for this process)."""
        return stored_url(value)

    def effective_options(self) -> ChatOptions:
        """`--seed` seeds the model's sampler too, unless a `seed` model option says otherwise."""
        if self.options.seed is None and self.seed is not None:
            return self.options.model_copy(update={"seed": self.seed})
        return self.options
