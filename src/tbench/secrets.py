"""Keeping API keys and tokens out of every file a run writes.

Keys reach an agent only through its process environment. But an agent's own commands can print them
(`env`, a failing curl with a header), and those outputs land in logs and trajectories — so every text an
agent writes to disk goes through `Redactor`, which knows the secret values of this process's environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

#: Variables that hold credentials, by name; anything matching `_SECRET_NAME` counts as well.
KNOWN_SECRETS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OLLAMA_API_KEY",
    "OPENAI_API_KEY",
)
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
#: Shorter values are too likely to appear by chance ("ollama", "x") to be worth masking everywhere.
MIN_SECRET_LEN = 8
MASK = "[REDACTED]"


def is_secret_name(name: str) -> bool:
    return name in KNOWN_SECRETS or bool(_SECRET_NAME.search(name))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: a key that contains another is masked whole


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus credential variables: what an agent's command inherits unless given explicitly."""
    return {k: v for k, v in environ.items() if not is_secret_name(k)}


class Redactor:
    """Replaces every secret value of the environment (read when created) with `[REDACTED]`."""

    def __init__(self, extra: list[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
        values = secret_values(environ) + [v for v in (extra or []) if len(v) >= MIN_SECRET_LEN]
        self.values = sorted(set(values), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)
