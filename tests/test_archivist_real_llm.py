"""The real local model (issue #6's tier: Qwen2.5-Coder-1.5B behind llama-server, OpenAI-compatible) as the
reflection model: it must end with valid lessons or a clean skip, never a crash or a leaked answer. What it
proposed is written to test-artifacts/realllm-reflection.jsonl; its quality is not asserted (a 1.5B model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbench.archivist.guard import LeakGuard
from tbench.archivist.loop import reflection_transport
from tbench.archivist.memory_service import MemoryStore
from tbench.archivist.service import reflect
from tbench.bench.formats import load_suite
from tbench.models.lessons import LessonFile
from tbench.models.model_settings import ChatOptions, ModelSettings
from tests.conftest import EXAMPLES
from tests.synthetic import FAIL, PASS, trial
from tests.test_real_llm import ARTIFACTS, MODEL, llm_server

__all__ = ["llm_server"]
pytestmark = [pytest.mark.realllm]


def test_the_real_local_model_reflects_into_valid_lessons_or_a_clean_skip(llm_server: str, tmp_path: Path) -> None:
    tasks = load_suite(EXAMPLES / "local-suite.json").tasks
    results = [trial("r", 1, "hello-file", FAIL), trial("r", 1, "sum-numbers", PASS), trial("r", 1, "fix-median", FAIL)]
    for r in results:
        r.verification_output = "FAILED: output did not match" if r.status == "fail" else "1 passed"
    store = MemoryStore(tmp_path / "mem")
    settings = ModelSettings(openai_endpoint=llm_server, options=ChatOptions(retries=1, request_timeout_sec=300))
    log = reflect(
        store, reflection_transport(f"openai:{MODEL}", settings), run_dir=tmp_path, run_id="r", iteration=1,
        results=results, tasks=tasks, suite_tasks=tasks,
    )  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "realllm-reflection.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(log.model_dump_json() + "\n")
    assert log.status in ("applied", "skipped", "nothing_to_learn"), log
    assert log.answer is not None or log.status == "skipped"
    lessons = LessonFile.model_validate_json(store.lessons_path.read_text()).lessons if log.status == "applied" else []
    guard = LeakGuard.of(tasks, results)
    assert all(guard.check(x.text) is None and x.evidence for x in lessons)
    assert len(lessons) == sum(o.applied and "duplicate" not in (o.reason or "") for o in log.operations)
    print(json.dumps({"status": log.status, "reason": log.reason, "lessons": [x.text for x in lessons]}))
