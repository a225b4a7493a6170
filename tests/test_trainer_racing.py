"""The Trainer's statistics on their own: power planning against the figures of learning.md §6, the alpha
spending of racing, and the decision rule (trainer/racing.py, the code `tbench train run` decides with) played on
synthetic trials over many seeds: false verdicts in a null world stay under alpha, a clear effect is found, and
racing finds it with fewer trials than a fixed-k A/B."""

from __future__ import annotations

import random

import pytest

from tbench.stats.power import alpha_spent, look_alpha, mde, plan_power, power_at, trials_needed, within_variance
from tbench.trainer.racing import simulate
from tbench.trainer.schema import TrainingPlan

MIX = [0.0, 0.0, 0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0, 1.0]


def test_power_matches_the_paired_89_task_table() -> None:
    # learning.md §6: 89 tasks, w = 0.12 -> MDE 14.5 / 8.4 / 6.5 / 4.6 pp at k = 1 / 3 / 5 / 10
    for k, want in ((1, 14.5), (3, 8.4), (5, 6.5), (10, 4.6)):
        assert mde(89, k, 0.12) * 100 == pytest.approx(want, abs=0.15)
    assert power_at(0.065, 89, 5, 0.12) == pytest.approx(0.8, abs=0.02)
    assert trials_needed(0.066, 89, 0.12) == 5
    assert trials_needed(0.001, 5, 0.25) is None  # unreachable within 100 trials per task


def test_within_variance_is_unbiased_and_needs_two_trials() -> None:
    assert within_variance([(1, 1), (1, 0)]) is None
    assert within_variance([(2, 1)]) == pytest.approx(0.5)  # p(1-p) n/(n-1) = 0.25 * 2
    assert within_variance([(4, 4), (4, 0)]) == 0.0


def test_alpha_spending_sums_to_alpha_and_spends_little_early() -> None:
    looks = [look_alpha(0.05, r, 5) for r in range(1, 6)]
    assert sum(looks) == pytest.approx(0.05) and alpha_spent(0.05, 5, 5) == pytest.approx(0.05)
    assert looks == sorted(looks) and looks[0] == pytest.approx(0.002)


def test_a_plan_that_cannot_detect_its_effect_says_so() -> None:
    small = plan_power(tasks=4, profiles=2, effect=0.05, power=0.8, alpha=0.05, k=3, w=None, source="assumed",
                       measured_tasks=0, rates=[], budget_trials=10)  # fmt: skip
    text = " ".join(small.warnings)
    assert "cannot reliably detect 5 pp" in text and "only 4 task(s)" in text and "budget (10 trials)" in text
    assert "assumed" in text
    big = plan_power(tasks=89, profiles=2, effect=0.15, power=0.8, alpha=0.05, k=5, w=0.12, source="measured",
                     measured_tasks=89, rates=[0.5] * 89, budget_trials=None)  # fmt: skip
    assert big.warnings == [] and big.planned_power > 0.8 and big.needed_k is not None and big.needed_k <= 5
    # the normal approximation says 10 pp is within reach at k = 5; the exact test tbench applies, simulated on
    # the task rates, is weaker, and the plan says so
    edge = plan_power(tasks=89, profiles=2, effect=0.10, power=0.8, alpha=0.05, k=5, w=0.12, source="measured",
                      measured_tasks=89, rates=[0.5] * 89, budget_trials=None)  # fmt: skip
    assert edge.planned_power >= 0.8 and edge.simulated_power is not None and edge.simulated_power < 0.8
    assert any("exact test tbench applies" in w for w in edge.warnings)


def _world(rng: random.Random, tasks: int, effect: float) -> dict[str, list[float]]:
    a = [min(rng.choice(MIX), 1 - effect) for _ in range(tasks)]
    return {"A": a, "B": [p + effect for p in a]}


def test_null_world_false_verdicts_stay_under_alpha() -> None:
    rng = random.Random(0)
    plan = TrainingPlan(suite="-", profiles=["A", "B"], trials_per_task=3)
    for racing in (True, False):
        p = plan.model_copy(update={"racing": racing})
        wins = [simulate(p, _world(rng, 20, 0.0), seed).winner for seed in range(200)]
        assert sum(w is not None for w in wins) / 200 <= 0.05, (racing, wins.count("A"), wins.count("B"))


def test_a_clear_effect_is_found_and_racing_spends_fewer_trials() -> None:
    rng = random.Random(1)
    plan = TrainingPlan(suite="-", profiles=["A", "B"], trials_per_task=4)
    fixed = plan.model_copy(update={"racing": False})
    worlds = [_world(rng, 20, 0.4) for _ in range(40)]
    raced = [simulate(plan, w, seed) for seed, w in enumerate(worlds)]
    full = [simulate(fixed, w, seed) for seed, w in enumerate(worlds)]
    assert sum(s.winner == "B" for s in raced) >= 38 and sum(s.winner == "B" for s in full) >= 38
    assert all(s.winner != "A" for s in raced + full)
    assert sum(s.trials for s in raced) < 0.6 * sum(s.trials for s in full)


def test_three_profiles_share_alpha_and_the_worst_is_raced_out_first() -> None:
    plan = TrainingPlan(suite="-", profiles=["A", "B", "C"], trials_per_task=4)
    rates = {"A": [0.5] * 20, "B": [0.05] * 20, "C": [0.95] * 20}
    sims = [simulate(plan, rates, seed) for seed in range(10)]
    assert all(s.winner == "C" for s in sims)
    null = {"A": [0.5] * 20, "B": [0.5] * 20, "C": [0.5] * 20}
    assert sum(simulate(plan, null, seed).winner is not None for seed in range(60)) <= 3


def test_pareto_front_and_cost_note_never_overrule_the_pass_rate_verdict() -> None:
    from tbench.models.profile import AgentProfile
    from tbench.trainer.schema import ProfileResult, Verdict
    from tbench.trainer.service import cost_note, pareto_front

    def prof(pid: str, rate: float, per_pass: float) -> ProfileResult:
        return ProfileResult(id=pid, profile=AgentProfile(id=pid), run_dir=f"arms/{pid}", rounds=1, trials=10,
                             graded_trials=10, passed=int(rate * 10), pass_rate=rate,
                             cost_per_pass=per_pass)  # fmt: skip

    profiles = [prof("a", 0.6, 0.50), prof("b", 0.6, 0.20), prof("c", 0.8, 0.90), prof("d", 0.5, 0.95)]
    assert pareto_front(profiles) == ["b", "c"]  # a: b is as good and cheaper; d: beaten on both
    none = Verdict(winner=None, reference="a", against="b", diff=0.0, interval=None, p_value=1.0, test="sign",
                   alpha=0.05, sentence="")  # fmt: skip
    assert cost_note(profiles, none) == (
        "min_cost_per_pass: no pass-rate difference is shown; b costs least per pass ($0.2000)"
    )
    assert cost_note(profiles, none.model_copy(update={"winner": "c"})) is None
