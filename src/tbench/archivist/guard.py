"""The leakage guard: a lesson must transfer to other tasks, so it may carry nothing the agent must not be told.

Secret sources, per task: the files of its tests (TB2 `tests/`, TB1 `run-tests.sh` and `tests/`, read from the
verifier's copies), of its reference solution (TB2 `solution/`, TB1 `solution.sh` / `solution.yaml`), the seed
format's `solution` command and verification `expected`, `script` and `command`; per trial, its test output
(`verification_output` and, given the run folder, the whole `verifier/test-output.txt`). A lesson is refused when it
shares with any of them a whole code line, a string or list literal, a number that carries information, or a run of
`NGRAM` words. Single words never count: sharing `median` with a test is how a general lesson reads.

Also refused, as before: a task id or name, a path or file name from an instruction (or listed in
`files_to_modify`), and a multi-word or symbol-bearing quoted literal of an instruction (`hello.txt`, not `median`).

Reading is bounded (`MAX_FILE_BYTES`, `MAX_TASK_BYTES`, `MAX_FILES`, `MAX_OUTPUT_BYTES`; binary files skipped, small
files first) so a guard for a whole suite is cheap to build on every reflection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tbench.models.layout import TrialPaths
from tbench.models.results import TrialResult
from tbench.models.task import Task

MAX_FILE_BYTES = 64 * 1024
"""Read at most this much of one file: an answer a lesson could quote sits in the first part of any file."""
MAX_TASK_BYTES = 128 * 1024
"""Over all of one task's test and solution files, read smallest first (scripts before data fixtures)."""
MAX_FILES = 200
"""Per copied folder."""
MAX_OUTPUT_BYTES = 64 * 1024
"""The tail of a trial's test-output.txt (where the failures and the summary are)."""
NGRAM = 6
"""Word run length: six shared words in a row is a quote, not a coincidence of vocabulary."""
MIN_LINE_CHARS = 12
"""Shorter code lines (`fi`, `cd /app`, `return x`) say nothing about a task."""
MIN_LITERAL_CHARS = 4
MIN_TOKEN_LITERAL_CHARS = 5
"""A one-token literal (no space) needs this many characters and a symbol (`hello.txt`, `s[m-1]`), an
underscore (`test_even`) or letters mixed with digits (`a17f-q9`)."""
MIN_PLAIN_WORDS = 4
"""A literal of plain words only ("file not found") counts from this many words (an `expected` value from 2)."""
MIN_LIST_CHARS = 7
"""A list literal, whitespace removed (`[4,1,3,2]`)."""

_STRING = re.compile(  # an apostrophe (don't, it's) opens no literal; a prefix (f'', r"") may
    r"""(?<![A-Za-z0-9])[rbfuRBFU]{0,2}(?:"((?:[^"\\\n]|\\.){1,300})"|'((?:[^'\\\n]|\\.){1,300})'|`([^`\n]{1,300})`)"""
    r"(?![A-Za-z0-9])"
)
_LIST = re.compile(r"\[[^\[\]\n]{1,300}\]")
_ESCAPES = re.compile(r"\\[ntr0]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)*(?!\.?\w)")
_WORD = re.compile(r"[a-z0-9_]+")
_TWO_WORDS = re.compile(r"[a-z0-9_][^a-z0-9_]+[a-z0-9_]")
_PLAIN = re.compile(r"[a-z ]+")
_SPACE = re.compile(r"\s+")
_LINE_REF = re.compile(r"\.\w{1,4}:\d+")
"""`test_outputs.py:12` in a traceback: a line number, not a value."""
_VERSIONED = r"[a-z][a-z-]*\d+(?:[._-]\d+)*"
_CODE_WORD = re.compile(rf"[a-z]_[a-z0-9]|^(?!{_VERSIONED}$|\d+[a-z]{{1,3}}$)(?=.*[a-z])(?=.*\d)")
"""An identifier (test_even) or a token mixing letters and digits (a17f-q9), not a name with a version or a unit."""
_ABS_PATH = re.compile(r"(?<![\w.~/-])(?:/[\w.-]+){2,}")
_PATH = re.compile(r"(?:~|\.{0,2})/?(?:[\w.-]+/)+[\w.-]+|\b[\w-]+\.[a-z][a-z0-9]{0,4}\b")
_GENERIC_PATHS = {"/tmp", "/dev/null", "/usr/bin", "/bin/sh", "/bin/bash", "e.g", "i.e", "etc."}
_SYSTEM_ROOTS = ("/usr/", "/bin/", "/sbin/", "/dev/", "/etc/", "/proc/", "/sys/", "/lib/", "/lib64/", "/opt/")
_COMMENT = ("#", "//", "--", ";", "/*", "*", '"""', "'''")
_BOILERPLATE_LINE = re.compile(
    r"^(?:set [-+][a-z]+(?: \w+)*|(?:import|from) [\w., ]+(?: import [\w., *()]+)?|if __name__ == .__main__.:"
    r"|(?:unittest|pytest)\.main\(.*\)|exit \d+|(?:else|fi|done|esac|then|do|pass|return|break|continue|\}|\)|\])"
    r"\s*;?)$"
)
_SKIP_DIRS = {"__pycache__", "node_modules", ".git", ".venv", "venv"}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _informative_number(n: str) -> bool:
    """Decimals (2.5) and integers of two or more digits (5055), but not round ones: one significant digit
    (10, 30, 600) or a power of two from 16 — timeouts and sizes every task uses."""
    if "." in n:
        frac = n.partition(".")[2]
        return frac.strip("0.") != "" or n.count(".") > 1
    if len(n) < 2:
        return False
    if len(n.rstrip("0")) <= 1:
        return False
    v = int(n)
    return not (v >= 16 and v & (v - 1) == 0)


