"""Planning and racing for paired A/B runs of agent profiles (learning.md §6).

- Power: how many trials per task a paired comparison on n tasks needs to detect an effect, from the measured
  within-task variance. The closed form is the normal approximation of the paired per-task difference; the
  simulation applies tbench's own verdict rule (exact sign test and paired bootstrap, `compare`), which is
  stricter — with few tasks the exact test, not the variance, is what limits a plan.
- Alpha spending: racing looks at the data after every round. Each look may spend only its share of alpha
  (cumulative alpha · (r/R)², an O'Brien-Fleming-like shape: little early, most at the end), so the chance of any
  false verdict over all looks stays at most alpha (a union bound; the looks are positively correlated, so it is
  conservative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel

from tbench.stats.inference import ALPHA, exact_sign_test, min_differing_tasks

DEFAULT_WITHIN_VARIANCE = 0.12
"""Mean within-task Bernoulli variance p(1-p) assumed when none is measured: TB-like tasks are bimodal (most
always or never pass), learning.md §6."""
_N = NormalDist()


def alpha_spent(alpha: float, look: int, looks: int) -> float:
    """Cumulative alpha that may be spent by look `look` of `looks`."""
    if looks < 1 or not 0 <= look <= looks:
        raise ValueError(f"look {look} of {looks}")
    return alpha * (look / looks) ** 2


def look_alpha(alpha: float, look: int, looks: int) -> float:
    """The alpha of one look: its share of the spending function."""
    return alpha_spent(alpha, look, looks) - alpha_spent(alpha, look - 1, looks)


def within_variance(rates: Sequence[tuple[int, int]]) -> float | None:
    """Mean within-task variance from (graded, passed) per task: the unbiased p(1-p)·n/(n-1) of each task with
    at least two graded trials; None when no task has two."""
    values = [(c / n) * (1 - c / n) * n / (n - 1) for n, c in rates if n >= 2]
    return sum(values) / len(values) if values else None


def standard_error(tasks: int, k: int, w: float) -> float:
    """SE of the mean paired per-task difference with k trials per task on each side."""
    return math.sqrt(2 * w / (k * tasks))


def power_at(effect: float, tasks: int, k: int, w: float, alpha: float = ALPHA) -> float:
    """Normal-approximation power of a two-sided paired test at level alpha."""
    se = standard_error(tasks, k, w)
    if se == 0:
        return 1.0
    return _N.cdf(effect / se - _N.inv_cdf(1 - alpha / 2))


def mde(tasks: int, k: int, w: float, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Minimum detectable effect (pass-rate difference) at `power`."""
    return (_N.inv_cdf(1 - alpha / 2) + _N.inv_cdf(power)) * standard_error(tasks, k, w)


def trials_needed(effect: float, tasks: int, w: float, alpha: float = ALPHA, power: float = 0.8,
                  k_max: int = 100) -> int | None:  # fmt: skip
    """Fewest trials per task reaching `power` for `effect`, or None when even k_max does not."""
    for k in range(1, k_max + 1):
        if power_at(effect, tasks, k, w, alpha) >= power:
            return k
    return None


def simulated_power(
    rates: Sequence[float], effect: float, k: int, alpha: float = ALPHA, sims: int = 400, seed: int = 0
) -> float:
    """Share of simulated A/B runs in which tbench's exact sign test (the stricter half of its verdict rule) finds
    B better, where A passes task i with `rates[i]` and B with `rates[i] + effect` (clipped to [0, 1])."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pa = np.asarray(rates, dtype=np.float64)
    pb = np.clip(pa + effect, 0.0, 1.0)
    hits = 0
    for _ in range(sims):
        a = rng.binomial(k, pa)
        b = rng.binomial(k, pb)
        better, worse = int((b > a).sum()), int((b < a).sum())
        hits += better > worse and exact_sign_test(better, worse) < alpha
    return hits / sims


class PowerRow(BaseModel):
    trials_per_task: int
    mde: float
    """Minimum detectable effect at the plan's power (normal approximation)."""
    power: float
    """Power for the plan's target effect (normal approximation)."""


