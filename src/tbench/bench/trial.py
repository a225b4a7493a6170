"""One trial, one direction: task → environment → agent → verifier → TrialResult.

The outcome comes from the tests only; what went wrong along the way is kept apart as a failure mode.
Whatever happens, the environment is stopped (also on Ctrl-C) and a result comes back — one failing trial
never ends the run.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tbench.bench.environments.base import AgentNeeds, Environment, TrialLabels, ms_since
from tbench.bench.verifier import Verdict, verify
from tbench.errors import FailureMode, ModelServerError, TrialError
from tbench.fsutil import tail
from tbench.models.common import Tokens, utcnow
from tbench.models.grading import Outcome
from tbench.models.layout import AGENT_DIR
from tbench.models.results import PhaseTimings, TrialResult
from tbench.models.task import Task
from tbench.models.trial import TrialSpec

#: How long past its own budget an agent may take to return before the trial stops waiting for it.
AGENT_GRACE_SEC = 30.0
SETUP_TIMEOUT_SEC = 600.0
#: Engine work around a phase's own limit (copies, container start/removal) that may add to its budget.
PHASE_SLACK_SEC = 120.0


@dataclass(frozen=True)
class AgentContext:
    instruction: str
    timeout_sec: float
    """Wall-clock budget for the whole agent phase; commands the agent runs must end within it."""
    max_turns: int | None
    logs_dir: Path
    """The trial's `agent/` folder: raw agent output and the trajectory go here."""
    system_prompt_append: str | None = None
    """Extra system-prompt text (lessons): one place, so every agent injects the same way."""
    budget_hint: bool = True
    """Tell the agent its time budget (system prompt; the tool loop also each turn's time left)."""
    tools: tuple[str, ...] | None = None
    """The only tools the agent may offer its model (an agent profile's `tools`); None: all of its own."""

    @property
    def budget_sec(self) -> float | None:
        """The budget to tell the agent, or None when it is not to be told."""
        return self.timeout_sec if self.budget_hint else None


@dataclass
class AgentResult:
    turns: int = 0
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float | None = None
    timed_out: bool = False
    failure_mode: FailureMode | None = None
    """Set when the agent itself failed (`agent_error`) or its model server did (`infra_error`)."""
    error: str | None = None
    model_server_down: bool = False
    """The infra error was the model server's (refused, 5xx, stalled): the run's circuit breaker counts it."""


class Agent(Protocol):
    name: str

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult: ...

    def environment_needs(self, task: Task) -> AgentNeeds:
        """What the environment must provide before it starts (a mounted binary, the host's network)."""
        ...


EnvMaker = Callable[[Task, TrialLabels, Path], Environment]
PhaseHook = Callable[[str, float | None], None]


def decide(
    agent: AgentResult | None, verdict: Verdict | None, error: TrialError | None
) -> tuple[Outcome, FailureMode | None, str | None]:
    """The outcome rule, in one place. Tests decide pass/fail; an agent timeout still gets its tests run
    (a pass after a timeout stays a pass, marked `agent_timeout`)."""
    if error is not None:
        return "error", error.mode, str(error)
    if agent is not None and agent.failure_mode is FailureMode.INFRA_ERROR:
        return "error", FailureMode.INFRA_ERROR, agent.error
    assert verdict is not None
    if verdict.timed_out:
        return "timeout", FailureMode.TEST_TIMEOUT, verdict.error
    if verdict.passed is None:
        return "error", verdict.failure_mode or FailureMode.PARSE_ERROR, verdict.error
    agent_mode = None
    agent_error = None
    if agent is not None and agent.timed_out:
        agent_mode, agent_error = FailureMode.AGENT_TIMEOUT, agent.error or "agent ran out of time"
    elif agent is not None and agent.failure_mode is not None:
        agent_mode, agent_error = agent.failure_mode, agent.error
    if verdict.passed:
        return "pass", agent_mode, agent_error
    if agent_mode is FailureMode.AGENT_TIMEOUT:
        return "timeout", agent_mode, agent_error
    return "fail", agent_mode, agent_error


class _TrialLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"{utcnow()} {message}\n")


def _run_agent(agent: Agent, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
    """Run the agent in a thread so a hung agent cannot hold the trial past its budget plus grace."""
    box: list[AgentResult | BaseException] = []

    def target() -> None:
        try:
            box.append(agent.run_task(task, env, ctx))
        except BaseException as exc:
            box.append(exc)

    worker = threading.Thread(target=target, name=f"agent-{task.id}", daemon=True)
    worker.start()
    worker.join(timeout=ctx.timeout_sec + AGENT_GRACE_SEC)
    if worker.is_alive():
        return AgentResult(timed_out=True, error=f"agent did not return within {ctx.timeout_sec:g}s")
    outcome = box[0]
    if isinstance(outcome, TrialError):
        return AgentResult(
            failure_mode=outcome.mode, error=str(outcome), model_server_down=isinstance(outcome, ModelServerError)
        )
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, Exception):
            raise outcome
        (ctx.logs_dir / "exception.txt").write_text("".join(traceback.format_exception(outcome)))
        return AgentResult(failure_mode=FailureMode.AGENT_ERROR, error=f"{type(outcome).__name__}: {outcome}")
    return outcome


def _run_setup(task: Task, env: Environment, log_path: Path) -> None:
    for i, command in enumerate(task.setup):
        res = env.exec(command, timeout_sec=SETUP_TIMEOUT_SEC, log_path=log_path)
        if res.exit_code != 0:
            raise TrialError(
                f"setup[{i}] failed (exit {res.exit_code}): {tail(res.output, 300)}", FailureMode.BUILD_ERROR
            )


