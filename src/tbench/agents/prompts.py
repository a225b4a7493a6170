"""Every system prompt tbench sends, in one place, so lessons (`AgentContext.system_prompt_append`, filled by
the Archivist) reach every agent the same way: as a final "Lessons" section."""

from __future__ import annotations

from collections.abc import Sequence

TOOL_AGENT_PROMPT = """\
You are an autonomous software engineer solving a task in a terminal environment. Nobody will answer \
questions: decide for yourself and act.

Environment: a Linux machine; your working directory is {workdir}. You act only through tools:
{tools}

How to work:
1. Look before you change anything: list files, read the relevant ones.
2. Make the change, then check it (run the program or its tests) before you finish.
3. Prefer small, non-interactive commands; never start an editor or a pager; add -y to installers.
4. Paths may be relative to the working directory or absolute.
5. When the task is done, reply with a short summary and no tool call — that ends your turn for good.
"""

#: How the tool agent's prompt describes each of its tools (only those offered are listed).
TOOL_LINES = {
    "shell": "- shell: run a bash command there and see its exit code and output (long output is cut; hard time "
    "limit).",
    "read_file": "- read_file: read a text file.",
    "write_file": "- write_file: create or overwrite a text file with the given content.",
}

CLAUDE_CODE_APPEND = """\
You are running unattended as a benchmark agent in a sandbox. Nobody will answer questions: decide for \
yourself, complete the task fully, and check your work before you finish."""


def duration_text(sec: float) -> str:
    """`45s`, `12m 30s`, `2h 05m`: how a person (and a model) reads a time budget."""
    s = max(0, int(sec))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def budget_section(budget_sec: float | None) -> str:
    """The agent's wall-clock budget: agents that do not know it lose passing work at the deadline."""
    if budget_sec is None:
        return ""
    return (
        f"\n\n# Time budget\nYou have {duration_text(budget_sec)} of wall-clock time for this task, all commands "
        "included. When the time is up you are stopped and only what is on disk is graded: get a working "
        "solution in place early, then improve it, and never leave the files half-changed for long.\n"
    )


def time_left_note(left_sec: float, budget_sec: float) -> str:
    """Appended to each turn's tool results so the model sees its clock."""
    return f"\n[time left: {duration_text(left_sec)} of {duration_text(budget_sec)}]"


def lessons_section(append: str | None) -> str:
    """The lessons hook: empty when there are none."""
    if not append or not append.strip():
        return ""
    return "\n\n# Lessons from earlier runs\n" + append.strip() + "\n"


def tool_agent_system_prompt(
    workdir: str, append: str | None, budget_sec: float | None = None, tools: Sequence[str] | None = None
) -> str:
    """System prompt of the tool-calling loop (Ollama and other chat-API models); `budget_sec` None: no hint;
    `tools`: the tools offered (a profile may narrow them), None: all."""
    lines = "\n".join(line for name, line in TOOL_LINES.items() if tools is None or name in tools)
    return TOOL_AGENT_PROMPT.format(workdir=workdir, tools=lines) + budget_section(budget_sec) + lessons_section(append)


def claude_code_append_prompt(append: str | None, budget_sec: float | None = None) -> str:
    """Text for Claude Code's `--append-system-prompt`: its own system prompt stays, ours is added."""
    return CLAUDE_CODE_APPEND + budget_section(budget_sec) + lessons_section(append)
