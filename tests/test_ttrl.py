"""Tests for the test-time RL rewards (rewards/ttrl.py) through ``load_reward`` on hand-built groups.

pytest tests/test_ttrl.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from posttrain.advantages import group_advantages
from posttrain.errors import RewardError
from posttrain.rewards import is_group_reward, load_reward


def b(x: str) -> str:
    return f"so the answer is \\boxed{{{x}}}"


@pytest.mark.parametrize(
    ("name", "completions", "group_size", "expected"),
    [
        ("clear majority", [b("2"), b("2"), b("3"), b("2")], 4, [1, 1, 0, 1]),
        ("tie: the answer seen first wins", [b("3"), b("2"), b("2"), b("3")], 4, [1, 0, 0, 1]),
        ("unparseable answers do not vote and score 0", ["hmm", "no idea", b("5"), "?"], 4, [0, 0, 1, 0]),
        ("nothing parseable: no label, all 0", ["hmm", "no idea", "?", "."], 4, [0, 0, 0, 0]),
        # Defect (issue 13): the lenient extractor let unboxed numbers vote, so "3" won 3-1 here.
        (
            "unboxed answers do not vote (TTRL reads the box)",
            ["the answer is 3", "3", b("5"), "so 3"],
            4,
            [0, 0, 1, 0],
        ),
        (
            "a box cut off by the length limit does not vote",
            ["\\boxed{3", "\\boxed{3", b("5"), b("4")],
            4,
            [0, 0, 1, 0],
        ),
        ("the last box counts", ["\\boxed{3} no, \\boxed{5}", b("5"), b("3"), "?"], 4, [1, 1, 0, 0]),
        (
            "0.5 and \\frac{1}{2} are one answer",
            [b("0.5"), b("\\frac{1}{2}"), b("1"), b("1")],
            4,
            [1, 1, 0, 0],
        ),
        (
            "several groups in one call",
            [b("1"), b("1"), b("2"), b("7"), b("8"), b("8")],
            3,
            [1, 1, 0, 0, 1, 1],
        ),
    ],
)
def test_ttrl_majority(name, completions, group_size, expected):
    reward = load_reward("ttrl_majority")
    assert is_group_reward(reward)
    assert reward(completions=completions, group_size=group_size) == [float(x) for x in expected], name


def test_ttrl_diagnostics_with_labels():
    logged = {}
    completions = [b("2"), b("2"), b("3"), b("3"), b("3"), b("4")]
    load_reward("ttrl_majority")(
        completions=completions,
        group_size=3,
        answer=["2", "2", "2", "4", "4", "4"],
        log_metric=logged.__setitem__,
    )
    # Group 1 votes 2 (right), group 2 votes 3 (wrong): label accuracy 1/2.
    assert logged["ttrl/label_accuracy"] == 0.5
    assert logged["ttrl/majority_ratio"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # Reward == true correctness for 3/3 of group 1 and 0/3 of group 2 (3, 3 rewarded; 4 not).
    assert logged["ttrl/reward_accuracy"] == 0.5
    assert logged["ttrl/no_answer_groups"] == 0.0


def test_ttrv_frequency_by_hand():
    reward = load_reward("ttrv_frequency")
    # p = (3/4, 1/4), M = 2: H / log 2 = -(0.75 ln 0.75 + 0.25 ln 0.25) / ln 2 = 0.8113
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    scores = reward(completions=[b("1"), b("1"), b("1.0"), b("2")], group_size=4)
    assert scores == pytest.approx([0.75 - 0.75 * h] * 3 + [0.25 - 0.75 * h])
    # A missing answer is a class of its own (TTRV's code maps it to ""): shares (3/4, 1/4) again.
    assert reward(completions=[b("4"), b("4"), "?", b("4")], group_size=4) == pytest.approx(
        [0.75 - 0.75 * h] * 2 + [0.25 - 0.75 * h] + [0.75 - 0.75 * h]
    )
    # All agree: no entropy.
    assert reward(completions=[b("4")] * 4, group_size=4) == [1.0] * 4


@pytest.mark.parametrize("entropy", ["group", "sample"])
def test_ttrv_a_missing_answer_never_beats_the_majority(entropy):
    """Defect (issue 13): a missing answer scored 0 while answers scored share - 0.75 x entropy < 0, so after
    group normalisation the non-answer had the highest advantage of its group."""
    reward = load_reward("ttrv_frequency", entropy=entropy)
    scores = reward(completions=[b("1"), b("1"), b("2"), b("3"), "no idea"], group_size=5)
    # Before the fix: [-0.31, -0.31, ..., 0.0]: the non-answer on top.
    assert scores[4] < scores[0] == scores[1]
    advantages = group_advantages(torch.tensor(scores), 5)
    assert advantages[4] < advantages[0]
    assert scores[4] == pytest.approx(scores[2])  # a class of one, like the single "2" and "3"


def _advantages(completions, group_size, **kwargs) -> torch.Tensor:
    scores = load_reward("ttrv_frequency", **kwargs)(completions=completions, group_size=group_size)
    return group_advantages(torch.tensor(scores), group_size)


def test_ttrv_group_entropy_cancels_under_group_normalisation():
    completions = [b("1"), b("1"), b("2"), b("3"), b("1"), b("1"), b("1"), b("2")]
    plain = _advantages(completions, 4, entropy_weight=0.0)
    assert torch.allclose(_advantages(completions, 4, entropy="group"), plain, atol=1e-6)


def test_ttrv_sample_entropy_acts_only_with_three_or_more_vote_levels():
    # Vote shares 1/2, 1/3, 1/6: the per-sample penalty -log p / log M changes the spacing.
    three = [b("1"), b("1"), b("1"), b("2"), b("2"), b("3")]
    plain = _advantages(three, 6, entropy_weight=0.0)
    sample = _advantages(three, 6, entropy="sample")
    assert not torch.allclose(sample, plain, atol=1e-2)
    assert sample[5] < plain[5]  # the rarest answer is pushed down harder
    # With two vote levels any increasing function of the share normalises to the same advantages.
    two = [b("1"), b("1"), b("1"), b("2")]
    assert torch.allclose(
        _advantages(two, 4, entropy="sample"), _advantages(two, 4, entropy_weight=0.0), atol=1e-3
    )
    # Per group, the per-sample penalties average to the paper's term.
    paper = load_reward("ttrv_frequency")(completions=three, group_size=6)
    per_sample = load_reward("ttrv_frequency", entropy="sample")(completions=three, group_size=6)
    assert sum(per_sample) == pytest.approx(sum(paper))


@pytest.mark.parametrize(
    ("kwargs", "phrase"), [({"entropy_weight": -1}, "entropy_weight"), ({"entropy": "x"}, "entropy")]
)
def test_ttrv_bad_kwargs(kwargs, phrase):
    with pytest.raises(RewardError, match=phrase):
        load_reward("ttrv_frequency", **kwargs)(completions=[b("1")], group_size=1)
