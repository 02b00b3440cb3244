"""Confidence intervals for learning results: a bootstrap over seeds and questions together.

    from bench.stats import bootstrap
    ci = bootstrap(lambda s, q: figure(seeds=s, questions=q), n_seeds=3, n_questions=200)
    ci.mean, ci.low, ci.high, ci.excludes_zero()

A figure measured on S seeds (training runs) and N held-out questions varies with both: the run's
randomness and which questions happened to be held out. Each bootstrap replicate draws S seeds and N
questions with replacement and recomputes the figure on them (the same question draw for every seed
and every arm, so paired differences stay paired); the interval is the replicates' 2.5 and 97.5
percentiles. With 3 seeds the seed part is coarse (10 distinct seed multisets): the interval is a
fair summary of what was measured, not a promise about a fourth seed.

The figure is any function of the drawn indices, so balanced accuracy, rates over a subset of the
questions or a difference between two arms are all bootstrapped the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate (on all seeds and questions) and its bootstrap interval."""

    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high}


def bootstrap(
    estimate: Callable[[np.ndarray, np.ndarray], float],
    n_seeds: int,
    n_questions: int,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``estimate(seed_idx, question_idx)`` on all indices, and its percentile interval over ``n_boot``
    replicates that draw seeds and questions with replacement.

    ``n_questions = 0`` bootstraps over seeds only (a per-run figure such as a training-time rate).
    Replicates where the figure is undefined (NaN: e.g. balanced accuracy on a draw without one class)
    are dropped; when none is defined the interval is NaN.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    rng = np.random.default_rng(seed)
    all_seeds, all_questions = np.arange(n_seeds), np.arange(n_questions)
    point = float(estimate(all_seeds, all_questions))
    values = []
    for _ in range(n_boot):
        s = rng.integers(0, n_seeds, n_seeds)
        q = rng.integers(0, n_questions, n_questions) if n_questions else all_questions
        value = float(estimate(s, q))
        if math.isfinite(value):
            values.append(value)
    if not values:
        return Interval(point, math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def mean_over(values: Sequence[float], idx: np.ndarray) -> float:
    """Mean of ``values`` at ``idx`` (NaN entries, e.g. questions a figure does not cover, are skipped)."""
    picked = np.asarray(values, dtype=float)[idx]
    picked = picked[np.isfinite(picked)]
    return float(picked.mean()) if picked.size else math.nan


def balanced_accuracy(labels: Sequence[bool], verdicts: Sequence[bool | None]) -> float:
    """Mean of the true-positive and true-negative rates; an unreadable verdict (None) counts as wrong.

    A judge that always says "No" scores 0.5, however rare the correct answers are. NaN when one class
    is absent."""
    pos = [v is True for y, v in zip(labels, verdicts) if y]
    neg = [v is False for y, v in zip(labels, verdicts) if not y]
    if not pos or not neg:
        return math.nan
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def per_seed_mean(per_seed: Sequence[Callable[[np.ndarray], float]], seed_idx: np.ndarray, q_idx: np.ndarray):
    """Mean over the drawn seeds of each seed's figure on the drawn questions."""
    values = [per_seed[s](q_idx) for s in seed_idx]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan
