"""Reference equivalence: TTRL's majority-vote reward and TTRV's frequency reward (rewards/ttrl.py).

pytest tests/test_reference_ttrl.py -q

The reference side is written out here from the methods' code (docs/methods.md, "Test-time RL");
it does not import posttrain's helpers:

TTRL (PRIME-RL/TTRL, ``ttrl_utils._majority_vote`` with ``ttrl_math.extract_answer``)
    answer      the content of the LAST ``\\boxed{...}``; None without a box or when that box never closes
    vote        None answers are dropped; majority = most common answer, the first seen on a tie
    ratio       count(majority) / number of ALL completions of the group (0 when nothing answered)
    reward_i    1 if answer_i equals the majority answer, else 0 (no answer: 0)

TTRV (Akshit21112002/TTRV, ``ttt_metrics.test_time_train_metrics``)
    class_j     completion j's answer, "" when it has none (a class of its own)
    p_k         count_k / N over all N completions;  H = -sum_k p_k ln p_k;  M = number of classes
    H_norm      H / ln M if M > 1 else 0
    reward_j    p_k(j) - 0.75 * H_norm                           (posttrain's ``entropy="group"``)
                p_k(j) - 0.75 * (-ln p_k(j)) / ln M, 1 if M = 1   (posttrain's ``entropy="sample"``)

Answers come from a small set of plain integers so that string identity (the references' vote) and
posttrain's mathematical equivalence agree. Completions: one box, two boxes (the last counts), a
truncated last box (TTRL only: no answer), and answer-less text without digits.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.advantages import group_advantages, vote_subset
from posttrain.rewards import load_reward
from posttrain.verify.vote import majority_hits
from rewards.ttrl import frequency_rewards

SETTINGS = settings(max_examples=120, deadline=None, database=None)
ANSWERS = ["1", "2", "3", "7", "12"]
NO_ANSWER_TEXTS = ["no idea", "I cannot tell.", "hmm, let me think again"]  # no digits, no box
ALPHA = 0.75  # TTRV's entropy weight


# ---------------------------------------------------------------------------------------------
# The references, from the formulas above.


def ref_last_box(text: str) -> str | None:
    """TTRL's extraction: the content of the last ``\\boxed{``, None if there is none or it never closes."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for j in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : j]
    return None


def ref_ttrl_group(answers: list[str | None]) -> tuple[str | None, float, list[float]]:
    """(majority, majority_ratio, rewards) of one group, as TTRL's ``_majority_vote`` + verify."""
    voted = [a for a in answers if a is not None]
    if not voted:
        return None, 0.0, [0.0] * len(answers)
    majority, count = Counter(voted).most_common(1)[0]  # Counter keeps first-seen order on ties
    return majority, count / len(answers), [1.0 if a == majority else 0.0 for a in answers]


def ref_ttrv_group(answers: list[str | None], weight: float = ALPHA, mode: str = "group") -> list[float]:
    """TTRV's ``test_time_train_metrics`` reward of one group (None -> the class "")."""
    classes = ["" if a is None else a for a in answers]
    n = len(classes)
    p = {k: c / n for k, c in Counter(classes).items()}
    m = len(p)
    entropy = -sum(q * math.log(q) for q in p.values())
    h_norm = entropy / math.log(m) if m > 1 else 0.0
    if mode == "group":
        return [p[k] - weight * h_norm for k in classes]
    return [p[k] - weight * (-math.log(p[k]) / math.log(m) if m > 1 else 0.0) for k in classes]