def _act_and_verify(
    spec: TrialSpec,
    agent: Agent,
    env: Environment,
    timeout: float,
    timings: PhaseTimings,
    log: _TrialLog,
    on_phase: PhaseHook,
) -> tuple[AgentResult, Verdict | None]:
    """The agent acts, then — unless its model server failed — the task's own tests judge."""
    task = spec.task
    verdict: Verdict | None = None
    ctx = AgentContext(
        instruction=task.instruction,
        timeout_sec=timeout,
        max_turns=task.max_turns or spec.max_turns,
        logs_dir=spec.trial_dir / AGENT_DIR,
        system_prompt_append=spec.system_prompt_append,
        budget_hint=spec.budget_hint,
        tools=spec.tools,
    )
    ctx.logs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    on_phase("agent", timeout + AGENT_GRACE_SEC)
    agent_result = _run_agent(agent, task, env, ctx)
    timings.agent_ms = ms_since(t0)
    log(
        f"agent finished in {timings.agent_ms} ms: timed_out={agent_result.timed_out} "
        f"mode={agent_result.failure_mode} error={agent_result.error}"
    )
    if agent_result.failure_mode is not FailureMode.INFRA_ERROR:
        t0 = time.monotonic()
        on_phase("verifier", task.verifier.timeout_sec + PHASE_SLACK_SEC)
        verdict = verify(task, env, spec.trial_dir)
        timings.verifier_ms = ms_since(t0)
        log(
            f"verifier finished in {timings.verifier_ms} ms: passed={verdict.passed} "
            f"timed_out={verdict.timed_out} mode={verdict.failure_mode}"
        )
    return agent_result, verdict


def _no_phase(phase: str, budget_sec: float | None) -> None:
    return None


def run_trial(spec: TrialSpec, agent: Agent, make_env: EnvMaker, on_phase: PhaseHook = _no_phase) -> TrialResult:
    """`on_phase(name, budget_sec)` is called as each phase starts: a worker's heartbeat reports it, so the
    orchestrator can tell a slow phase from a stuck one."""
    task = spec.task
    spec.trial_dir.mkdir(parents=True, exist_ok=True)
    log = _TrialLog(spec.trial_dir / "trial.log")
    started_at, t_start = utcnow(), time.monotonic()
    timings = PhaseTimings()
    labels = TrialLabels(run_id=spec.run_id, trial_id=spec.trial_id, task_id=task.id)
    agent_result: AgentResult | None = None
    verdict: Verdict | None = None
    error: TrialError | None = None
    timeout = task.agent_timeout_sec or spec.default_timeout_sec
    log(f"trial {spec.trial_id} task={task.id} model={spec.model_label} agent_timeout={timeout:g}s")
    env = make_env(task, labels, spec.trial_dir)
    try:
        env.prepare(agent.environment_needs(task))
        t0 = time.monotonic()
        on_phase("environment", task.environment.build_timeout_sec + PHASE_SLACK_SEC)
        env.start()
        timings.environment_ms = ms_since(t0)
        log(f"environment ready in {timings.environment_ms} ms (workdir {env.workdir})")
        if task.setup:
            on_phase("setup", SETUP_TIMEOUT_SEC * len(task.setup))
            t0 = time.monotonic()
            _run_setup(task, env, spec.trial_dir / "setup.log")
            timings.setup_ms = ms_since(t0)
        agent_result, verdict = _act_and_verify(spec, agent, env, timeout, timings, log, on_phase)
    except TrialError as exc:
        error = exc
        log(f"trial error ({exc.mode}): {exc}")
    except Exception as exc:  # a bug or an engine surprise: classify as infra, keep the traceback
        error = TrialError(f"{type(exc).__name__}: {exc}", FailureMode.INFRA_ERROR)
        (spec.trial_dir / "exception.txt").write_text("".join(traceback.format_exception(exc)))
        log(f"unexpected error: {error}")
    finally:
        t0 = time.monotonic()
        on_phase("teardown", PHASE_SLACK_SEC)
        env.stop()
        timings.teardown_ms = ms_since(t0)
    status, mode, message = decide(agent_result, verdict, error)
    log(f"outcome {status} failure_mode={mode}")
    result = _result(spec, started_at, ms_since(t_start), timings, agent_result, verdict, (status, mode, message))
    result.images = env.images
    return result


def _result(
    spec: TrialSpec,
    started_at: str,
    duration_ms: int,
    timings: PhaseTimings,
    agent: AgentResult | None,
    verdict: Verdict | None,
    decision: tuple[Outcome, FailureMode | None, str | None],
) -> TrialResult:
    status, mode, message = decision
    tokens = agent.tokens if agent else Tokens()
    return TrialResult(
        trial_id=spec.trial_id,
        run_id=spec.run_id,
        iteration=spec.iteration,
        task_id=spec.task.id,
        task_name=spec.task.name,
        model=spec.model_label,
        status=status,
        failure_mode=mode,
        error_message=message,
        rewards=verdict.rewards if verdict else None,
        parser_results=verdict.parser_results if verdict else None,
        duration_ms=duration_ms,
        turns=agent.turns if agent else 0,
        tokens_used=tokens.total,
        tokens=tokens,
        cost_usd=agent.cost_usd if agent else None,
        timings=timings,
        verification_output=verdict.output if verdict else "",
        started_at=started_at,
        finished_at=utcnow(),
        trial_dir=spec.trial_dir.relative_to(spec.run_dir).as_posix(),
        lesson_ids=list(spec.lesson_ids),
        model_server_down=bool(agent and agent.model_server_down and mode is FailureMode.INFRA_ERROR),
    )
