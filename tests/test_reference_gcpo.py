"""GCPO's rewards against the method's formulas, on random groups of synthetic completions (hypothesis).

    pytest tests/test_reference_gcpo.py -q

What the test computes itself, in a few plain lines (docs/methods.md, "GCPO";
GeometryZero, arXiv 2506.07160; the authors' r1_workspace ``workspace/reward/reward_utils.py``):

    acc_i    1 or 0, known by construction: each completion is built right or wrong under the authors'
             reading (``accuracy_reward_func(..., relaxed=True)``: first <answer> span, math-verify, any
             number within 2% of the gold's last number, option letter in either case); None without gold
    aux_i    1 if the completion holds an <auxiliary> span (the detector), else 0
    delta    mean(acc | aux = 1) - mean(acc | aux = 0), over the rows with gold
    M        +1 if delta > eps, -1 if delta < -eps, else 0; 0 when either subgroup is empty
    reward_i M * aux_i (None where acc_i is None)
    length   min(n_tokens, cap) / cap  (the authors: 0.5 * min(n, 900) / 900 = weight 0.5, cap 900)

and compares it with posttrain's ``gcpo_contrastive`` (loaded as a recipe loads it, called with
``group_size``), ``accuracy`` and ``length`` under the settings ``method: gcpo`` uses.

Posttrain's two documented deviations are labels in the property test and strict xfails at the end: a
completion without any <answer> tag has no answer (the authors' code parses the whole text), and the
default detector ignores an empty ``<auxiliary></auxiliary>`` span (theirs counts it; the
``REFERENCE_DETECTOR`` regex restores that).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posttrain.methods import get_method
from posttrain.rewards import load_reward
from rewards.length import length

GCPO = {spec["name"]: spec for spec in get_method("gcpo").rewards}
READING = {"extract": "tagged", "rel_tol": 0.02}  # GeometryZero's answer reading, as method: gcpo sets it
REFERENCE_DETECTOR = "<auxiliary>.*?</auxiliary>"  # aux_line_reward_v2_func's pattern, searched anywhere

# gold -> (answers the authors' check accepts, answers it rejects), with why in the comments.
ANSWERS = {
    # 4.05 and "about 3.95 cm": within 2% of 4 (relaxed); 4.1 and 3.9 are 2.5% off; 40 is far
    "4": (["4", "4.0", "4.05", "about 3.95 cm"], ["5", "4.1", "3.9", "40"]),
    # 12.2 is 1.7% off (relaxed); 12.3 is 2.5% off
    "12": (["12", "12.2", "\\frac{24}{2}"], ["13", "12.3", "-12"]),
    # an option letter: any case, surrounding spaces stripped
    "B": (["B", "b", " b "], ["C", "a", "AB"]),
}
# How the answer is written; the bool says whether the authors' reading finds the answer written there.
LAYOUTS = {
    "tagged": lambda a, other: f"<answer>{a}</answer>",
    "unclosed": lambda a, other: f"<answer>{a}",  # cut off: the text after the last <answer>
    "first_span": lambda a, other: f"<answer>{a}</answer><answer>{other}</answer>",  # the first span counts
    "untagged": lambda a, other: f"The answer is {a}.",  # posttrain: no tag, no answer (a deviation)
}
AUX = {  # kind -> text in the reasoning, and whether (default detector, the authors' regex) see it
    "none": ("", False, False),
    "span": ("<auxiliary>draw the altitude AD</auxiliary>", True, True),
    "unclosed": ("<auxiliary>draw the altitude AD", False, False),
    "empty": ("<auxiliary></auxiliary>", False, True),  # counted by the authors' regex only
}


@st.composite
def group(draw, size: int):
    """One prompt's rollouts: (completions, gold per row, acc per row, aux kind per row)."""
    gold = draw(st.sampled_from(sorted(ANSWERS)))
    rights, wrongs = ANSWERS[gold]
    right_mode = draw(st.sampled_from(["random", "all_right", "all_wrong"]))
    aux_mode = draw(st.sampled_from(["random", "all", "none"]))
    gold_mode = draw(st.sampled_from(["all", "all", "none", "mixed"]))  # rows without gold: acc None
    rows = []
    for _ in range(size):
        right = {"random": draw(st.booleans()), "all_right": True, "all_wrong": False}[right_mode]
        layout = draw(st.sampled_from(sorted(LAYOUTS)))
        written, other = draw(st.sampled_from(rights)), draw(st.sampled_from(wrongs))
        if not right:
            written, other = other, written
        aux = {"all": "span", "none": "none", "random": draw(st.sampled_from(sorted(AUX)))}[aux_mode]
        has_gold = {"all": True, "none": False, "mixed": draw(st.booleans())}[gold_mode]
        text = f"<think>Look at triangle ABC. {AUX[aux][0]} So:</think>\n{LAYOUTS[layout](written, other)}"
        acc = (1.0 if right and layout != "untagged" else 0.0) if has_gold else None
        rows.append((text, gold if has_gold else None, acc, aux))
    return rows


@st.composite
def batch(draw):
    size = draw(st.integers(1, 8))
    groups = draw(st.lists(group(size), min_size=1, max_size=4))
    return size, [row for g in groups for row in g]