class PowerPlan(BaseModel):
    """What `tbench train plan` prints: for the suite's size and measured variance, the trials per task a target
    effect needs, and whether the plan can detect it."""

    tasks: int
    profiles: int
    effect: float
    power: float
    alpha: float
    """Per comparison (alpha shared over the profile pairs)."""
    within_variance: float
    variance_source: str
    """Where `within_variance` came from (the episode store's trials, or the assumption)."""
    measured_tasks: int
    planned_k: int
    planned_power: float
    planned_mde: float
    simulated_power: float | None
    """The exact test's power at the planned k, simulated on the measured per-task rates."""
    needed_k: int | None
    """Fewest trials per task for the target power (None: more than 100)."""
    min_tasks: int
    """Fewest tasks that must differ before the exact test can reach alpha."""
    trials_for_plan: int
    """Trials the plan runs at most (every profile, every task, k each)."""
    budget_trials: int | None
    table: list[PowerRow]
    warnings: list[str]


def plan_power(
    *,
    tasks: int,
    profiles: int,
    effect: float,
    power: float,
    alpha: float,
    k: int,
    w: float | None,
    source: str,
    measured_tasks: int,
    rates: Sequence[float],
    budget_trials: int | None,
) -> PowerPlan:
    """The power plan, and every reason the plan may not detect what it is after."""
    pairs = max(1, profiles * (profiles - 1) // 2)
    a = alpha / pairs
    wv = DEFAULT_WITHIN_VARIANCE if w is None else max(w, 1e-6)
    needed = trials_needed(effect, tasks, wv, a, power)
    warnings: list[str] = []
    planned = power_at(effect, tasks, k, wv, a)
    sim = simulated_power(rates, effect, k, a) if rates else None
    if planned < power:
        more = f"{needed} trials per task would" if needed else "not even 100 trials per task would"
        warnings.append(
            f"this plan cannot reliably detect {effect * 100:g} pp: {k} trials per task on {tasks} tasks give "
            f"{planned:.0%} power (the smallest effect it detects at {power:.0%} is "
            f"{mde(tasks, k, wv, a, power) * 100:.1f} pp); {more} reach {power:.0%}"
        )
    least = min_differing_tasks(a)
    if tasks < least:
        warnings.append(
            f"only {tasks} task(s): the exact test needs at least {least} tasks differing in one direction to "
            f"reach p < {a:.3g}, so no verdict is possible; add tasks"
        )
    if sim is not None and sim < power <= planned:
        warnings.append(
            f"the exact test tbench applies reaches only {sim:.0%} power in simulation on the measured task "
            f"rates (tasks that always or never pass cannot differ); plan more trials or more tasks"
        )
    total = tasks * profiles * k
    if budget_trials is not None and budget_trials < total:
        warnings.append(
            f"the budget ({budget_trials} trials) is below the plan's {total}; racing may stop a profile early, "
            f"but the last rounds may not run"
        )
    if w is None:
        warnings.append(f"no measured variance for this suite and model: assumed p(1-p) = {wv:g} (learning.md §6)")
    return PowerPlan(
        tasks=tasks,
        profiles=profiles,
        effect=effect,
        power=power,
        alpha=a,
        within_variance=wv,
        variance_source=source,
        measured_tasks=measured_tasks,
        planned_k=k,
        planned_power=planned,
        planned_mde=mde(tasks, k, wv, a, power),
        simulated_power=sim,
        needed_k=needed,
        min_tasks=least,
        trials_for_plan=total,
        budget_trials=budget_trials,
        table=[
            PowerRow(trials_per_task=kk, mde=mde(tasks, kk, wv, a, power), power=power_at(effect, tasks, kk, wv, a))
            for kk in sorted({1, 2, 3, 5, 10, 20, k, *([needed] if needed else [])})
        ],
        warnings=warnings,
    )
