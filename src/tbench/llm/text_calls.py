"""Tool calls that a model wrote as text in its reply instead of as structured `tool_calls`.

Small models do this all the time, and which one a server returns depends on its chat template: Qwen2.5-Coder
writes fenced JSON (```` ```json {"name": …, "arguments": …} ``` ````) where its template expects Hermes tags
(`<tool_call>{…}</tool_call>`), and a server whose template does not parse them hands the text back as
`content`. The loop lifts such calls out of the text so the turn is not lost — for every transport — and the
OpenAI preflight uses the same recogniser to say *why* a server fails its tool-call probe.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Iterator
from typing import Any

from tbench.llm.chat import ToolCall

_TAGGED = re.compile(r"[<\[]tool_call[>\]]\s*(.*?)\s*(?:[<\[]/tool_call[>\]]|\Z)", re.DOTALL)
_FENCED = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def _objects(text: str) -> Iterator[Any]:
    """JSON values in `text`: the whole of it, else each top-level object found by scanning for '{'."""
    text = text.strip()
    try:
        yield json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        yield value
        i = text.find("{", end)


def _as_call(value: Any, names: Collection[str]) -> ToolCall | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # an OpenAI-shaped call written out whole
        value = value["function"]
    name = value.get("name")
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(args, dict):
        return None
    return ToolCall(name=name, arguments=args, id=f"text-{uuid.uuid4().hex[:16]}")


def _calls_in(block: str, names: Collection[str]) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for value in _objects(block):
        for item in value if isinstance(value, list) else [value]:
            if (call := _as_call(item, names)) is not None:
                calls.append(call)
    return calls


def find_text_tool_calls(content: str | None, names: Collection[str]) -> list[ToolCall]:
    """Calls of the tools `names` written in `content`: Hermes tags (`<tool_call>` or `[tool_call]`) first,
    then fenced code blocks, then the whole text as bare JSON. Only known tool names count, so prose that
    merely shows some JSON is left alone."""
    if not content or not content.strip():
        return []
    for pattern in (_TAGGED, _FENCED):
        calls = [c for m in pattern.finditer(content) for c in _calls_in(m.group(1), names)]
        if calls:
            return calls
    stripped = content.strip()
    if stripped.startswith(("{", "[")):
        return _calls_in(stripped, names)
    return []
