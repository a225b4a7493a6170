"""Statistics for noisy pass rates (the protocol of learning.md §6), computed from `TrialResult`s.

The unit of analysis is the task: trials of one task share its difficulty, so they are not independent.
Run-level figures therefore average per-task rates, intervals resample tasks and then trials, and a
comparison pairs the two sides task by task. Ungraded trials (infra and build errors, by the grading policy in
models/grading.py) say nothing about the agent: they are left out of every rate and counted apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import median
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tbench.models.results import TrialResult, tally

if TYPE_CHECKING:  # numpy loads on first use: the loop imports this module at start-up
    import numpy as np
    import numpy.typing as npt

    _Ints = npt.NDArray[np.int64]
    _Floats = npt.NDArray[np.float64]

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""
DEFAULT_RESAMPLES = 10_000
"""For comparisons: their interval decides a verdict."""
DESCRIPTIVE_RESAMPLES = 2_000
"""For a run's own pass@1 interval, which decides nothing; a report holds one per model, so it is kept cheap."""
DEFAULT_SEED = 0
ALPHA = 0.05

Cell = Literal["pass", "fail", "timeout", "error", "infra"]
Verdict = Literal["improved", "regressed", "no significant change", "no common tasks"]
Test = Literal["mcnemar", "sign"]


def is_infra(r: TrialResult) -> bool:
    """Not graded (an infra or build error): the grading policy's rule, under the name the reports use."""
    return not r.is_graded


def cell_of(r: TrialResult) -> Cell:
    """The outcome with ungraded trials told apart from other errors (the grid shows them differently)."""
    return "infra" if is_infra(r) else r.status


# ---------------------------------------------------------------- closed forms


class Interval(BaseModel):
    low: float
    high: float


def wilson(passed: int, n: int, z: float = Z95) -> Interval | None:
    """Wilson score interval of passed/n: unlike p ± z·se it stays in [0, 1] and is not zero-width at 0/n or n/n."""
    if n <= 0:
        return None
    if not 0 <= passed <= n:
        raise ValueError(f"passed={passed} outside 0..{n}")
    p = passed / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == n else min(1.0, centre + half)
    return Interval(low=low, high=high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): chance that at least one of k of the n trials passed."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k (τ-bench): chance that all k of k trials drawn from the n passed."""
    _check(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")


def exact_sign_test(positive: int, negative: int) -> float:
    """Two-sided exact binomial test of positive vs negative under p = 1/2; ties are dropped before.

    With one trial per task and side this is the exact McNemar test (the discordant tasks are the signs).
    """
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(positive, negative) + 1))
    return min(1.0, float(2 * tail / 2**n))


def min_differing_tasks(alpha: float = ALPHA) -> int:
    """Fewest differing tasks (all in one direction) for which the exact test can give p < alpha."""
    n = 1
    while exact_sign_test(n, 0) >= alpha:
        n += 1
    return n


# ---------------------------------------------------------------- per run


class RateLine(BaseModel):
    """A pass rate over graded trials (the grading policy's tally); ungraded trials are counted, never graded."""

    trials: int
    graded: int
    passed: int
    infra_errors: int
    """Ungraded trials of every kind (infra and build errors); `build_errors` says how many were builds."""
    build_errors: int = 0
    rate: float | None
    interval: Interval | None
    """Wilson 95%."""

    @classmethod
    def of(cls, trials: Sequence[TrialResult]) -> RateLine:
        t = tally(trials)
        return cls(
            trials=t.trials,
            graded=t.graded,
            passed=t.passed,
            infra_errors=t.ungraded,
            build_errors=t.build_errors,
            rate=t.passed / t.graded if t.graded else None,
            interval=wilson(t.passed, t.graded),
        )


class IterationStat(BaseModel):
    iteration: int
    model: str | None
    """None: all models of the run together."""
    rate: RateLine
    failed: int
    timeout: int
    error: int
    retries: int
    duration_mean_ms: float
    duration_median_ms: float
    tokens: int
    cost_usd: float | None


class TaskStat(BaseModel):
    task_id: str
    model: str
    graded: int
    passed: int
    infra_errors: int
    rate: float | None
    flaky: bool
    """Passed in some graded trials and failed in others."""


class PassK(BaseModel):
    k: int
    tasks: int
    """Tasks with at least k graded trials; only these count."""
    pass_at_k: float
    pass_hat_k: float


