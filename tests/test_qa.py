"""Tests for short-answer QA scoring and abstention metrics (posttrain/verify/qa.py).

    pytest tests/test_qa.py -q

Every expected value is worked out by hand in the comment beside its case.
"""

from __future__ import annotations

import doctest

import pytest

import posttrain.verify.qa
from posttrain.verify.qa import (
    abstention_metrics,
    count_searches,
    exact_match,
    extract_answer,
    f1_score,
    normalize_answer,
)


def test_docstring_examples():
    # The docstring examples are part of the documentation: keep them true.
    result = doctest.testmod(posttrain.verify.qa)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Beijing.", "beijing"),  # article, double space, punctuation
        ("beijing", "beijing"),  # already normal
        ("An apple a day", "apple day"),  # both articles go
        ("Theatre", "theatre"),  # 'the' only as a whole word
        ("  U.S.A.  ", "usa"),  # punctuation inside a word is dropped, not spaced
        ("rock-n-roll", "rocknroll"),  # hyphens are punctuation
        ("Tab\tand\nnewline", "tab and newline"),  # any whitespace collapses
        ("", ""),  # empty stays empty
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("The  Beijing.", "beijing", 1.0),  # normalised on both sides
        ("beijing", ["Peking", "The Beijing"], 1.0),  # any gold answer
        ("Beijing, China", "Beijing", 0.0),  # extra words: not exact
        (None, "Beijing", 0.0),  # no answer tag: wrong
        ("Beijing", [], 0.0),  # no gold
        ("Beijing", None, 0.0),  # no gold
        ("1945", [1945], 1.0),  # gold numbers compare as text
        ("", "the", 1.0),  # both normalise to "": SQuAD calls that a match
    ],
)
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers) == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Beijing", "the Beijing", 1.0),  # same tokens after normalisation
        ("the city of Beijing", "Beijing", 0.5),  # p = 1/3, r = 1: 2pr/(p+r) = 0.5
        ("Barack Obama", "Barack Hussein Obama", 0.8),  # p = 2/2, r = 2/3: 0.8
        ("Barack Obama", ["Obama", "Barack Hussein Obama"], 0.8),  # max over gold (2/3 vs 0.8)
        ("Paris", "Beijing", 0.0),  # nothing in common
        ("a a b", "a b b", 2 / 3),  # 'a' is an article: [b] vs [b, b], p = 1, r = 1/2 -> 2/3
        ("x x y", "x y y", 2 / 3),  # counts with multiplicity: common {x: 1, y: 1} = 2 of 3 each
        (None, "Beijing", 0.0),  # no prediction
        ("", "Beijing", 0.0),  # empty prediction vs a real answer
    ],
)
def test_f1_score(prediction, answers, expected):
    assert f1_score(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>Beijing</answer>", "Beijing"),  # one span
        ("<think>x</think>\n<answer>\n  Beijing \n</answer>", "Beijing"),  # stripped, across lines
        ("<answer>Paris</answer> wait <answer>Lyon</answer>", "Lyon"),  # the last span wins
        ("<answer>Paris</answer> then <answer>Lyon", "Paris"),  # an unclosed last tag does not count
        ("<answer>Beijing", None),  # unclosed: no answer (cut off by the token limit)
        ("Beijing", None),  # no tag at all
        ("<answer></answer>", ""),  # an empty span is an empty answer, not None
        ("<answer>1<answer>2</answer>", "1<answer>2"),  # MASH: the non-greedy span from the first tag
        ("<ANSWER>x</ANSWER>", None),  # tags are case-sensitive, as the prompt writes them
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<search>capital of China</search>", 1),
        ("<search>a</search><document>(Title: A) ...</document><search>b</search><answer>c</answer>", 2),
        ("<search>never closed", 0),  # a request cut off by the token limit is not one
        ("I will search for it", 0),  # the word alone is not a request
        ("<search>a<search>b</search>", 1),  # one closing tag: one request
        ("", 0),
    ],
)
def test_count_searches(text, expected):
    assert count_searches(text) == expected


# -- abstention metrics ----------------------------------------------------------------------------


def rec(correct, searches, known=None, f1=None):
    out = {"correct": correct, "f1": float(correct) if f1 is None else f1, "num_searches": searches}
    if known is not None:
        out["known"] = known
    return out


# Six questions, each with its no-search answerability `known`:
#   answered right at known 1.0 and 0.5; answered wrong (f1 0.4) at known 0.0;
#   abstained at known 0.0 (twice, once with a "correct" record that must still count as wrong)
#   and at known 1.0.
SIX = [
    rec(1, 0, known=1.0),
    rec(1, 0, known=0.5),
    rec(0, 0, known=0.0, f1=0.4),
    rec(0, 3, known=0.0),
    rec(1, 1, known=0.0),
    rec(0, 2, known=1.0),
]


