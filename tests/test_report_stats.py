"""The statistics module against cases worked out by hand, and its verdicts against seeded noise."""

from __future__ import annotations

import random

import pytest

from tbench.models.results import TrialResult
from tbench.stats.inference import (
    Z95,
    CostStat,
    RateLine,
    compare,
    exact_sign_test,
    iteration_stats,
    min_differing_tasks,
    pass_at_k,
    pass_hat_k,
    pass_k_table,
    run_stats,
    task_stats,
    wilson,
)
from tests.synthetic import ERROR, FAIL, INFRA, PASS, TIMEOUT, Outcome, trial


def t(task: str, outcome: Outcome, iteration: int = 1, *, tokens: int = 0, cost: float | None = None) -> TrialResult:
    return trial("r", iteration, task, outcome, tokens=tokens, cost=cost)


def side(plan: dict[str, list[Outcome]]) -> list[TrialResult]:
    """task -> outcomes, one per iteration."""
    return [t(task, o, i) for task, outcomes in plan.items() for i, o in enumerate(outcomes, 1)]


# ---------------------------------------------------------------- closed forms


def test_wilson_matches_hand_computed_bounds() -> None:
    z2 = Z95**2
    # 0/n and n/n have closed forms: upper = z²/(n+z²), lower = n/(n+z²)
    zero = wilson(0, 10)
    assert zero is not None and zero.low == 0.0 and zero.high == pytest.approx(z2 / (10 + z2))
    assert zero.high == pytest.approx(0.27753, abs=1e-5)
    full = wilson(10, 10)
    assert full is not None and full.high == 1.0 and full.low == pytest.approx(10 / (10 + z2))
    half = wilson(5, 10)  # textbook value 0.2366 .. 0.7634
    assert half is not None and (half.low, half.high) == (
        pytest.approx(0.23659, abs=1e-5),
        pytest.approx(0.76341, abs=1e-5),
    )
    one = wilson(1, 1)  # one task, one trial: still a wide interval, never [1, 1]
    assert one is not None and one.high == 1.0 and one.low == pytest.approx(1 / (1 + z2))
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_pass_at_k_and_pass_hat_k_by_hand() -> None:
    # n=5, c=2, k=2: pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass^2 = C(2,2)/C(5,2) = 1/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_hat_k(5, 2, 2) == pytest.approx(0.1)
    # k=1 is the plain rate for both
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_hat_k(10, 3, 1) == pytest.approx(0.3)
    # all pass / all fail
    assert [pass_at_k(4, 4, k) for k in (1, 4)] == [1.0, 1.0] and [pass_hat_k(4, 4, k) for k in (1, 4)] == [1.0, 1.0]
    assert [pass_at_k(4, 0, k) for k in (1, 4)] == [0.0, 0.0] and [pass_hat_k(4, 0, k) for k in (1, 4)] == [0.0, 0.0]
    # fewer failures than k: some pass is certain
    assert pass_at_k(5, 4, 2) == 1.0 and pass_hat_k(5, 4, 2) == pytest.approx(6 / 10)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_exact_sign_test_is_mcnemar_by_hand() -> None:
    assert exact_sign_test(0, 0) == 1.0  # nothing differs
    assert exact_sign_test(0, 4) == pytest.approx(2 / 16)  # 4 of 4 one way
    assert exact_sign_test(6, 0) == pytest.approx(2 / 64)
    assert exact_sign_test(1, 9) == pytest.approx(2 * (1 + 10) / 1024) == exact_sign_test(9, 1)
    assert exact_sign_test(3, 3) == 1.0  # ties in direction
    assert min_differing_tasks() == 6  # 5 of 5 gives p = 0.0625


# ---------------------------------------------------------------- per run


def test_infra_errors_are_counted_apart_and_never_graded() -> None:
    line = RateLine.of([t("a", PASS), t("b", FAIL), t("c", INFRA), t("d", TIMEOUT), t("e", ERROR)])
    assert (line.trials, line.graded, line.passed, line.infra_errors) == (5, 4, 1, 1)
    assert line.rate == 0.25
    only_infra = RateLine.of([t("a", INFRA)])
    assert only_infra.rate is None and only_infra.interval is None and only_infra.infra_errors == 1
    (it,) = iteration_stats([t("a", PASS), t("b", INFRA), t("c", ERROR), t("d", TIMEOUT)])
    assert (it.error, it.timeout, it.rate.infra_errors, it.rate.rate) == (1, 1, 1, pytest.approx(1 / 3))


