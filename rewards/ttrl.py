"""Test-time RL rewards from the model's agreement with itself: TTRL's majority vote, TTRV's frequency.

No labels are needed: the group of completions for one question votes.

``ttrl_majority`` (TTRL, Zuo et al., arXiv 2504.16084): the group's majority answer is the
pseudo-label; a completion scores 1 if its answer equals it, else 0. As in TTRL's code
(PRIME-RL/TTRL, ``ttrl_utils._majority_vote``), answers are read from the last ``\\boxed{}`` only
(``extract: boxed``), completions without one do not vote and score 0, and the vote share is counted
over the whole group. Answers are compared by mathematical equivalence (``0.5`` and ``\\frac{1}{2}`` are
one answer; TTRL votes on simplified strings and rewards by equivalence); ties go to the answer seen first.

``ttrv_frequency`` (TTRV, Singh et al., arXiv 2510.06783; Akshit21112002/TTRV ``ttt_metrics``): over
the N completions of a group, each distinct answer k has share p_k = count_k / N, and a completion
without an answer is a class of its own (the reference maps it to ""), in the shares and in the entropy.
The reward of completion j with answer class k(j) is

    r_j = p_k(j) - entropy_weight * H / log M        (``entropy: group``, the paper's form)
    r_j = p_k(j) - entropy_weight * (-log p_k(j)) / log M   (``entropy: sample``)

with H = -sum_k p_k log p_k over the M classes (the penalty is 0 when M = 1), entropy_weight 0.75.
Both are increasing in p_k(j), so a completion never scores above one whose class has a larger share:
a missing answer never scores above an answer at least as common, the group's majority among them
(the most common class, the no-answer class included, as TTRV's code counts it; when most completions
have no answer, that class is the majority and the lone answers score below it). The group form is the same number for every completion
of a group: subtracting the group mean removes it exactly, so under ``scale_rewards: group`` or
``none`` it never changes an advantage (``tests/test_ttrl.py`` checks it); under ``scale_rewards:
batch`` it only changes the batch std that all advantages are divided by. The sample form carries
each completion's own share of the entropy (its group mean is the group form), so rare answers are
penalised more than common ones; it changes advantages in groups with three or more distinct shares.
Answers are read as TTRV's math path reads them (``extract: qwen_math``: last box, "the answer is",
last number).

Recipe entries (group-level plugins):

    - {name: ttrl_majority, weight: 1.0, kwargs: {extract: boxed}}
    - {name: ttrv_frequency, weight: 1.0, kwargs: {entropy_weight: 0.75, entropy: sample}}

Logged: ``ttrl/majority_ratio``, ``ttrl/no_answer`` (share of completions without an answer),
``ttrl/no_answer_groups`` (groups where no completion answered) and, when the data has an ``answer``
column (a labelled benchmark used unlabelled), TTRL's diagnostics ``ttrl/label_accuracy``
(pseudo-label vs truth) and ``ttrl/reward_accuracy`` (share of rewards equal to the true correctness).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import RewardError
from posttrain.rewards import completion_text, group_reward
from posttrain.verify.math import answers_match, get_extractor, normalize_gsm8k
from posttrain.verify.vote import clusters, majority_hits

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
    log("ttrl/no_answer", sum(a is None for a in answers) / len(answers))
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


@group_reward
def ttrl_majority(
    completions, group_size, extract="boxed", answer=None, log_metric=None, **kwargs
) -> list[float]:
    """1.0 where a completion's answer equals its group's majority answer, else 0.0.

    >>> ttrl_majority(["\\\\boxed{2}", "\\\\boxed{3}", "\\\\boxed{2.0}", "so 2"], group_size=4)
    [1.0, 0.0, 1.0, 0.0]
    """
    extractor = get_extractor(extract, "ttrl_majority")
    answers = [extractor(completion_text(c)) for c in completions]
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
    """TTRV's reward for one group of extracted answers, None = no answer, a class of its own (module docstring).

    >>> frequency_rewards(["1", "1", "2", "2"], 0.75, "group")
    [-0.25, -0.25, -0.25, -0.25]
    >>> [round(r, 4) for r in frequency_rewards(["1", "1", "1", None], 0.75, "group")]
    [0.1415, 0.1415, 0.1415, -0.3585]
    """
    ids = clusters(list(group))
    none_class = max((k for k in ids if k is not None), default=-1) + 1
    classes = [none_class if k is None else k for k in ids]
    n = len(classes)
    counts = {k: classes.count(k) for k in classes}
    probs = {k: c / n for k, c in counts.items()}
    m = len(counts)
    if m == 1:
        return [1.0] * n
    norm = math.log(m)
    h_norm = -sum(p * math.log(p) for p in probs.values()) / norm
    out = []
    for k in classes:
        penalty = h_norm if entropy == "group" else -math.log(probs[k]) / norm
        out.append(probs[k] - entropy_weight * penalty)
    return out


@group_reward
def ttrv_frequency(
    completions,
    group_size,
    entropy_weight=0.75,
    entropy="group",
    extract="qwen_math",
    answer=None,
    log_metric=None,
    **kwargs,
) -> list[float]:
    """Share of the group giving the same answer minus ``entropy_weight`` x normalised entropy."""
    if isinstance(entropy_weight, bool) or not isinstance(entropy_weight, int | float) or entropy_weight < 0:
        raise RewardError(f"ttrv_frequency: `entropy_weight` must be a number >= 0, got {entropy_weight!r}.")
    if entropy not in ENTROPY_MODES:
        raise RewardError(
            f"ttrv_frequency: `entropy` must be one of {list(ENTROPY_MODES)}, got {entropy!r} ('group': the "
            "paper's form, removed by GRPO's group normalisation; 'sample': each completion's share of it)."
        )
    extractor = get_extractor(extract, "ttrv_frequency")
    answers = [extractor(completion_text(c)) for c in completions]
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