def test_abstention_metrics_by_hand():
    m = abstention_metrics(SIX)
    assert m["n"] == 6
    assert m["exact_match"] == pytest.approx(2 / 6)  # abstentions score 0 even when `correct` is 1
    assert m["f1"] == pytest.approx((1 + 1 + 0.4) / 6)
    assert m["searches_mean"] == pytest.approx(6 / 6)
    assert m["abstention_rate"] == pytest.approx(3 / 6)
    assert m["answered_accuracy"] == pytest.approx(2 / 3)
    # known == 0: rows 3, 4, 5 -> 2 of 3 abstained; known == 1: rows 1, 6 -> 1 of 2.
    assert m["abstain_when_unknown"] == pytest.approx(2 / 3)
    assert m["abstain_when_known"] == pytest.approx(1 / 2)
    assert m["abstention_slope"] == pytest.approx(2 / 3 - 1 / 2)
    # unknown (known < 0.1) = rows 3, 4, 5; abstained = rows 4, 5, 6; both: rows 4, 5.
    assert m["abstention_precision"] == pytest.approx(2 / 3)
    assert m["abstention_recall"] == pytest.approx(2 / 3)
    assert m["abstention_f1"] == pytest.approx(2 / 3)


def test_abstention_threshold_moves_the_unknown_set():
    # threshold 0.6: known 0.5 (row 2, answered) is now unknown too -> recall 2/4, precision 2/3.
    m = abstention_metrics(SIX, unknown_threshold=0.6)
    assert m["abstention_recall"] == pytest.approx(2 / 4)
    assert m["abstention_precision"] == pytest.approx(2 / 3)
    assert m["abstain_when_unknown"] == pytest.approx(2 / 3)  # Abs(0) does not use the threshold


def test_abstention_without_known_gives_none_for_the_answerability_metrics():
    records = [{k: v for k, v in r.items() if k != "known"} for r in SIX]
    m = abstention_metrics(records)
    assert m["exact_match"] == pytest.approx(2 / 6) and m["abstention_rate"] == pytest.approx(0.5)
    for key in (
        "abstain_when_unknown",
        "abstain_when_known",
        "abstention_slope",
        "abstention_precision",
        "abstention_recall",
        "abstention_f1",
    ):
        assert m[key] is None, key


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # `searched` instead of a count: no mean number of searches.
        (
            [{"correct": 1, "f1": 1.0, "searched": False}, {"correct": 0, "f1": 0.0, "searched": True}],
            {"searches_mean": None, "abstention_rate": 0.5, "answered_accuracy": 1.0},
        ),
        # Everything abstained: no answered accuracy; precision = share of unknown questions (1/2).
        (
            [rec(0, 1, known=0.0), rec(0, 2, known=1.0)],
            {"answered_accuracy": None, "abstention_precision": 0.5, "abstention_recall": 1.0},
        ),
        # Nothing abstained: precision undefined, recall 0, F1 undefined.
        (
            [rec(1, 0, known=1.0), rec(0, 0, known=0.0)],
            {"abstention_precision": None, "abstention_recall": 0.0, "abstention_f1": None},
        ),
        # No known == 1 question: no slope.
        (
            [rec(0, 1, known=0.0), rec(1, 0, known=0.5)],
            {"abstain_when_known": None, "abstention_slope": None},
        ),
        # Abstained on every unknown, answered every known: the ideal abstainer.
        (
            [rec(0, 1, known=0.0), rec(1, 0, known=1.0)],
            {"abstention_slope": 1.0, "abstention_f1": 1.0, "exact_match": 0.5},
        ),
    ],
)
def test_abstention_edge_cases(records, expected):
    m = abstention_metrics(records)
    for key, value in expected.items():
        assert m[key] == (pytest.approx(value) if value is not None else None), key


@pytest.mark.parametrize(
    ("records", "phrase"),
    [
        ([], "at least one record"),
        ([{"correct": 1, "f1": 1.0}], "num_searches"),
        ([rec(1, 0, known=2.0)], "known"),
    ],
)
def test_abstention_bad_records(records, phrase):
    with pytest.raises(ValueError, match=phrase):
        abstention_metrics(records)


def test_the_old_import_path_still_works_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("posttrain.qa", None)
    with pytest.warns(DeprecationWarning, match="posttrain.verify.qa"):
        old = importlib.import_module("posttrain.qa")
    assert old.exact_match("Paris", ["paris"]) == 1.0