class CostStat(BaseModel):
    """Spend per trial and per pass; every trial costs, graded or not."""

    trials: int
    passes: int
    tokens: int
    cost_usd: float | None
    """None when no trial reported a cost."""
    cost_known: int
    """Trials that reported a cost."""
    tokens_per_trial: float | None
    tokens_per_pass: float | None
    cost_per_trial: float | None
    cost_per_pass: float | None

    @classmethod
    def of(cls, trials: Sequence[TrialResult]) -> CostStat:
        n = len(trials)
        passes = sum(r.status == "pass" and not is_infra(r) for r in trials)
        tokens = sum(r.tokens_used for r in trials)
        costs = [r.cost_usd for r in trials if r.cost_usd is not None]
        cost = sum(costs) if costs else None
        return cls(
            trials=n,
            passes=passes,
            tokens=tokens,
            cost_usd=cost,
            cost_known=len(costs),
            tokens_per_trial=tokens / n if n else None,
            tokens_per_pass=tokens / passes if passes else None,
            cost_per_trial=cost / len(costs) if cost is not None else None,
            cost_per_pass=cost / passes if cost is not None and passes else None,
        )


class RunStats(BaseModel):
    models: list[str]
    overall: RateLine
    """All graded trials pooled (trials of one task are correlated: use pass@1 and its interval for the mean)."""
    pass_at_1: float | None
    """Mean per-task pass rate."""
    pass_at_1_interval: Interval | None
    """Bootstrap over tasks, then trials (seeded)."""
    retries: int
    iterations: list[IterationStat]
    """All models together; see `by_model` for the split."""
    tasks: list[TaskStat]
    flaky: list[TaskStat]
    pass_k: list[PassK]
    cost: CostStat
    duration_mean_ms: float | None
    duration_median_ms: float | None
    infra_tasks: dict[str, int] = Field(default_factory=dict)
    """task_id → infra errors, for tasks that had any."""


def by_model(trials: Iterable[TrialResult]) -> dict[str, list[TrialResult]]:
    out: dict[str, list[TrialResult]] = defaultdict(list)
    for r in trials:
        out[r.model].append(r)
    return dict(sorted(out.items()))


def iteration_stats(trials: Sequence[TrialResult], model: str | None = None) -> list[IterationStat]:
    groups: dict[int, list[TrialResult]] = defaultdict(list)
    for r in trials:
        groups[r.iteration].append(r)
    out = []
    for i in sorted(groups):
        rs = groups[i]
        costs = [r.cost_usd for r in rs if r.cost_usd is not None]
        durations = [r.duration_ms for r in rs]
        out.append(
            IterationStat(
                iteration=i,
                model=model,
                rate=RateLine.of(rs),
                failed=sum(r.status == "fail" for r in rs),
                timeout=sum(r.status == "timeout" for r in rs),
                error=sum(r.status == "error" and not is_infra(r) for r in rs),
                retries=sum(r.retries for r in rs),
                duration_mean_ms=sum(durations) / len(durations),
                duration_median_ms=float(median(durations)),
                tokens=sum(r.tokens_used for r in rs),
                cost_usd=sum(costs) if costs else None,
            )
        )
    return out


def task_stats(trials: Sequence[TrialResult]) -> list[TaskStat]:
    """One line per (task, model), in first-seen order."""
    groups: dict[tuple[str, str], list[TrialResult]] = defaultdict(list)
    for r in trials:
        groups[(r.task_id, r.model)].append(r)
    out = []
    for (task_id, model), rs in groups.items():
        line = RateLine.of(rs)
        out.append(
            TaskStat(
                task_id=task_id,
                model=model,
                graded=line.graded,
                passed=line.passed,
                infra_errors=line.infra_errors,
                rate=line.rate,
                flaky=tally(rs).flaky,
            )
        )
    return out


def pass_k_table(tasks: Sequence[TaskStat], ks: Iterable[int] = (1, 2, 3, 5, 10, 20, 50, 100)) -> list[PassK]:
    """pass@k and pass^k averaged over the tasks that have at least k graded trials."""
    most = max((t.graded for t in tasks), default=0)
    out = []
    for k in ks:
        if k > most:
            break
        usable = [t for t in tasks if t.graded >= k]
        out.append(
            PassK(
                k=k,
                tasks=len(usable),
                pass_at_k=sum(pass_at_k(t.graded, t.passed, k) for t in usable) / len(usable),
                pass_hat_k=sum(pass_hat_k(t.graded, t.passed, k) for t in usable) / len(usable),
            )
        )
    return out


def run_stats(
    trials: Sequence[TrialResult], *, resamples: int = DESCRIPTIVE_RESAMPLES, seed: int = DEFAULT_SEED
) -> RunStats:
    import numpy as np

    tasks = task_stats(trials)
    graded_tasks = [t for t in tasks if t.graded]
    durations = [r.duration_ms for r in trials]
    n = np.array([t.graded for t in graded_tasks], dtype=np.int64)
    c = np.array([t.passed for t in graded_tasks], dtype=np.int64)
    return RunStats(
        models=sorted({r.model for r in trials}),
        overall=RateLine.of(trials),
        pass_at_1=float((c / n).mean()) if len(n) else None,
        pass_at_1_interval=_interval(_bootstrap_mean(n, c, resamples, seed)) if len(n) else None,
        retries=sum(r.retries for r in trials),
        iterations=iteration_stats(trials),
        tasks=tasks,
        flaky=[t for t in tasks if t.flaky],
        pass_k=pass_k_table(graded_tasks),
        cost=CostStat.of(trials),
        duration_mean_ms=sum(durations) / len(durations) if durations else None,
        duration_median_ms=float(median(durations)) if durations else None,
        infra_tasks={t.task_id: t.infra_errors for t in tasks if t.infra_errors},
    )