def reference_mask(acc: list[float | None], aux: list[int], eps: float) -> int:
    """M for one group, from the formula (module docstring)."""
    with_aux = [a for a, x in zip(acc, aux) if a is not None and x]
    without = [a for a, x in zip(acc, aux) if a is not None and not x]
    if not with_aux or not without:
        return 0
    delta = sum(with_aux) / len(with_aux) - sum(without) / len(without)
    return 1 if delta > eps else -1 if delta < -eps else 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch(),
    st.sampled_from([0.0, 0.01, 0.05, 0.15, 0.3]),  # the epsilons the authors tried, and none
    st.sampled_from([None, REFERENCE_DETECTOR]),
)
def test_gcpo_contrastive_is_the_formula(size_and_rows, epsilon, detector):
    size, rows = size_and_rows
    texts, golds, acc, kinds = (list(column) for column in zip(*rows))
    aux = [int(AUX[k][1] if detector is None else AUX[k][2]) for k in kinds]
    expected: list[float | None] = []
    masks = []
    for start in range(0, len(rows), size):
        g_acc, g_aux = acc[start : start + size], aux[start : start + size]
        masks.append(reference_mask(g_acc, g_aux, epsilon))
        expected += [None if a is None else float(masks[-1] * x) for a, x in zip(g_acc, g_aux)]

    kwargs = {**GCPO["gcpo_contrastive"]["kwargs"], "epsilon": epsilon, "detector": detector}
    reward = load_reward("gcpo_contrastive", **kwargs)
    logged: dict[str, float] = {}
    got = reward(texts, group_size=size, answer=golds, log_metric=logged.__setitem__)
    assert got == expected
    assert logged["gcpo/mask_pos"] == masks.count(1) / len(masks)
    assert logged["gcpo/mask_neg"] == masks.count(-1) / len(masks)
    # The accuracy reward of method gcpo judges every row as the mask did.
    assert load_reward("accuracy", **GCPO["accuracy"]["kwargs"])(texts, answer=golds) == acc


def test_method_gcpo_reads_answers_like_geometryzero():
    # The settings the property test relies on are the ones `method: gcpo` ships.
    assert GCPO["accuracy"]["kwargs"] == READING
    assert {k: GCPO["gcpo_contrastive"]["kwargs"][k] for k in READING} == READING
    assert GCPO["gcpo_contrastive"]["kwargs"]["epsilon"] == 0.05
    assert GCPO["format"]["kwargs"] == {"style": "geometryzero"} and GCPO["format"]["weight"] == 0.5
    assert GCPO["length"]["kwargs"] == {"cap": 900} and GCPO["length"]["weight"] == 0.5


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=8), st.integers(1, 2000))
def test_length_is_min_n_cap_over_cap(counts, cap):
    ids = [[7] * n for n in counts]
    assert length(["x"] * len(counts), completion_ids=ids, cap=cap) == [min(n, cap) / cap for n in counts]


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=8))
def test_length_at_gcpo_settings_is_the_authors_term(counts):
    # The authors' length_reward_func(max_length=900, beta=0.5) = 0.5 * min(n, 900) / 900.
    spec = GCPO["length"]
    got = load_reward("length", **spec["kwargs"])(
        ["x"] * len(counts), completion_ids=[[1] * n for n in counts]
    )
    assert [spec["weight"] * r for r in got] == [0.5 * min(n, 900) / 900 for n in counts]


@settings(max_examples=60, deadline=None)
@given(batch(), st.integers(1, 40))
def test_gated_length_judges_like_the_gcpo_accuracy(size_and_rows, cap):
    _, rows = size_and_rows
    texts, golds, acc, _ = (list(column) for column in zip(*rows))
    ids = [[1] * len(t) for t in texts]
    got = length(texts, completion_ids=ids, cap=cap, correct_only=True, answer=golds, **READING)
    assert got == [None if a is None else min(len(t), cap) / cap * a for t, a in zip(texts, acc)]


# -- posttrain's documented deviations from the authors' code, kept visible as strict xfails ---------


@pytest.mark.xfail(
    strict=True,
    reason="GeometryZero's aux_line_reward_v2_func counts an empty <auxiliary></auxiliary> span; posttrain's "
    "default detector needs a non-empty one (an empty span is free to emit). detector: REFERENCE_DETECTOR "
    "restores the authors' reading.",
)
def test_empty_auxiliary_span_counts_as_in_the_reference():
    texts = [
        "<think>a <auxiliary></auxiliary></think><answer>4</answer>",
        "<think>a</think><answer>5</answer>",
    ]
    # The authors' detector: aux = [1, 0]; acc = [1, 0]; delta = 1 > 0.05 -> M = +1.
    assert load_reward("gcpo_contrastive")(texts, group_size=2, answer=["4", "4"]) == [1.0, 0.0]


@pytest.mark.xfail(
    strict=True,
    reason="GeometryZero's accuracy_reward_func reads a completion without any <answer> tag whole (its "
    "split('<answer>')[-1] fallback); posttrain's `tagged` reading gives it no answer, so untagged text earns "
    "no accuracy.",
)
def test_untagged_completion_is_read_whole_as_in_the_reference():
    assert load_reward("accuracy", **READING)(["4"], answer=["4"]) == [1.0]
