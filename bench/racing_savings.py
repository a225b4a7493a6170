"""What racing saves: trials spent by the Trainer's racing A/B against a fixed-k A/B of the same plan, and how
often the two reach the same verdict — on the Trainer's own decision code (trainer/racing.py: the same compare,
alpha spending and verdict), played on synthetic trials.

Worlds (per task, profile A's pass probability is drawn from a TB-like bimodal mix; B's is A's plus the effect,
clipped): null (effect 0), and effects of 5, 10, 20 and 40 pp. For each world and seed, one racing run and one
fixed-k run see the same per-task probabilities. Printed per world: verdicts (B wins / A wins / none) for each
rule, how often they agree, mean trials each spent and the saving.

  python bench/racing_savings.py [--tasks 30] [--k 5] [--seeds 200]
"""

from __future__ import annotations

import argparse
import random
import time

from tbench.trainer.racing import simulate
from tbench.trainer.schema import TrainingPlan

MIX = [0.0, 0.0, 0.0, 0.05, 0.2, 0.4, 0.5, 0.6, 0.8, 0.95, 1.0, 1.0]
"""TB-like tasks: many never or always pass, some are coins."""


def world(tasks: int, effect: float, rng: random.Random) -> dict[str, list[float]]:
    a = [rng.choice(MIX) for _ in range(tasks)]
    if effect > 0:  # the effect lands where there is room for it (a floor at 0 hides it otherwise)
        a = [min(p, 1.0 - effect) for p in a]
    b = [min(1.0, max(0.0, p + effect)) for p in a]
    return {"A": a, "B": b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--k", type=int, default=5, help="trials per task (the rounds)")
    ap.add_argument("--seeds", type=int, default=200)
    args = ap.parse_args()
    plan = TrainingPlan(suite="-", profiles=["A", "B"], trials_per_task=args.k)
    fixed = plan.model_copy(update={"racing": False})
    print(f"{args.tasks} tasks, k = {args.k}, alpha {plan.alpha}, {args.seeds} seeds per world")
    print(f"{'effect':>7} {'rule':>7} {'B wins':>7} {'A wins':>7} {'none':>6} {'agree':>6} {'trials':>8} {'saved':>6}")
    started = time.perf_counter()
    for effect in (0.0, 0.05, 0.10, 0.20, 0.40):
        rng = random.Random(int(effect * 1000))
        raced, full = [], []
        for seed in range(args.seeds):
            rates = world(args.tasks, effect, rng)
            raced.append(simulate(plan, rates, seed))
            full.append(simulate(fixed, rates, seed))
        agree = sum(a.winner == b.winner for a, b in zip(raced, full, strict=True)) / args.seeds
        mean_r = sum(s.trials for s in raced) / args.seeds
        mean_f = sum(s.trials for s in full) / args.seeds
        for name, sims, mean in (("racing", raced, mean_r), ("fixed", full, mean_f)):
            b = sum(s.winner == "B" for s in sims) / args.seeds
            a = sum(s.winner == "A" for s in sims) / args.seeds
            none = sum(s.winner is None for s in sims) / args.seeds
            saved = f"{1 - mean_r / mean_f:>6.0%}" if name == "racing" else ""
            row = f"{effect * 100:>5.0f}pp {name:>7} {b:>7.1%} {a:>7.1%} {none:>6.1%} {agree:>6.0%} {mean:>8.1f}"
            print(f"{row} {saved}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