# ---------------------------------------------------------------- paired comparison


class TaskDiff(BaseModel):
    task_id: str
    a_graded: int
    a_passed: int
    b_graded: int
    b_passed: int
    a_rate: float
    b_rate: float
    diff: float
    """b_rate - a_rate."""


class Comparison(BaseModel):
    """B against A on the tasks both graded. Positive differences mean B passes more."""

    label_a: str
    label_b: str
    tasks: int
    only_a: list[str] = Field(default_factory=list)
    only_b: list[str] = Field(default_factory=list)
    ungraded: list[str] = Field(default_factory=list)
    """Common tasks left out because one side has only infra errors on them."""
    infra_a: int
    infra_b: int
    trials_a: int
    trials_b: int
    rate_a: float | None
    rate_b: float | None
    """Mean per-task pass rate on the compared tasks."""
    diff: float | None
    interval: Interval | None
    """Paired bootstrap 95% interval of `diff`: tasks resampled, then each side's trials within a task."""
    test: Test
    """mcnemar: one graded trial per task on each side; sign: per-task differences otherwise."""
    p_value: float
    improved_tasks: int
    regressed_tasks: int
    tied_tasks: int
    verdict: Verdict
    resamples: int
    seed: int
    alpha: float
    per_task: list[TaskDiff]

    def sentence(self) -> str:
        """The verdict and its evidence on one line (`tbench compare`, the reports)."""
        return f"{self.verdict}: {self.details()}"

    def details(self) -> str:
        if self.diff is None or self.interval is None or self.rate_a is None or self.rate_b is None:
            return f"{self.label_a} and {self.label_b} share no graded task"
        name = "exact McNemar" if self.test == "mcnemar" else "exact sign test"
        text = (
            f"{_pp(self.diff)} ({self.label_b} {self.rate_b:.1%} vs {self.label_a} {self.rate_a:.1%}), "
            f"95% CI [{_pp(self.interval.low)}, {_pp(self.interval.high)}], {name} p = {self.p_value:.3g}; "
            f"{self.improved_tasks} task(s) better, {self.regressed_tasks} worse, "
            f"{self.tied_tasks} tied of {self.tasks}"
        )
        differ = self.improved_tasks + self.regressed_tasks
        needed = min_differing_tasks(self.alpha)
        if self.verdict == "no significant change" and 0 < differ < needed:
            text += f" (at least {needed} tasks must differ before the exact test can reach p < {self.alpha:g})"
        return text


def _pp(x: float) -> str:
    return f"{x * 100:+.1f} pp"


def compare(
    a: Sequence[TrialResult],
    b: Sequence[TrialResult],
    *,
    label_a: str = "A",
    label_b: str = "B",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    alpha: float = ALPHA,
) -> Comparison:
    """Paired comparison on common tasks (all models of a side pooled per task).

    The verdict is `improved` / `regressed` only when both the bootstrap interval excludes 0 and the exact
    test gives p < alpha in the same direction. The percentile bootstrap alone is overconfident with few
    tasks (3 of 3 tasks better gives the interval [1, 1]); the exact test is not (p = 0.25).
    """
    import numpy as np

    ga, gb = _graded_by_task(a), _graded_by_task(b)
    ids_a, ids_b = _task_order(a), _task_order(b)
    common = [t for t in ids_a if t in set(ids_b)]
    paired = [t for t in common if ga[t][0] and gb[t][0]]
    per_task = [
        TaskDiff(
            task_id=t,
            a_graded=ga[t][0],
            a_passed=ga[t][1],
            b_graded=gb[t][0],
            b_passed=gb[t][1],
            a_rate=ga[t][1] / ga[t][0],
            b_rate=gb[t][1] / gb[t][0],
            diff=gb[t][1] / gb[t][0] - ga[t][1] / ga[t][0],
        )
        for t in paired
    ]
    better = sum(d.diff > 0 for d in per_task)
    worse = sum(d.diff < 0 for d in per_task)
    one_each = all(d.a_graded == 1 and d.b_graded == 1 for d in per_task)
    p = exact_sign_test(better, worse)
    interval: Interval | None = None
    diff = rate_a = rate_b = None
    verdict: Verdict = "no common tasks"
    if per_task:
        na, ca, nb, cb = (np.array([getattr(d, f) for d in per_task], dtype=np.int64) for f in _FIELDS)
        rate_a, rate_b = float((ca / na).mean()), float((cb / nb).mean())
        diff = float(np.mean([d.diff for d in per_task]))
        interval = _interval(_bootstrap_diff(na, ca, nb, cb, resamples, seed), alpha)
        verdict = "no significant change"
        if p < alpha and interval.low > 0 and better > worse:
            verdict = "improved"
        elif p < alpha and interval.high < 0 and worse > better:
            verdict = "regressed"
    return Comparison(
        label_a=label_a,
        label_b=label_b,
        tasks=len(per_task),
        only_a=[t for t in ids_a if t not in gb],
        only_b=[t for t in ids_b if t not in ga],
        ungraded=[t for t in common if t not in set(paired)],
        infra_a=sum(is_infra(r) for r in a),
        infra_b=sum(is_infra(r) for r in b),
        trials_a=len(a),
        trials_b=len(b),
        rate_a=rate_a,
        rate_b=rate_b,
        diff=diff,
        interval=interval,
        test="mcnemar" if one_each else "sign",
        p_value=p,
        improved_tasks=better,
        regressed_tasks=worse,
        tied_tasks=len(per_task) - better - worse,
        verdict=verdict,
        resamples=resamples,
        seed=seed,
        alpha=alpha,
        per_task=per_task,
    )


