"""The leakage guard against real task folders: it reads the tests, solutions, expected values and test output the
agent is never shown, refuses a lesson that quotes any of them, and keeps general lessons that merely share a word
with an instruction or a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbench.archivist.guard import MAX_FILE_BYTES, LeakGuard
from tbench.bench.formats import load_suite
from tbench.models.layout import TrialPaths
from tbench.models.task import Task
from tests import taskfactory
from tests.conftest import EXAMPLES
from tests.synthetic import FAIL, trial

TB2 = load_suite(EXAMPLES / "tb2").tasks
TB1 = load_suite(EXAMPLES / "tb1").tasks
SEED = load_suite(EXAMPLES / "local-suite.json").tasks
ALL = [*TB2, *TB1, *SEED]

GENERAL = [
    "IF the task asks for a median THEN sort the numbers first and handle an even count",
    "IF a test fails THEN read the whole assertion message before editing",
    "IF a task names an output file THEN write it and print the file back before finishing",
    "IF a numeric answer is required THEN recompute it with a second independent command",
    "IF a function returns the wrong value THEN write a failing case first, then fix the code",
    "IF a CSV must be summarised THEN group the rows by key and sort the keys before writing",
    "IF a command may run longer than 30 seconds THEN run it with a timeout",
]


def _task(folder: Path) -> Task:
    (task,) = load_suite(folder).tasks
    return task


@pytest.mark.parametrize("text", GENERAL)
def test_general_lessons_that_share_words_with_instructions_and_tests_are_kept(text: str) -> None:
    result = trial("r", 1, "fix-median", FAIL).model_copy(
        update={"verification_output": "FAILED test_outputs.py::test_even - assert 2 == 2.5\n1 failed, 2 passed"}
    )
    assert LeakGuard.of(ALL, [result]).check(text) is None


def test_a_backticked_single_word_is_not_a_leak_but_a_backticked_literal_is(tmp_path: Path) -> None:
    folder = taskfactory.tb2(tmp_path, "sorter")
    (folder / "instruction.md").write_text(
        "The function `median` in `stats` is wrong for `[4, 1, 3, 2]`; write the result to `result.out`."
    )
    guard = LeakGuard.of([_task(folder)], [])
    assert guard.check("IF a median is wrong THEN test an even-length list with stats") is None
    assert "[4, 1, 3, 2]" in (guard.check("IF checking THEN try [4, 1, 3, 2] first") or "")
    assert "result.out" in (guard.check("IF done THEN cat result.out") or "")


@pytest.mark.parametrize(
    "text",
    [
        "IF the middle of [4, 1, 3, 2] is asked THEN the answer is 2.5",
        "IF the middle value of four numbers is asked THEN answer 2.5",
        "IF asked for a median THEN check that median([3, 1, 2]) gives the middle",
    ],
)
def test_a_lesson_quoting_a_tests_expected_value_is_refused(text: str) -> None:
    reason = LeakGuard.of(TB2, []).check(text)
    assert reason is not None and "the tests of task fix-median" in reason


def test_a_line_of_solve_sh_is_refused(tmp_path: Path) -> None:
    solve = "cut -d, -f2 /srv/in.dat | paste -sd+ | bc > /app/sum.txt\nsed -i 's/^total=.*/total=computed/' cfg.env"
    folder = taskfactory.tb2(tmp_path, "adder", solve=solve)
    guard = LeakGuard.of([_task(folder), *TB2], [])
    for line in solve.splitlines():
        reason = guard.check(f"IF a sum is needed THEN run {line}")
        assert reason is not None and "the solution of task adder" in reason, line
    reason = LeakGuard.of(TB2, []).check("IF even THEN return s[m] if n % 2 else (s[m - 1] + s[m]) / 2")
    assert reason is not None and reason.startswith("quotes a line of the solution of task fix-median")


def test_the_files_of_tb2_tests_are_read(tmp_path: Path) -> None:
    folder = taskfactory.tb2(tmp_path, "checker")
    (folder / "tests" / "test_outputs.py").write_text(
        "import json\n\n\ndef test_answer():\n"
        "    data = json.load(open('/app/answer.json'))\n"
        "    assert data['checksum'] == 'a17f-Q9'  # the only accepted value\n"
        "    assert data['count'] == 4096 or data['count'] == 3217\n"
    )
    guard = LeakGuard.of([_task(folder)], [])
    for text in (
        "IF a checksum is asked THEN it is a17f-Q9",
        "IF a count is asked THEN it is 3217",
        "IF an answer file is written THEN put it at /app/answer.json",
        "IF the checksum is asked THEN data['checksum'] == 'a17f-Q9'",
    ):
        reason = guard.check(text)
        assert reason is not None and "the tests of task checker" in reason, text
    assert guard.check("IF a count is asked THEN it fits in 4096 entries") is None  # a round number says nothing
    assert guard.check("IF an answer file is asked for THEN write valid json and load it back") is None


def test_tb1_solution_sh_solution_yaml_and_tests_are_read(tmp_path: Path) -> None:
    folder = taskfactory.tb1(tmp_path, "legacy", solve="tr -s ' ' '\\n' < /data/essay.md | sort | uniq -c | sort -rn")
    (folder / "solution.yaml").write_text("- command: awk -F: '$3 >= 1000 {print $1}' /etc/passwd > users.lst\n")
    guard = LeakGuard.of([_task(folder), *TB1], [])
    for text, where in (
        ("IF counting words THEN tr -s ' ' '\\n' < /data/essay.md | sort | uniq -c", "solution of task legacy"),
        ("IF listing users THEN awk -F: '$3 >= 1000 {print $1}' /etc/passwd", "solution of task legacy"),
        ("IF done THEN assert Path('/app').is_dir()", "tests of task legacy"),
        ('IF testing THEN python3 -m pytest "$TEST_DIR/test_outputs.py" -rA', "the tests of task"),
    ):
        reason = guard.check(text)
        assert reason is not None and where in reason, text


def test_a_seed_tasks_expected_value_solution_and_script_are_refused(tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "name": "s",
                "tasks": [
                    {
                        "id": "inventory",
                        "name": "Inventory report",
                        "description": "Write a summary of the stock to the terminal.",
                        "verification": {
                            "type": "output",
                            "command": "./report --summary",
                            "expected": "total 42 crates",
                        },
                        "solution": "cd src\nmake release-build\ncp build/report.bin ../report",
                    },
                    {
                        "id": "selfcheck",
                        "name": "Self check",
                        "description": "Build a program that checks itself.",
                        "verification": {"type": "custom", "script": "test -x dist/tool && ./dist/tool --self-check"},
                    },
                ],
            }
        )
    )
    guard = LeakGuard.of([*load_suite(suite).tasks, *SEED], [])
    for text, where in (
        ("IF a stock summary is asked THEN print total 42 crates", "expected output of task inventory"),
        ("IF building THEN run make release-build first", "solution of task inventory"),
        ("IF verifying THEN run test -x dist/tool && ./dist/tool --self-check", "verification of task selfcheck"),
        ("IF numbers are summed THEN the result is 5055", "expected output of task sum-numbers"),
        ("IF summing a column THEN awk '{s+=$1} END {print s}'", "solution of task sum-numbers"),
        ("IF a greeting is asked THEN write 'Hello, world!'", "task hello-file"),
    ):
        reason = guard.check(text)
        assert reason is not None and where in reason, text
    assert guard.check("IF a report is asked THEN print the totals and count the rows twice") is None


def test_a_phrase_from_the_trials_test_output_is_refused(tmp_path: Path) -> None:
    result = trial("r", 1, "fix-median", FAIL).model_copy(
        update={
            "verification_output": "E   AssertionError: median of an even list must be the mean of both middle ones"
        }
    )
    output = TrialPaths(tmp_path / result.trial_dir).test_output
    output.parent.mkdir(parents=True)
    output.write_text("collected 3 items\n" + "x" * 200 + "\nE   hint: the sentinel row zeta-omega is missing 0.375\n")
    told = "IF a median fails THEN remember the median of an even list must be the mean of both middle ones"
    from_file = [
        "IF rows are missing THEN note the sentinel row zeta-omega is missing",
        "IF a ratio is off THEN use 0.375",
    ]
    guard = LeakGuard.of(TB2, [result], tmp_path)
    assert f"the test output of trial {result.trial_id}" in (guard.check(told) or "")
    for text in from_file:
        assert f"the test output of trial {result.trial_id}" in (guard.check(text) or ""), text
    without_file = LeakGuard.of(TB2, [result])  # only the result's tail: the file is what caught them
    assert without_file.check(told) is not None
    assert [without_file.check(t) for t in from_file] == [None, None]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("IF working on hello-file THEN write the greeting first", "names a task ('hello-file')"),
        ("IF the task is fix-median THEN sort the list first", "names a task ('fix-median')"),
        ("IF asked to fix the median function THEN sort first", "names a task ('fix the median function')"),
        ("IF you see numbers.txt THEN sum with awk before writing", "task-specific path ('numbers.txt')"),
        ("IF a stats.py median is wrong THEN average the middle two", "task-specific path ('stats.py')"),
        ("IF a greeting goes to /app/hello.txt THEN echo it", "task-specific path ('/app/hello.txt')"),
    ],
)
def test_task_ids_names_and_task_specific_paths_are_still_refused(text: str, why: str) -> None:
    assert why in (LeakGuard.of(ALL, []).check(text) or "")


def test_check_all_covers_tags_and_binary_or_oversized_files_are_bounded(tmp_path: Path) -> None:
    folder = taskfactory.tb2(tmp_path, "bounded")
    (folder / "tests" / "blob.bin").write_bytes(b"\0\1\2 secret phrase inside a binary blob 7.125\0")
    (folder / "tests" / "big.txt").write_text("filler " * MAX_FILE_BYTES + "beyond the cap lies 9.8765")
    guard = LeakGuard.of([_task(folder)], [])
    assert guard.check_all(["IF stuck THEN read the assertion", "bugfix"]) is None
    assert "names a task" in (guard.check_all(["IF stuck THEN read the assertion", "bounded"]) or "")
    assert guard.check("IF a ratio is asked THEN it is 7.125") is None  # binary files are not read
    assert guard.check("IF a ratio is asked THEN it is 9.8765") is None  # past the per-file cap
    assert "the tests of task bounded" in (guard.check("IF asked THEN filler filler filler filler filler filler") or "")
