"""Test-time RL rewards from the model's agreement with itself: TTRL's majority vote, TTRV's frequency.

No labels are needed: the group of completions for one question votes.

``ttrl_majority`` (TTRL, Zuo et al., arXiv 2504.16084): the group's majority answer is the
pseudo-label; a completion scores 1 if its answer equals it, else 0. Answers are compared by
mathematical equivalence (``0.5`` and ``\\frac{1}{2}`` are one answer), unparseable answers do not
vote and score 0, ties go to the answer seen first.

``ttrv_frequency`` (TTRV, Singh et al., arXiv 2510.06783): the share of the group giving the same
answer, minus ``entropy_weight`` (0.75) x the normalised entropy of the group's answers
(H / log M over M distinct answers, 0 when all agree). Unparseable answers score 0 and take no part in
the distribution. ``entropy: group`` is the paper's form: the same value for every completion of a
group, so GRPO's group normalisation removes it and it never changes an update
(``../shared/methods/mash-ttrl-memory-guig1.md`` 2.2; ``tests/test_ttrl.py`` checks it).
``entropy: sample`` makes it act: completion j carries its own share of the entropy,
``-log p_j / log M``, whose group mean is exactly the paper's term, so rare answers (the ones that
spread the distribution) are penalised more than common ones. Measured on hand-built groups
(``tests/test_ttrl.py``): this changes the advantages only in groups with three or more distinct vote
counts; with two, any increasing function of the share normalises to the same +/- values.

Recipe entries (group-level plugins):

    - {name: ttrl_majority, weight: 1.0}
    - {name: ttrv_frequency, weight: 1.0, kwargs: {entropy_weight: 0.75, entropy: sample}}

When the data has an ``answer`` column (a labelled benchmark used unlabelled), TTRL's diagnostics
are logged: ``ttrl/label_accuracy`` (pseudo-label vs truth), ``ttrl/reward_accuracy`` (share of
rewards that equal the true correctness); always ``ttrl/majority_ratio`` and ``ttrl/no_answer_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import RewardError
from posttrain.evaluation import clusters
from posttrain.rewards import completion_text, group_reward
from rewards.math import answers_match, extract_answer, normalize_gsm8k

ENTROPY_MODES = ("group", "sample")


def _truth(answer: Any) -> str | None:
    return None if answer is None else normalize_gsm8k(str(answer))


def _diagnostics(
    log: Callable[[str, float], None] | None,
    labels: list[str | None],
    shares: list[float],
    rewards: list[float],
    answers: list[str | None],
    truths: list[str | None],
    group_size: int,
) -> None:
    if log is None:
        return
    log("ttrl/majority_ratio", sum(shares) / len(shares))
    log("ttrl/no_answer_groups", sum(label is None for label in labels) / len(labels))
    group_truths = truths[::group_size]
    if any(t is not None for t in group_truths):
        pairs = [(lab, t) for lab, t in zip(labels, group_truths, strict=True) if t is not None]
        log(
            "ttrl/label_accuracy",
            sum(lab is not None and answers_match(lab, t) for lab, t in pairs) / len(pairs),
        )
        agree = [
            (r > 0) == (a is not None and answers_match(a, t))
            for r, a, t in zip(rewards, answers, truths, strict=True)
            if t is not None
        ]
        log("ttrl/reward_accuracy", sum(agree) / len(agree))


def majority_hits(group: Sequence[str | None]) -> tuple[str | None, float, list[float]]:
    """(majority answer, its vote share, 1.0/0.0 per answer: equal to it or not) for one group.

    Answers are clustered once by equivalence; the largest cluster wins, the first seen on a tie.

    >>> majority_hits(["2", "3", "2.0", None])
    ('2', 0.5, [1.0, 0.0, 1.0, 0.0])
    """
    ids = clusters(list(group))
    voted = [k for k in ids if k is not None]
    if not voted:
        return None, 0.0, [0.0] * len(group)
    counts = [voted.count(k) for k in range(max(voted) + 1)]
    best = counts.index(max(counts))
    return group[ids.index(best)], counts[best] / len(group), [1.0 if k == best else 0.0 for k in ids]


@group_reward
def ttrl_majority(completions, group_size, answer=None, log_metric=None, **kwargs) -> list[float]:
    """1.0 where a completion's answer equals its group's majority answer, else 0.0.

    >>> ttrl_majority(["\\\\boxed{2}", "\\\\boxed{3}", "\\\\boxed{2.0}", "no idea"], group_size=4)
    [1.0, 0.0, 1.0, 0.0]
    """
    answers = [extract_answer(completion_text(c)) for c in completions]
    truths = [_truth(a) for a in answer] if answer is not None else [None] * len(answers)
    rewards: list[float] = []
    labels, shares = [], []
    for start in range(0, len(answers), group_size):
        label, share, hits = majority_hits(answers[start : start + group_size])
        labels.append(label)
        shares.append(share)
        rewards.extend(hits)
    _diagnostics(log_metric, labels, shares, rewards, answers, truths, group_size)
    return rewards


def frequency_rewards(group: Sequence[str | None], entropy_weight: float, entropy: str) -> list[float]:
    """TTRV's reward for one group of extracted answers (module docstring).

    >>> frequency_rewards(["1", "1", "2", "2"], 0.75, "group")
    [-0.25, -0.25, -0.25, -0.25]
    >>> frequency_rewards(["1", "1", "1", None], 0.75, "group")
    [0.75, 0.75, 0.75, 0.0]
    """
    ids = clusters(group)
    voted = [k for k in ids if k is not None]
    if not voted:
        return [0.0] * len(group)
    counts = [voted.count(k) for k in range(max(voted) + 1)]
    n, m = len(group), len(counts)
    probs = [c / len(voted) for c in counts]
    norm = math.log(m) if m > 1 else 1.0
    h_norm = -sum(p * math.log(p) for p in probs) / norm if m > 1 else 0.0
    out = []
    for k in ids:
        if k is None:
            out.append(0.0)
            continue
        share = counts[k] / n
        penalty = h_norm if entropy == "group" else (-math.log(probs[k]) / norm if m > 1 else 0.0)
        out.append(share - entropy_weight * penalty)
    return out


@group_reward
def ttrv_frequency(
    completions, group_size, entropy_weight=0.75, entropy="group", answer=None, log_metric=None, **kwargs
) -> list[float]:
    """Share of the group giving the same answer minus ``entropy_weight`` x normalised entropy."""
    if isinstance(entropy_weight, bool) or not isinstance(entropy_weight, int | float) or entropy_weight < 0:
        raise RewardError(f"ttrv_frequency: `entropy_weight` must be a number >= 0, got {entropy_weight!r}.")
    if entropy not in ENTROPY_MODES:
        raise RewardError(
            f"ttrv_frequency: `entropy` must be one of {list(ENTROPY_MODES)}, got {entropy!r} ('group': the "
            "paper's form, removed by GRPO's group normalisation; 'sample': each completion's share of it)."
        )
    answers = [extract_answer(completion_text(c)) for c in completions]
    rewards: list[float] = []
    labels, shares, majority = [], [], []
    for start in range(0, len(answers), group_size):
        group = answers[start : start + group_size]
        rewards.extend(frequency_rewards(group, float(entropy_weight), entropy))
        label, share, hits = majority_hits(group)
        labels.append(label)
        shares.append(share)
        majority.extend(hits)  # diagnostics judge the majority vote, as TTRL's do
    truths = [_truth(a) for a in answer] if answer is not None else [None] * len(answers)
    _diagnostics(log_metric, labels, shares, majority, answers, truths, group_size)
    return rewards