_FIELDS = ("a_graded", "a_passed", "b_graded", "b_passed")


def task_mean_rate(trials: Sequence[TrialResult]) -> float | None:
    """Mean of per-task pass rates over graded trials (the unit is the task); None when nothing was graded."""
    rates = [c / n for n, c in _graded_by_task(trials).values() if n]
    return sum(rates) / len(rates) if rates else None


def _graded_by_task(trials: Sequence[TrialResult]) -> dict[str, tuple[int, int]]:
    """task_id → (graded trials, passes)."""
    out: dict[str, tuple[int, int]] = {}
    for r in trials:
        n, c = out.get(r.task_id, (0, 0))
        if not is_infra(r):
            n, c = n + 1, c + (r.status == "pass")
        out[r.task_id] = (n, c)
    return out


def _task_order(trials: Sequence[TrialResult]) -> list[str]:
    return list(dict.fromkeys(r.task_id for r in trials))


# ---------------------------------------------------------------- bootstrap
#
# One resample draws m tasks with replacement (task i appears w_i times), then for
# each copy draws the task's n_i trials with replacement. Resampled trials of a task with c_i passes are
# Binomial(n_i, c_i/n_i) passes, so a copy is one binomial draw; all copies of task i across all resamples
# are drawn in one call (fast: numpy reuses the binomial set-up for fixed n and p) and summed per resample.
# Tasks that always or never pass need no draw.


def _copies(rng: np.random.Generator, m: int, resamples: int) -> _Ints:
    """resamples x m: how often each task is drawn in each resample of m tasks."""
    import numpy as np

    picks = rng.integers(0, m, size=(resamples, m)) + np.arange(resamples)[:, None] * m
    w: _Ints = np.bincount(picks.ravel(), minlength=resamples * m).reshape(resamples, m)
    return w


def _resampled_sums(rng: np.random.Generator, n: _Ints, c: _Ints, w: _Ints) -> _Floats:
    """Per resample: the sum over drawn task copies of the copy's resampled pass rate."""
    import numpy as np

    out = np.zeros(w.shape[0])
    for i in range(len(n)):
        wi = w[:, i]
        if c[i] == 0:
            continue
        if c[i] == n[i]:
            out += wi
            continue
        draws = rng.binomial(int(n[i]), c[i] / n[i], size=int(wi.sum()))
        cum = np.concatenate(([0], np.cumsum(draws)))
        end = np.cumsum(wi)
        out += (cum[end] - cum[end - wi]) / n[i]
    return out


def _bootstrap_mean(n: _Ints, c: _Ints, resamples: int, seed: int) -> _Floats:
    import numpy as np

    rng = np.random.default_rng(seed)
    means: _Floats = _resampled_sums(rng, n, c, _copies(rng, len(n), resamples)) / len(n)
    return means


def _bootstrap_diff(na: _Ints, ca: _Ints, nb: _Ints, cb: _Ints, resamples: int, seed: int) -> _Floats:
    """Paired: both sides use the same drawn tasks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = _copies(rng, len(na), resamples)
    diffs: _Floats = (_resampled_sums(rng, nb, cb, w) - _resampled_sums(rng, na, ca, w)) / len(na)
    return diffs


def _interval(samples: _Floats, alpha: float = ALPHA) -> Interval:
    import numpy as np

    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(low=float(low), high=float(high))