def _literal(raw: str, *, min_words: int = MIN_PLAIN_WORDS) -> str | None:
    """The normalised literal when it could carry an answer; None for single words, short or generic text."""
    lit = _norm(raw).strip(" .,:;!?")
    if len(lit) < MIN_LITERAL_CHARS:
        return None
    if _PLAIN.fullmatch(lit):
        return lit if len(lit.split()) >= min_words else None
    # one token: not a top-level dir (/app) or a word (read-only, python3, x86_64); test_even and a17f-q9 count
    word = re.fullmatch(r"/?[\w-]+/?", lit) is not None and not _CODE_WORD.search(lit)
    return None if " " not in lit and (len(lit) < MIN_TOKEN_LITERAL_CHARS or word) else lit


def _contains(hay: str, needle: str) -> bool:
    """`needle` in `hay`, not as part of a longer word (`hello.txt` is not in `ahello.txt`)."""
    start = hay.find(needle)
    while start >= 0:
        end = start + len(needle)
        cut_before = needle[0].isalnum() and start > 0 and (hay[start - 1].isalnum() or hay[start - 1] == "_")
        cut_after = needle[-1].isalnum() and end < len(hay) and (hay[end].isalnum() or hay[end] == "_")
        if not (cut_before or cut_after):
            return True
        start = hay.find(needle, start + 1)
    return False


def _grams(words: list[str]) -> Iterator[tuple[str, ...]]:
    return zip(*(words[k:] for k in range(NGRAM)), strict=False)