def ref_normalise(rewards: list[float], group_size: int) -> list[float]:
    """GRPO group normalisation, (r - mean) / (Bessel std + 1e-4)."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1)) if len(group) > 1 else 0.0
        out += [(r - mean) / (std + 1e-4) for r in group]
    return out


# ---------------------------------------------------------------------------------------------
# Generators: a completion is (text, TTRL's answer, TTRV's answer).


def boxed(a: str) -> tuple[str, str, str]:
    return f"so the answer is \\boxed{{{a}}}.", a, a


@st.composite
def completion(draw, truncated: bool = True):
    kinds = ["box", "two_boxes", "none"] + (["truncated", "box_then_truncated"] if truncated else [])
    kind = draw(st.sampled_from(kinds))
    a, b = draw(st.sampled_from(ANSWERS)), draw(st.sampled_from(ANSWERS))
    if kind == "box":
        return boxed(a)
    if kind == "two_boxes":
        return f"first \\boxed{{{a}}}, no wait: \\boxed{{{b}}}", b, b
    if kind == "none":
        return draw(st.sampled_from(NO_ANSWER_TEXTS)), None, None
    if kind == "truncated":
        return f"it is \\boxed{{{a}", None, None
    return f"\\boxed{{{a}}} or rather \\boxed{{{b}", None, None


def no_answer(draw, truncated: bool):
    return draw(completion(truncated).filter(lambda c: c[1] is None and c[2] is None))


@st.composite
def group(draw, size: int, truncated: bool = True):
    """One group of ``size`` completions: random, all one answer, none answered, a single answer, a tie."""
    kind = draw(st.sampled_from(["random", "random", "same", "missing", "one_answer", "tie"]))
    if kind == "random":
        return draw(st.lists(completion(truncated), min_size=size, max_size=size))
    if kind == "same":  # all correct: every completion gives the same answer
        a = draw(st.sampled_from(ANSWERS))
        return [boxed(a)] * size
    if kind == "missing":  # all wrong: nobody answers
        return [no_answer(draw, truncated) for _ in range(size)]
    if kind == "one_answer":
        out = [no_answer(draw, truncated) for _ in range(size)]
        out[draw(st.integers(0, size - 1))] = boxed(draw(st.sampled_from(ANSWERS)))
        return out
    a, b = draw(st.lists(st.sampled_from(ANSWERS), min_size=2, max_size=2, unique=True))
    out = [boxed(a)] * (size // 2) + [boxed(b)] * (size // 2)
    out += [no_answer(draw, truncated)] * (size % 2)
    return draw(st.permutations(out))


@st.composite
def batch(draw, truncated: bool = True, sizes=st.integers(1, 8)):
    """(completions, group_size): 1..4 groups of the same size."""
    size = draw(sizes)
    n_groups = draw(st.integers(1, 4))
    rows = [c for _ in range(n_groups) for c in draw(group(size, truncated))]
    return rows, size


def texts(rows) -> list[str]:
    return [text for text, _, _ in rows]


def groups_of(values: list, size: int) -> list[list]:
    return [values[s : s + size] for s in range(0, len(values), size)]


# ---------------------------------------------------------------------------------------------
# TTRL


@SETTINGS
@given(data=batch())
def test_ttrl_majority_matches_reference(data):
    """TTRL: last box only (no/unclosed last box = no vote), majority by count with first-seen ties,
    reward 1 for the majority answer, 0 otherwise; logged majority_ratio = mean over groups of
    count/len(all completions)."""
    rows, size = data
    assert [ref_last_box(t) for t in texts(rows)] == [ttrl for _, ttrl, _ in rows]  # generator sanity
    expected, ratios = [], []
    for g in groups_of([ref_last_box(t) for t in texts(rows)], size):
        _, ratio, rewards = ref_ttrl_group(g)
        expected += rewards
        ratios.append(ratio)
    logged: dict[str, float] = {}
    reward = load_reward("ttrl_majority")
    actual = reward(completions=texts(rows), group_size=size, log_metric=logged.__setitem__)
    assert actual == expected
    assert math.isclose(logged["ttrl/majority_ratio"], sum(ratios) / len(ratios), abs_tol=1e-12)
    no_answer_share = sum(a is None for _, a, _ in rows) / len(rows)
    assert math.isclose(logged["ttrl/no_answer"], no_answer_share, abs_tol=1e-12)


@SETTINGS
@given(answers=st.lists(st.one_of(st.sampled_from(ANSWERS), st.none()), min_size=1, max_size=8))
def test_majority_hits_matches_reference_vote(answers):
    """TTRL's ``_majority_vote`` on extracted answers: None dropped, Counter.most_common (first seen on
    ties), ratio over all answers including None; hits are 1.0 exactly on the majority answer."""
    majority, ratio, hits = ref_ttrl_group(answers)
    assert majority_hits(answers) == (majority, ratio, hits)


# ---------------------------------------------------------------------------------------------
# TTRV


@SETTINGS
@given(data=batch(truncated=False))
def test_ttrv_group_entropy_matches_reference(data):
    """TTRV's reward, R_j = p(answer_j) - 0.75 * H / ln M (H over all classes, missing answer = class
    "", 0 when M = 1), equals posttrain's default ``ttrv_frequency`` to 1e-9."""
    rows, size = data
    expected = [r for g in groups_of([a for _, _, a in rows], size) for r in ref_ttrv_group(g)]
    actual = load_reward("ttrv_frequency")(completions=texts(rows), group_size=size)
    assert len(actual) == len(expected)
    assert all(abs(x - y) <= 1e-9 for x, y in zip(actual, expected)), (actual, expected)


@SETTINGS
@given(
    data=batch(truncated=False),
    mode=st.sampled_from(["group", "sample"]),
    weight=st.one_of(st.just(ALPHA), st.just(0.0), st.floats(0, 2)),
)
def test_ttrv_both_modes_match_formula(data, mode, weight):
    """``entropy="sample"``: R_j = p_k(j) - w * (-ln p_k(j)) / ln M (all 1.0 when M = 1), and
    ``entropy="group"`` with any weight w: R_j = p_k(j) - w * H_norm; to 1e-9."""
    rows, size = data
    answers = [a for _, _, a in rows]
    expected = [r for g in groups_of(answers, size) for r in ref_ttrv_group(g, weight, mode)]
    reward = load_reward("ttrv_frequency", entropy=mode, entropy_weight=weight)
    actual = reward(completions=texts(rows), group_size=size)
    assert all(abs(x - y) <= 1e-9 for x, y in zip(actual, expected)), (actual, expected)
    direct = [r for g in groups_of(answers, size) for r in frequency_rewards(g, weight, mode)]
    assert all(abs(x - y) <= 1e-9 for x, y in zip(direct, expected))
    for g, scores in zip(groups_of(answers, size), groups_of(actual, size)):
        if len(set(g)) == 1:  # one class: p = 1, no entropy, in both modes
            assert scores == [1.0] * size