def test_task_rates_and_flaky_tasks() -> None:
    trials = side({"steady": [PASS, PASS, PASS], "never": [FAIL, TIMEOUT, FAIL], "flaky": [PASS, FAIL, INFRA]})
    trials.append(t("down", INFRA))
    by_id = {s.task_id: s for s in task_stats(trials)}
    assert (by_id["steady"].rate, by_id["steady"].flaky) == (1.0, False)
    assert (by_id["never"].rate, by_id["never"].flaky) == (0.0, False)
    assert (by_id["flaky"].graded, by_id["flaky"].passed, by_id["flaky"].flaky) == (2, 1, True)
    assert (by_id["down"].graded, by_id["down"].rate, by_id["down"].flaky) == (0, None, False)
    stats = run_stats(trials)
    assert [f.task_id for f in stats.flaky] == ["flaky"]
    assert stats.infra_tasks == {"flaky": 1, "down": 1}
    # pass@1 = mean per-task rate over graded tasks: (1 + 0 + 0.5) / 3
    assert stats.pass_at_1 == pytest.approx(0.5)


def test_pass_k_table_uses_only_tasks_with_k_trials() -> None:
    tasks = task_stats(side({"a": [PASS, FAIL, FAIL], "b": [PASS]}))
    table = {p.k: p for p in pass_k_table(tasks)}
    assert sorted(table) == [1, 2, 3]
    assert table[1].tasks == 2 and table[1].pass_at_k == pytest.approx((1 / 3 + 1) / 2)
    # k=2 only task a: pass@2 = 1 - C(2,2)/C(3,2) = 2/3, pass^2 = 0
    assert table[2].tasks == 1 and table[2].pass_at_k == pytest.approx(2 / 3) and table[2].pass_hat_k == 0.0
    assert table[3].pass_at_k == 1.0 and table[3].pass_hat_k == 0.0


def test_tokens_and_cost_per_trial_and_per_pass() -> None:
    trials = [
        t("a", PASS, tokens=100, cost=0.5),
        t("b", FAIL, tokens=300, cost=1.5),
        t("c", INFRA, tokens=0, cost=None),
        t("d", PASS, tokens=200, cost=None),
    ]
    cost = CostStat.of(trials)
    assert (cost.tokens, cost.passes, cost.tokens_per_trial, cost.tokens_per_pass) == (600, 2, 150, 300)
    assert (cost.cost_usd, cost.cost_known, cost.cost_per_trial, cost.cost_per_pass) == (2.0, 2, 1.0, 1.0)
    free = CostStat.of([t("a", FAIL)])
    assert free.cost_usd is None and free.cost_per_pass is None and free.tokens_per_pass is None


def test_all_pass_all_fail_and_one_task_runs() -> None:
    all_pass = run_stats(side({f"t{i}": [PASS, PASS] for i in range(5)}))
    assert all_pass.pass_at_1 == 1.0 and all_pass.pass_at_1_interval is not None
    assert (all_pass.pass_at_1_interval.low, all_pass.pass_at_1_interval.high) == (1.0, 1.0)
    assert [i.rate.interval.low for i in all_pass.iterations if i.rate.interval] == [
        pytest.approx(5 / (5 + Z95**2))
    ] * 2
    all_fail = run_stats(side({f"t{i}": [FAIL, TIMEOUT] for i in range(5)}))
    assert all_fail.pass_at_1 == 0.0 and all_fail.pass_at_1_interval is not None
    assert (all_fail.pass_at_1_interval.low, all_fail.pass_at_1_interval.high) == (0.0, 0.0)
    one = run_stats(side({"only": [PASS, FAIL, PASS, FAIL]}))
    assert one.pass_at_1 == 0.5 and [f.task_id for f in one.flaky] == ["only"]
    # one task, 4 trials, 2 passes: resampled passes are Binomial(4, 1/2), P(0) = P(4) = 1/16 > 2.5%
    assert one.pass_at_1_interval is not None
    assert (one.pass_at_1_interval.low, one.pass_at_1_interval.high) == (0.0, 1.0)
    empty = run_stats([])
    assert empty.pass_at_1 is None and empty.iterations == [] and empty.pass_k == []


# ---------------------------------------------------------------- comparison


