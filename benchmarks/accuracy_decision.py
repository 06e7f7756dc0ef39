"""How often the accuracy verdict cries wolf, and how often it catches a real drop.

On the committed baselines' real outcome vectors, simulate many reruns:
- harmless change: each sample is re-drawn with probability `churn` from the item's own accuracy
  (a new runtime nudging borderline samples both ways, with no change in expected accuracy);
- regression of D points: the same churn, plus D% of the samples turned from right to wrong.
Each rerun goes through the plugin's own decision (McNemar one-sided, alpha, minimum drop), so
the rates below are the verdict's, not a re-implementation's.

    .venv/bin/python benchmarks/accuracy_decision.py [--trials 2000] [--churn 0.05]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tabulate import tabulate

from pytest_slm.stats import compare_outcomes

ROOT = Path(__file__).resolve().parents[1]
DROPS = (0, 2, 5, 10)


def rerun(outcomes: dict[str, int], churn: float, drop_points: float, rng: random.Random) -> dict[str, int]:
    accuracy = sum(outcomes.values()) / len(outcomes)
    new = {k: (int(rng.random() < accuracy) if rng.random() < churn else v) for k, v in outcomes.items()}
    right = [k for k, v in new.items() if v]
    for k in rng.sample(right, min(len(right), round(drop_points / 100 * len(new)))):
        new[k] = 0
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--churn", type=float, default=0.05, help="share of samples re-drawn per rerun")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--min-drop", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for path in sorted((ROOT / "baselines").rglob("*.json")):
        outcomes = json.loads(path.read_text())["outcomes"]
        rates = []
        for drop in DROPS:
            failed = sum(
                compare_outcomes(outcomes, rerun(outcomes, args.churn, drop, rng)).is_regression(
                    args.alpha, args.min_drop
                )
                for _ in range(args.trials)
            )
            rates.append(f"{100 * failed / args.trials:.1f}%")
        rows.append((str(path.relative_to(ROOT / "baselines")), len(outcomes), *rates))
    headers = ("baseline", "n", "false positives (no drop)", *(f"detected: -{d} pt" for d in DROPS[1:]))
    print(
        f"{args.trials} simulated reruns per cell, churn {args.churn:.0%}, alpha {args.alpha}, min drop {args.min_drop} pt"
    )
    print(tabulate(rows, headers=headers, disable_numparse=True))


if __name__ == "__main__":
    main()
