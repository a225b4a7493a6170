"""`tbench train plan PLAN.toml`: size a plan before spending a night on it. The per-task variance is measured
from the project's episode store (every earlier trial of these tasks by this model in this suite); the trials per
task a target effect needs, and every reason the plan cannot detect it, come from stats/power.py. Reads only:
nothing is written, not even the held-out split."""

from __future__ import annotations

from pathlib import Path

from tbench.agents.model_adapter import DEFAULT_MODEL, build_model_plan
from tbench.archivist.holdout import read_split
from tbench.bench.episode_store import EpisodeStore
from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.models.layout import ProjectLayout
from tbench.models.model_settings import ModelSettings
from tbench.stats.power import PowerPlan, plan_power, within_variance
from tbench.trainer.schema import load_plan
from tbench.trainer.service import resolve_profiles


def power_plan(plan_path: Path, project_root: Path, settings: ModelSettings, effect: float | None = None) -> PowerPlan:
    plan = load_plan(plan_path)
    if effect is not None and not 0 < effect < 1:
        raise UserError(f"must be between 0 and 100 pp (got {effect * 100:g})", field="effect")
    profiles = resolve_profiles(project_root, plan.profiles)
    suite = load_suite(Path(plan.suite), plan.tasks)
    ids = [t.id for t in suite.tasks]
    split = read_split(ProjectLayout(project_root).memory_dir)
    held: set[str] = set()
    if plan.split.holdout > 0:
        drawn = split.suites.get(suite.name) if split else None
        # not drawn yet (the first run draws it): about this many
        held = set(drawn.held_out) if drawn else set(ids[: round(len(ids) * plan.split.holdout)])
    compared = len(held) if plan.strategy == "evolve" else len(ids) - len(held)
    """evolve: its verdict is the held-out confirmation; ab: every task outside the held-out split."""
    reference = profiles[0]
    model = build_model_plan(reference.model or plan.model or DEFAULT_MODEL, settings).primary.label
    index = EpisodeStore(ProjectLayout(project_root).gym_dir).index()
    counts: list[tuple[int, int]] = []
    for task_id in ids:  # the variance is the suite's, measured on every task with history
        past = [t for t in index.history(task_id=task_id, model=model, suite_name=suite.name) if t.is_graded]
        if past:
            counts.append((len(past), sum(t.status == "pass" for t in past)))
    w = within_variance(counts)
    measured = sum(1 for n, _ in counts if n >= 2)
    source = (
        f"{sum(n for n, _ in counts)} earlier trial(s) of {measured} task(s) by {model} in the episode store"
        if w is not None
        else "assumed (no task has two earlier graded trials by this model in the episode store)"
    )
    known = [c / n for n, c in counts]
    rates = [known[i % len(known)] for i in range(compared)] if known and len(counts) * 2 >= len(ids) else []
    profiles_compared = len(profiles) if plan.strategy == "ab" else 2
    return plan_power(
        tasks=compared,
        profiles=profiles_compared,
        effect=plan.power.effect if effect is None else effect,
        power=plan.power.power,
        alpha=plan.alpha,
        k=plan.trials_per_task,
        w=w,
        source=source,
        measured_tasks=measured,
        rates=rates,
        budget_trials=plan.budget.trials,
    )


def plan_text(p: PowerPlan) -> str:
    """The plan's power in words and a small table (80 columns)."""
    lines = [
        f"{p.tasks} task(s) x {p.profiles} profile(s), alpha {p.alpha:.3g} per comparison, target "
        f"{p.effect * 100:g} pp at {p.power:.0%} power",
        f"within-task variance p(1-p) = {p.within_variance:.3f}: {p.variance_source}",
        f"planned: {p.planned_k} trial(s) per task -> power {p.planned_power:.0%} for {p.effect * 100:g} pp, "
        f"smallest detectable effect {p.planned_mde * 100:.1f} pp",
    ]
    if p.simulated_power is not None:
        lines.append(f"simulated power of the exact test on the measured task rates: {p.simulated_power:.0%}")
    needed = "more than 100" if p.needed_k is None else str(p.needed_k)
    lines.append(f"needed for {p.power:.0%} power: {needed} trial(s) per task")
    lines.append(f"the plan runs at most {p.trials_for_plan} trials" +
                 (f" (budget: {p.budget_trials})" if p.budget_trials is not None else ""))  # fmt: skip
    lines.append("")
    lines.append("trials/task   detectable effect   power for target")
    for row in p.table:
        lines.append(f"{row.trials_per_task:>11}   {row.mde * 100:>14.1f} pp   {row.power:>16.0%}")
    for w in p.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
