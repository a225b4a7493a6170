"""Keeping API keys and tokens out of every file a run writes.

Keys reach an agent only through its process environment. But an agent's own commands can print them
(`env`, a failing curl with a header), and those outputs land in logs and trajectories — so every text an
agent writes to disk goes through `Redactor`, which knows the secret values of this process's environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

#: Variables that hold credentials, by name; anything matching `_SECRET_NAME` counts as well.
KNOWN_SECRETS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OLLAMA_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_CUSTOM_HEADERS",
)
#: Headers are `Name: value` lines; each value is a secret of its own (an agent may print just one).
HEADER_SECRETS = ("ANTHROPIC_CUSTOM_HEADERS",)
#: Where this process keeps the credentials of endpoint URLs, so files hold `user:[REDACTED]@host` while worker
#: processes (which inherit the environment) still reach the server. Its name marks it a secret.
URL_CREDENTIALS_ENV = "TBENCH_URL_CREDENTIALS"
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
#: Shorter values are too likely to appear by chance ("ollama", "x") to be worth masking everywhere.
MIN_SECRET_LEN = 8
MASK = "[REDACTED]"


def is_secret_name(name: str) -> bool:
    return name in KNOWN_SECRETS or bool(_SECRET_NAME.search(name))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value of the environment: credential variables, each custom header's value, and the
    password (or token) of any URL in it, including the endpoint credentials this process keeps."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k)}
    for name in HEADER_SECRETS:
        for line in env.get(name, "").splitlines():
            values.add(line.partition(":")[2].strip())
    for value in [*env.values(), *_remembered(env).values()]:
        values.update(url_credentials(value))
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)  # longest first


def url_credentials(value: str) -> list[str]:
    """The user-info secrets of a URL (`http://user:pass@host` → ["pass", "user:pass"]), none for other text."""
    if "@" not in value or "://" not in value:
        return []
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return []
    if parts.password:
        return [parts.password, f"{parts.username}:{parts.password}"]
    return [parts.username] if parts.username else []


def redact_url(url: str) -> str:
    """`http://user:pass@host:1234/v1` → `http://user:[REDACTED]@host:1234/v1` (a bare token: `[REDACTED]@`)."""
    if not url_credentials(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    who = f"{parts.username}:{MASK}" if parts.password else MASK
    return urlunsplit(parts._replace(netloc=f"{who}@{host}"))


def _remembered(environ: Mapping[str, str]) -> dict[str, str]:
    try:
        mapping = json.loads(environ.get(URL_CREDENTIALS_ENV) or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def stored_url(url: str | None) -> str | None:
    """The form of an endpoint URL that files hold: credentials redacted, the real URL remembered in this
    process's environment (inherited by its workers) so `real_url` can restore it."""
    if url is None or not url_credentials(url):
        return url
    redacted = redact_url(url)
    mapping = _remembered(os.environ)
    if mapping.get(redacted) != url:
        os.environ[URL_CREDENTIALS_ENV] = json.dumps({**mapping, redacted: url})
    return redacted


def real_url(url: str | None) -> str | None:
    """An endpoint URL as read from a file, its redacted credentials restored where this process knows them."""
    if url is None or MASK not in url:
        return url
    return _remembered(os.environ).get(url, url)


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
