"""Every system prompt tbench sends, in one place, so lessons (`AgentContext.system_prompt_append`, filled by
the Archivist) reach every agent the same way: as a final "Lessons" section."""

from __future__ import annotations

TOOL_AGENT_PROMPT = """\
You are an autonomous software engineer solving a task in a terminal environment. Nobody will answer \
questions: decide for yourself and act.

Environment: a Linux machine; your working directory is {workdir}. You act only through tools:
- shell: run a bash command there and see its exit code and output (long output is cut; hard time limit).
- read_file: read a text file.
- write_file: create or overwrite a text file with the given content.

How to work:
1. Look before you change anything: list files, read the relevant ones.
2. Make the change, then check it (run the program or its tests) before you finish.
3. Prefer small, non-interactive commands; never start an editor or a pager; add -y to installers.
4. Paths may be relative to the working directory or absolute.
5. When the task is done, reply with a short summary and no tool call — that ends your turn for good.
"""

CLAUDE_CODE_APPEND = """\
You are running unattended as a benchmark agent in a sandbox. Nobody will answer questions: decide for \
yourself, complete the task fully, and check your work before you finish."""


def lessons_section(append: str | None) -> str:
    """The lessons hook: empty when there are none."""
    if not append or not append.strip():
        return ""
    return "\n\n# Lessons from earlier runs\n" + append.strip() + "\n"


def tool_agent_system_prompt(workdir: str, append: str | None) -> str:
    """System prompt of the tool-calling loop (Ollama and other chat-API models)."""
    return TOOL_AGENT_PROMPT.format(workdir=workdir) + lessons_section(append)


def claude_code_append_prompt(append: str | None) -> str:
    """Text for Claude Code's `--append-system-prompt`: its own system prompt stays, ours is added."""
    return CLAUDE_CODE_APPEND + lessons_section(append)