def _index(pieces: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Pieces by their first word: a piece found whole (`_contains`) has that word whole in the lesson, so a
    check looks only at the pieces of the lesson's own words."""
    out: dict[str, list[str]] = {}
    for piece in sorted(set(pieces)):
        words = _WORD.findall(piece)
        out.setdefault(words[0] if words else "", []).append(piece)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class _Lesson:
    """A lesson text normalised once for every source."""

    low: str
    compact: str
    words: tuple[str, ...]
    """Its distinct words in order, and "" (the key of pieces without a word)."""
    compact_words: tuple[str, ...]
    numbers: tuple[str, ...]
    grams: tuple[tuple[int, tuple[str, ...]], ...]

    @classmethod
    def of(cls, text: str) -> _Lesson:
        low = _norm(text)
        compact = _SPACE.sub("", low)
        words = _WORD.findall(low)
        return cls(
            low,
            compact,
            (*dict.fromkeys(words), ""),
            (*dict.fromkeys(_WORD.findall(compact)), ""),
            tuple(n for n in dict.fromkeys(_NUMBER.findall(low)) if _informative_number(n)),
            tuple((hash(g), g) for g in _grams(words)),
        )


@dataclass(frozen=True, eq=False)
class Source:
    """What one secret text contributes, normalised and indexed for matching."""

    label: str
    """How a reason names it: "the tests of task fix-median"."""
    lines: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    literals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """List literals with whitespace removed, matched against the lesson with whitespace removed."""
    numbers: frozenset[str] = frozenset()
    grams: frozenset[int] = frozenset()

    @classmethod
    def of(
        cls,
        label: str,
        texts: Iterable[str],
        *,
        code: bool = True,
        min_words: int = MIN_PLAIN_WORDS,
        literals: Iterable[str] = (),
    ) -> Source:
        """`code`: whole lines count (files and commands, not test output); `literals`: extra, normalised."""
        lines: set[str] = set()
        found: set[str] = set(literals)
        lists: set[str] = set()
        numbers: set[str] = set()
        grams: set[int] = set()
        for text in texts:
            low = text.lower()
            if code:
                lines |= {x for line in low.splitlines() if (x := _code_line(line))}
            for m in _STRING.finditer(low):
                for part in _ESCAPES.split(next(g for g in m.groups() if g is not None)):
                    if lit := _literal(part, min_words=min_words):
                        found.add(lit)
            found |= {p for p in _ABS_PATH.findall(low) if not p.startswith(_SYSTEM_ROOTS)}
            lists |= {c for m in _LIST.findall(low) if "," in m and len(c := _SPACE.sub("", m)) >= MIN_LIST_CHARS}
            numbers |= {n for n in _NUMBER.findall(_LINE_REF.sub(" ", low)) if _informative_number(n)}
            grams |= set(map(hash, _grams(_WORD.findall(low))))
        return cls(label, _index(lines), _index(found), _index(lists), frozenset(numbers), frozenset(grams))

    def __bool__(self) -> bool:
        return bool(self.lines or self.literals or self.lists or self.numbers or self.grams)

    def leak(self, lesson: _Lesson) -> str | None:
        """Why `lesson` quotes this source, or None."""
        for kind, index, hay, keys in (
            ("a line of ", self.lines, lesson.low, lesson.words),
            ("", self.literals, lesson.low, lesson.words),
            ("", self.lists, lesson.compact, lesson.compact_words),
        ):
            for key in keys:
                for piece in index.get(key, ()):
                    if _contains(hay, piece):
                        return f"quotes {kind}{self.label} ({_show(piece)})"
        for n in lesson.numbers:
            if n in self.numbers:
                return f"quotes {self.label} ({_show(n)})"
        for h, gram in lesson.grams:
            if h in self.grams:
                return f"shares a phrase with {self.label} ({_show(' '.join(gram))})"
        return None


def _show(piece: str) -> str:
    return repr(piece if len(piece) <= 40 else piece[:39] + "…")


def _code_line(line: str) -> str | None:
    x = _norm(line)
    if len(x) < MIN_LINE_CHARS or x.startswith(_COMMENT) or _BOILERPLATE_LINE.match(x):
        return None
    return x if _TWO_WORDS.search(x) else None


def _files(root: Path) -> list[Path]:
    """Regular files under `root` (or `root` itself), no links, no caches, at most `MAX_FILES`, smallest first."""
    if root.is_symlink():
        return []
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        found += [p for f in sorted(filenames) if not (p := Path(dirpath) / f).is_symlink()]
        if len(found) >= MAX_FILES:
            break
    sized: list[tuple[int, Path]] = []
    for p in found[:MAX_FILES]:
        try:
            sized.append((p.stat().st_size, p))
        except OSError:
            continue
    return [p for _, p in sorted(sized)]


def _read(path: Path, limit: int, *, tail: bool = False) -> str | None:
    """At most `limit` bytes of a text file (its end when `tail`); None for a binary or unreadable file."""
    try:
        with path.open("rb") as fh:
            if tail:
                fh.seek(max(0, path.stat().st_size - limit))
            data = fh.read(limit)
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def _file_texts(roots: Iterable[Path], budget: int) -> tuple[list[str], int]:
    """The text files under `roots`, at most `budget` bytes in all; and what is left of the budget."""
    texts: list[str] = []
    for root in roots:
        for path in _files(root):
            if budget <= 0:
                return texts, 0
            text = _read(path, min(MAX_FILE_BYTES, budget))
            if text is not None:
                budget -= len(text)
                texts.append(text)
    return texts, budget


def task_sources(task: Task) -> list[Source]:
    """Everything of `task` the agent is never shown, one source per kind."""
    sources: list[Source] = []
    solution = [c.src for c in task.solution.copies] if task.solution else []
    if task.format == "tb1" and (yaml := Path(task.source) / "solution.yaml").is_file():
        solution.append(yaml)  # tb's other solution form; the loader runs only solution.sh
    tests, left = _file_texts([c.src for c in task.verifier.copies], MAX_TASK_BYTES)
    solved, _ = _file_texts(solution, left)
    sources.append(Source.of(f"the tests of task {task.id}", tests))
    sources.append(
        Source.of(f"the solution of task {task.id}", [*solved, task.solution.command] if task.solution else [])
    )
    seed = task.verifier.seed
    if seed is not None:
        script = [s for s in (seed.script, seed.command) if s]
        if script:
            sources.append(Source.of(f"the verification of task {task.id}", script))
        if seed.expected and seed.expected.strip():
            expected = seed.expected.strip()  # whole, even as plain words ("hello world"), and its parts
            whole = _literal(expected, min_words=2)
            label = f"the expected output of task {task.id}"
            sources.append(Source.of(label, [expected], min_words=2, literals=[whole] if whole else []))
    quoted = [next(g for g in m.groups() if g is not None) for m in _STRING.finditer(task.instruction)]
    literals = [lit for q in quoted if (lit := _literal(q))]
    sources.append(Source.of(f"the instruction of task {task.id}", [], literals=literals))
    return [x for x in sources if x]


def output_source(result: TrialResult, run_dir: Path | None) -> Source:
    """The trial's test output: the tail kept in the result and, given the run folder, the file itself."""
    texts = [result.verification_output]
    if run_dir is not None:
        path = TrialPaths(run_dir / result.trial_dir).test_output
        if path.is_file() and (text := _read(path, MAX_OUTPUT_BYTES, tail=True)) is not None:
            texts.append(text)
    return Source.of(f"the test output of trial {result.trial_id}", texts, code=False)


@dataclass(frozen=True)
class LeakGuard:
    """Refuses lesson text that names a task, carries a task-specific path, or quotes anything of a task the agent
    must not be told (its tests, reference solution, expected output, a trial's test output): lessons must
    transfer, not memorise answers."""

    names: frozenset[str]
    paths: frozenset[str]
    sources: tuple[Source, ...]

    @classmethod
    def of(cls, tasks: list[Task], results: list[TrialResult], run_dir: Path | None = None) -> LeakGuard:
        names = {t.id.lower() for t in tasks} | {t.name.lower() for t in tasks if len(t.name) >= 4}
        paths: set[str] = set()
        sources: list[Source] = []
        for t in tasks:
            paths |= {p.lower() for p in _PATH.findall(t.instruction)} | {p.lower() for p in t.files_to_modify}
            sources += task_sources(t)
        sources += [output_source(r, run_dir) for r in results]
        return cls(frozenset(names), frozenset(paths - _GENERIC_PATHS), tuple(s for s in sources if s))

    @classmethod
    def secrets_of(cls, tasks: list[Task]) -> LeakGuard:
        """Only what the agent is never shown — tests, reference solution, verification, expected output — for
        text a proposer reads about a trial, where the instruction, its paths and the task's name are fair."""
        instruction = {f"the instruction of task {t.id}" for t in tasks}
        sources = [s for t in tasks for s in task_sources(t) if s.label not in instruction]
        return cls(frozenset(), frozenset(), tuple(sources))

    def redact(self, text: str, marker: str = "[line withheld: it quotes a task's tests or solution]") -> str:
        """`text` with every line that leaks replaced by `marker` (which names nothing of what it hides)."""
        return "\n".join(marker if line.strip() and self.check(line) else line for line in text.splitlines())

    def check(self, text: str) -> str | None:
        """None when `text` may be stored; else a short reason naming what leaked and from where."""
        low = _norm(text)
        for name in sorted(self.names):
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", low):
                return f"names a task ({name!r})"
        for path in sorted(self.paths):
            if path in low:
                return f"carries a task-specific path ({path!r})"
        lesson = _Lesson.of(text)
        return next((reason for source in self.sources if (reason := source.leak(lesson))), None)

    def check_all(self, texts: Iterable[str]) -> str | None:
        """The first reason among `texts` (a lesson's text and its tags), or None."""
        return next((r for t in texts if (r := self.check(t))), None)