@SETTINGS
@given(data=batch(truncated=False), scale=st.sampled_from(["group", "none"]))
def test_ttrv_group_entropy_cancels_under_group_normalisation(data, scale):
    """Section 2.2's note: H_norm is one number per group, so GRPO's group normalisation removes it;
    advantages with the 0.75 entropy term equal those of the pure frequency reward (weight 0), 1e-6."""
    rows, size = data
    with_entropy = load_reward("ttrv_frequency", entropy="group")(completions=texts(rows), group_size=size)
    frequency = load_reward("ttrv_frequency", entropy_weight=0.0)(completions=texts(rows), group_size=size)
    a = group_advantages(torch.tensor(with_entropy, dtype=torch.float64), size, scale)
    b = group_advantages(torch.tensor(frequency, dtype=torch.float64), size, scale)
    assert torch.allclose(a, b, rtol=0, atol=1e-6), (a, b)
    if scale == "group":
        assert torch.allclose(b, torch.tensor(ref_normalise(frequency, size), dtype=torch.float64), atol=1e-6)


@SETTINGS
@given(data=batch(truncated=False), mode=st.sampled_from(["group", "sample"]))
def test_ttrv_no_answer_never_beats_the_majority(data, mode):
    """Both TTRV modes are increasing in the class share p_k: a completion without an answer never
    scores above one whose class is at least as frequent, in particular the majority answer whenever
    it has at least as many votes as there are answer-less completions (and it always scores exactly
    as the reference, so the condition is the reference's own behaviour, see the next test)."""
    rows, size = data
    reward = load_reward("ttrv_frequency", entropy=mode)
    rewards = reward(completions=texts(rows), group_size=size)
    for answers, scores in zip(groups_of([a for _, _, a in rows], size), groups_of(rewards, size)):
        counts = Counter(answers)
        majority, _, _ = ref_ttrl_group(answers)
        for i, a in enumerate(answers):
            if a is not None:
                continue
            for j, b in enumerate(answers):
                if counts[b] >= counts[None]:
                    assert scores[i] <= scores[j] + 1e-12, (answers, scores)
            if majority is not None and counts[majority] >= counts[None]:
                assert scores[i] <= scores[answers.index(majority)] + 1e-12


def test_ttrv_no_answer_class_can_outscore_a_minority_majority_as_in_the_reference():
    """TTRV counts "no answer" as a class: when answer-less completions outnumber the majority answer,
    they score higher than it, in the reference and in posttrain (so property (b) needs that condition)."""
    rows = [("no idea", None, None)] * 3 + [boxed("2")]
    ref = ref_ttrv_group([a for _, _, a in rows])
    actual = load_reward("ttrv_frequency")(completions=texts(rows), group_size=4)
    assert all(abs(x - y) <= 1e-9 for x, y in zip(actual, ref))
    assert actual[0] > actual[3]


# ---------------------------------------------------------------------------------------------
# Vote on G, train on k


@st.composite
def split(draw):
    rows, size = draw(batch())
    keep = draw(st.sampled_from([k for k in range(1, size + 1) if size % k == 0]))
    return rows, size, keep


@SETTINGS
@given(data=split(), name=st.sampled_from(["ttrl_majority", "ttrv_frequency"]))
def test_vote_on_all_train_on_k(data, name):
    """TTRL's vote-then-sample: rewards come from the vote over all G completions; k of each group are
    kept (every G/k-th row: exactly k per group, all inside it), and their advantages are group
    normalisation over the kept rewards alone (k per group)."""
    rows, size, keep = data
    if name == "ttrv_frequency":  # a truncated box holds a number qwen_math would read: use "no idea" instead
        rows = [
            (t, a, a) if a is not None or "boxed" not in t else ("no idea", None, None) for t, a, _ in rows
        ]
    answers = [a for _, a, _ in rows]
    if name == "ttrl_majority":
        votes = [r for g in groups_of(answers, size) for r in ref_ttrl_group(g)[2]]
    else:
        votes = [r for g in groups_of(answers, size) for r in ref_ttrv_group(g)]
    rewards = load_reward(name)(completions=texts(rows), group_size=size)
    assert all(abs(x - y) <= 1e-9 for x, y in zip(rewards, votes))

    n_rows = len(rows)
    kept = vote_subset(n_rows, size, keep).tolist()
    assert len(kept) == (n_rows // size) * keep
    assert kept == sorted(set(kept)) and all(0 <= i < n_rows for i in kept)
    for g in range(n_rows // size):
        assert sum(i // size == g for i in kept) == keep
    kept_rewards = [votes[i] for i in kept]
    actual = group_advantages(torch.tensor(rewards, dtype=torch.float64)[kept], keep)
    expected = torch.tensor(ref_normalise(kept_rewards, keep), dtype=torch.float64)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-6), (actual, expected)