def test_identical_sides_tie_exactly() -> None:
    plan = {"a": [PASS, PASS], "b": [FAIL, FAIL], "c": [PASS, FAIL]}
    c = compare(side(plan), side(plan))
    assert c.tasks == 3 and c.tied_tasks == 3 and c.diff == 0.0 and c.p_value == 1.0
    assert c.verdict == "no significant change" and c.test == "sign"
    deterministic = {"a": [PASS], "b": [FAIL]}
    d = compare(side(deterministic), side(deterministic))
    assert d.test == "mcnemar" and d.interval is not None and (d.interval.low, d.interval.high) == (0.0, 0.0)


def test_bootstrap_interval_by_hand_two_tasks() -> None:
    # per-task differences [1, 0], one trial each: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4
    c = compare(side({"x": [FAIL], "y": [PASS]}), side({"x": [PASS], "y": [PASS]}))
    assert c.diff == 0.5 and c.interval is not None and (c.interval.low, c.interval.high) == (0.0, 1.0)
    assert c.test == "mcnemar" and c.p_value == 1.0 and c.verdict == "no significant change"


def test_one_task_never_shows_significance() -> None:
    c = compare(side({"a": [FAIL] * 5}), side({"a": [PASS] * 5}))
    assert c.tasks == 1 and c.improved_tasks == 1 and c.p_value == 1.0
    assert c.verdict == "no significant change"
    assert "at least 6 tasks must differ" in c.details()


def test_mcnemar_decides_a_clear_change_with_one_trial_per_task() -> None:
    before = side({f"t{i}": [FAIL] for i in range(10)})
    after = side({f"t{i}": [PASS] for i in range(10)})
    up = compare(before, after, label_a="old", label_b="new")
    assert up.test == "mcnemar" and up.p_value == pytest.approx(2 / 1024) and up.verdict == "improved"
    assert up.interval is not None and up.interval.low == 1.0 and up.diff == 1.0
    down = compare(after, before)
    assert down.verdict == "regressed" and down.diff == -1.0
    assert up.sentence().startswith("improved: +100.0 pp (new 100.0% vs old 0.0%)")


def test_infra_errors_and_unshared_tasks_are_left_out_of_the_comparison() -> None:
    a = side({"shared": [PASS], "gone": [PASS], "down": [PASS]})
    b = side({"shared": [PASS], "new": [FAIL], "down": [INFRA]})
    c = compare(a, b)
    assert c.tasks == 1 and c.only_a == ["gone"] and c.only_b == ["new"] and c.ungraded == ["down"]
    assert (c.infra_a, c.infra_b) == (0, 1)
    none = compare(side({"x": [PASS]}), side({"y": [PASS]}))
    assert none.verdict == "no common tasks" and none.interval is None


def test_bootstrap_is_seeded_and_reproducible() -> None:
    rng = random.Random(3)
    a = side({f"t{i}": [PASS if rng.random() < 0.5 else FAIL for _ in range(3)] for i in range(20)})
    b = side({f"t{i}": [PASS if rng.random() < 0.5 else FAIL for _ in range(3)] for i in range(20)})
    first, again = compare(a, b, seed=7), compare(a, b, seed=7)
    assert first.interval == again.interval
    other = compare(a, b, seed=8)
    assert other.interval != first.interval


def _noisy_pair(rng: random.Random, shift: float, k: int) -> tuple[list[TrialResult], list[TrialResult]]:
    rates = [rng.choice([0.05, 0.3, 0.5, 0.8, 0.95]) for _ in range(89)]

    def draw(bump: float) -> list[TrialResult]:
        return [
            t(f"t{i}", PASS if rng.random() < min(1.0, p + bump) else FAIL, it)
            for i, p in enumerate(rates)
            for it in range(1, k + 1)
        ]

    return draw(0.0), draw(shift)


def test_noise_alone_is_rarely_called_a_change_and_a_real_change_usually_is() -> None:
    """Calibration on 89 tasks x 3 trials (seeded): false claims at most near 5%, a +20 pp change found."""
    rng = random.Random(2026)
    false_claims = sum(
        compare(*_noisy_pair(rng, 0.0, 3), resamples=1000, seed=s).verdict != "no significant change" for s in range(60)
    )
    found = sum(compare(*_noisy_pair(rng, 0.2, 3), resamples=1000, seed=s).verdict == "improved" for s in range(30))
    assert false_claims <= 6  # 10% of 60; the expected rate is below 5%
    assert found >= 27
