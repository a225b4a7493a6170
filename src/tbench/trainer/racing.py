"""The A/B's decisions, as pure functions of the trials so far (so a resumed training decides exactly as an
uninterrupted one, and a simulation can test the rule without running trials).

After round r of R, racing compares every active profile with the leader (the active profile passing most), at
this look's share of alpha (stats.power.look_alpha) divided over the pairs of profiles (Bonferroni): one that is
significantly worse is dropped. The verdict at the end compares the leader with its strongest rival at the last
look's level: a winner only when it is significantly better than every profile still in the race."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from tbench.models.results import TrialResult
from tbench.stats.inference import compare, task_mean_rate
from tbench.stats.power import look_alpha
from tbench.trainer.schema import PairVerdict, RacingDecision, TrainingPlan, Verdict

Trials = Mapping[str, Sequence[TrialResult]]


def pairs(n: int) -> int:
    return max(1, n * (n - 1) // 2)


def look_level(plan: TrainingPlan, r: int, *, final: bool) -> float:
    """The alpha of the look after round r, per pair of profiles (0 for a look racing does not make)."""
    a = look_alpha(plan.alpha, r, plan.trials_per_task) if plan.racing else (plan.alpha if final else 0.0)
    return a / pairs(len(plan.profiles))


def active_at(plan: TrainingPlan, racing: Sequence[RacingDecision], r: int) -> list[str]:
    """Profiles still racing in round r (the plan's order)."""
    dropped = {d.profile for d in racing if d.action == "dropped" and d.round < r}
    return [p for p in plan.profiles if p not in dropped]


def rate(trials: Trials, pid: str) -> float:
    value = task_mean_rate(list(trials.get(pid, ())))
    return -1.0 if value is None else value


def leader(trials: Trials, ids: Sequence[str], order: Sequence[str]) -> str:
    """The profile passing most among `ids` (ties: the plan's order)."""
    return max(ids, key=lambda p: (rate(trials, p), -list(order).index(p)))


def racing_look(trials: Trials, plan: TrainingPlan, r: int, active: Sequence[str]) -> list[RacingDecision]:
    """The decisions after round r: each active profile but the leader, dropped or kept (never dropped at the
    last round: there the verdict speaks)."""
    if not plan.racing:
        return []
    final = r == plan.trials_per_task
    best = leader(trials, active, plan.profiles)
    a = look_level(plan, r, final=final)
    out = []
    for pid in active:
        if pid == best:
            continue
        c = compare(list(trials[pid]), list(trials[best]), label_a=pid, label_b=best, alpha=a, seed=plan.seed)
        worse = c.verdict == "improved"  # the leader passes significantly more
        reason = (
            f"significantly worse than {best}: {c.details()}"
            if worse
            else f"not shown worse than {best} at alpha {a:.3g}: {c.details()}"
        )
        out.append(
            RacingDecision(
                round=r,
                profile=pid,
                against=best,
                action="dropped" if worse and not final else "kept",
                diff=None if c.diff is None else -c.diff,
                p_value=c.p_value,
                alpha=a,
                reason=reason,
            )
        )
    return out


def final_verdict(
    trials: Trials, plan: TrainingPlan, racing: Sequence[RacingDecision], rounds_done: int
) -> tuple[Verdict, list[PairVerdict]]:
    """The verdict and each profile against the reference (the plan's first profile), after `rounds_done`."""
    ids = list(plan.profiles)
    active = active_at(plan, racing, rounds_done + 1)
    best = leader(trials, active, ids)
    rival = leader(trials, [p for p in ids if p != best], ids)
    dropped = [d for d in racing if d.profile == rival and d.action == "dropped"]
    last_look = rounds_done == plan.trials_per_task
    a = dropped[-1].alpha if dropped else look_level(plan, max(rounds_done, 1), final=last_look or not plan.racing)
    c = compare(list(trials[rival]), list(trials[best]), label_a=rival, label_b=best, alpha=a, seed=plan.seed)
    beaten = len(active) == 1 or all(
        compare(list(trials[p]), list(trials[best]), alpha=a, seed=plan.seed).verdict == "improved"
        for p in active
        if p != best
    )
    winner = best if beaten and rounds_done else None
    if winner:
        sentence = f"{best} wins: {c.details()}"
    elif rounds_done:
        sentence = f"no difference shown between {best} and {rival} at alpha {a:.3g}: {c.details()}"
    else:
        sentence = "no round finished: no verdict"
    verdict = Verdict(
        winner=winner,
        reference=ids[0],
        against=rival,
        diff=c.diff,
        interval=None if c.interval is None else (c.interval.low, c.interval.high),
        p_value=c.p_value if rounds_done else None,
        test=c.test if rounds_done else None,
        alpha=a,
        sentence=sentence,
    )
    comparisons = [
        PairVerdict(
            reference=ids[0],
            profile=p,
            alpha=a,
            comparison=compare(
                list(trials[ids[0]]), list(trials[p]), label_a=ids[0], label_b=p, alpha=a, seed=plan.seed
            ),
        )
        for p in ids[1:]
    ]
    return verdict, comparisons


class Simulated(BaseModel):
    winner: str | None
    trials: int
    rounds: int


def _synthetic(profile: str, r: int, task: str, passed: bool) -> TrialResult:
    return TrialResult(
        trial_id=f"sim-{profile}-{r:03d}-{task}",
        run_id=f"sim-{profile}",
        iteration=r,
        task_id=task,
        task_name=task,
        model=profile,
        status="pass" if passed else "fail",
        duration_ms=0,
        started_at="",
        finished_at="",
        trial_dir="",
    )


def simulate(plan: TrainingPlan, rates: Mapping[str, Sequence[float]], seed: int) -> Simulated:
    """One A/B played by these very rules on synthetic trials: profile p passes task i with `rates[p][i]`.
    What the bench and the tests use to measure false verdicts and what racing saves."""
    rng = random.Random(seed)
    trials: dict[str, list[TrialResult]] = {p: [] for p in plan.profiles}
    racing: list[RacingDecision] = []
    done = 0
    for r in range(1, plan.trials_per_task + 1):
        active = active_at(plan, racing, r)
        if len(active) < 2:
            break
        for p in active:
            trials[p].extend(_synthetic(p, r, f"t{i}", rng.random() < q) for i, q in enumerate(rates[p]))
        racing.extend(racing_look(trials, plan, r, active))
        done = r
    verdict, _ = final_verdict(trials, plan, racing, done)
    return Simulated(winner=verdict.winner, trials=sum(len(t) for t in trials.values()), rounds=done)
