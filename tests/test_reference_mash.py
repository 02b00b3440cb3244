"""Reference equivalence: MASH's pay-per-search reward (rewards/search.py ``PayPerSearch``).

pytest tests/test_reference_mash.py -q

The reference is a small stateful scorer written here from momergul/mash ``reward_functions.py`` and
``reward_manager.py`` (docs/methods.md, "Pay-per-search"); it does not import
posttrain's helpers:

    ans(y)   the stripped content of the LAST <answer>...</answer> span (None without a closed one)
    acc      1 if SQuAD-normalised ans(y) equals a normalised gold answer, else 0 (no answer: 0)
             (normalise: lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace)
    m_min(q) min #searches over this call's correct rollouts of q and the history of earlier calls;
             the history (keyed by question) then holds m_min(q)
    reward   acc * pen(m, m_min), c = max_searches (5):
             none 1;  exp lam^(m - m_min);  linear max(1 - m/(c+1), 0)
             otc (n = m_min): f = 0 if m = n = 0, m if n = 0, else 2mn/(m+n);
                  1 if f = 0, cos(m pi/(2m + c)) if n = 0, else sin(f pi/(2n))
             otc_strict: otc, but 0 when n = 0 and m > 0

Hypothesis generates sequences of calls (questions repeated across calls, 0..7 searches, right answers
in several surface forms, wrong answers, missing / unclosed / repeated answer tags) and feeds the same
sequence to both scorers.
"""

from __future__ import annotations

import math
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.rewards import load_reward
from rewards.search import PENALTIES

SETTINGS = settings(max_examples=100, deadline=None, database=None)
INF = float("inf")
GOLD = {
    "q0": ["Beijing"],
    "q1": ["The Eiffel Tower", "Eiffel"],
    "q2": ["A Tale of Two Cities"],
    "q3": ["42"],
}
WRONG = ["Shanghai", "Paris", "two cities", "43", "", "Tower Eiffel"]
PENALTY_NAMES = ["none", "exp", "linear", "otc", "otc_strict"]


# ---------------------------------------------------------------------------------------------
# The reference


def ref_extract(text: str) -> str | None:
    """The last non-greedy <answer>(.*?)</answer> match (DOTALL), stripped."""
    spans, pos = [], 0
    while True:
        start = text.find("<answer>", pos)
        if start < 0:
            break
        end = text.find("</answer>", start + len("<answer>"))
        if end < 0:
            break
        spans.append(text[start + len("<answer>") : end])
        pos = end + len("</answer>")
    return spans[-1].strip() if spans else None


def ref_normalise(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = " ".join(w for w in s.split() if w not in ("a", "an", "the"))
    return " ".join(s.split())


def ref_acc(text: str, golds: list[str]) -> float:
    ans = ref_extract(text)
    if ans is None:
        return 0.0
    return float(any(ref_normalise(ans) == ref_normalise(g) for g in golds))


def ref_penalty(kind: str, m: int, n: float, lam: float, c: int) -> float:
    if kind == "none":
        return 1.0
    if kind == "exp":
        return lam ** (m - n)
    if kind == "linear":
        return max(1.0 - m / (c + 1), 0.0)
    if kind == "otc_strict" and n == 0 and m > 0:
        return 0.0
    f = 0.0 if m == n == 0 else (m if n == 0 else 2 * m * n / (m + n))
    if f == 0:
        return 1.0
    if n == 0:
        return math.cos(m * math.pi / (2 * m + c))
    return math.sin(f * math.pi / (2 * n))


class RefPayPerSearch:
    def __init__(self, penalty: str, lam: float, c: int = 5):
        self.penalty, self.lam, self.c = penalty, lam, c
        self.history: dict[str, float] = {}  # question -> fewest searches of a correct rollout, or inf

    def __call__(
        self, texts: list[str], qids: list[str], counts: list[int], golds: list[list[str]]
    ) -> list[float]:
        acc = [ref_acc(t, g) for t, g in zip(texts, golds)]
        m_min = {}
        for q in dict.fromkeys(qids):  # the rollouts of one question form its group
            correct = [m for m, a, qq in zip(counts, acc, qids) if qq == q and a > 0]
            m_min[q] = min(correct + [self.history.get(q, INF)])
            self.history[q] = m_min[q]
        return [
            a * ref_penalty(self.penalty, m, m_min[q], self.lam, self.c) if a > 0 else 0.0
            for a, m, q in zip(acc, counts, qids)
        ]

    def finite_history(self) -> dict[str, int]:
        return {q: int(v) for q, v in self.history.items() if v < INF}


# ---------------------------------------------------------------------------------------------
# Generators


@st.composite
def right_answer(draw, qid: str) -> str:
    """A surface form of one of ``qid``'s gold answers that SQuAD normalisation maps onto it."""
    gold = draw(st.sampled_from(GOLD[qid]))
    form = draw(st.sampled_from(["same", "lower", "upper", "article", "punct", "spaces"]))
    return {
        "same": gold,
        "lower": gold.lower(),
        "upper": gold.upper(),
        "article": f"the {gold}",
        "punct": f"{gold}.!",
        "spaces": f"  {gold.replace(' ', '   ')} ",
    }[form]


@st.composite
def rollout(draw, qid: str, kind: str | None = None) -> tuple[str, int]:
    """(completion text, number of searches)."""
    kind = kind or draw(
        st.sampled_from(
            ["right", "right", "wrong", "no_tag", "unclosed", "last_right", "last_wrong", "cut_after"]
        )
    )
    right, wrong = draw(right_answer(qid)), draw(st.sampled_from(WRONG))
    text = {
        "right": f"<think>easy</think><answer>{right}</answer>",
        "wrong": f"<think>guess</think><answer>{wrong}</answer>",
        "no_tag": "<think>I would need to search</think> I do not know.",
        "unclosed": f"<think>cut off</think><answer>{right}",
        "last_right": f"<answer>{wrong}</answer> no, <answer>{right}</answer>",
        "last_wrong": f"<answer>{right}</answer> no, <answer>{wrong}</answer>",
        "cut_after": f"<answer>{right}</answer> then <answer>{wrong}",
    }[kind]
    return text, draw(st.integers(0, 7))


@st.composite
def call(draw) -> tuple[list[str], list[str], list[int], int]:
    """One reward call: 1..3 groups of 1..8 rollouts (random, all right, all wrong)."""
    size = draw(st.integers(1, 8))
    texts, qids, counts = [], [], []
    for _ in range(draw(st.integers(1, 3))):
        qid = draw(st.sampled_from(sorted(GOLD)))
        kind = draw(st.sampled_from([None, None, "right", "wrong"]))
        for _ in range(size):
            text, m = draw(rollout(qid, kind))
            texts.append(text)
            qids.append(qid)
            counts.append(m)
    return texts, qids, counts, size


CALLS = st.lists(call(), min_size=1, max_size=5)


def run_both(penalty, lam, calls, max_searches=None, gold_column="answers"):
    kwargs = {"lam": lam, "penalty": penalty}
    if max_searches is not None:
        kwargs["max_searches"] = max_searches
    reward = load_reward("pay_per_search", **kwargs)
    ref = RefPayPerSearch(penalty, lam, 5 if max_searches is None else max_searches)
    for texts, qids, counts, size in calls:
        if gold_column == "answers":  # a list of accepted answers per row
            golds = {"answers": [GOLD[q] for q in qids]}
            expected = ref(texts, qids, counts, [GOLD[q] for q in qids])
        else:  # one gold string per row: only that answer is accepted
            golds = {"answer": [GOLD[q][0] for q in qids]}
            expected = ref(texts, qids, counts, [GOLD[q][:1] for q in qids])
        actual = reward(completions=texts, group_size=size, num_searches=counts, id=qids, **golds)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a is not None and abs(a - e) <= 1e-9, (texts, counts, qids, actual, expected)
    return reward, ref


# ---------------------------------------------------------------------------------------------
# Tests


@SETTINGS
@given(
    penalty=st.sampled_from(PENALTY_NAMES),
    lam=st.one_of(st.sampled_from([0.5, 0.7, 0.8]), st.floats(0.05, 1.0)),
    calls=CALLS,
)
def test_pay_per_search_matches_reference_over_calls(penalty, lam, calls):
    """MASH 1.5: r = EM(last <answer> span, any gold) * pen(m, m_min), m_min over this call's correct
    rollouts and the history of earlier calls (c = 5), for every call of a sequence (1e-9); the final
    history equals the reference's fewest-correct-searches per question."""
    reward, ref = run_both(penalty, lam, calls)
    assert reward.state_dict()["history"] == {f"id:{q}": v for q, v in ref.finite_history().items()}


@SETTINGS
@given(
    penalty=st.sampled_from(["linear", "otc", "otc_strict"]),
    max_searches=st.integers(0, 7),
    calls=CALLS,
)
def test_pay_per_search_max_searches_matches_reference(penalty, max_searches, calls):
    """The search budget c enters linear (m/(c+1)) and OTC's n = 0 branch (cos(m pi/(2m + c))) as in MASH."""
    reward, ref = run_both(penalty, 0.5, calls, max_searches=max_searches)
    assert reward.state_dict()["history"] == {f"id:{q}": v for q, v in ref.finite_history().items()}


@SETTINGS
@given(penalty=st.sampled_from(PENALTY_NAMES), calls=CALLS)
def test_pay_per_search_single_gold_column_matches_reference(penalty, calls):
    """With an ``answer`` column (one gold string per row) instead of ``answers``, EM is against that one
    gold answer, and the rest of the reward (m_min, history) follows the reference unchanged."""
    reward, ref = run_both(penalty, 0.7, calls, gold_column="answer")
    assert reward.state_dict()["history"] == {f"id:{q}": v for q, v in ref.finite_history().items()}


@SETTINGS
@given(
    penalty=st.sampled_from(PENALTY_NAMES),
    m=st.integers(0, 12),
    n=st.integers(0, 12),
    lam=st.floats(0.05, 1.0),
    c=st.integers(0, 7),
)
def test_penalty_functions_match_reference_where_reachable(penalty, m, n, lam, c):
    """The penalty formulas of 1.5 on every (m, m_min) a correct rollout can have: m >= m_min (its own
    count takes part in the minimum)."""
    if m < n:
        m, n = n, m
    assert abs(PENALTIES[penalty](m, n, lam, c) - ref_penalty(penalty, m, n, lam, c)) <= 1e-12


def test_otc_penalty_below_the_minimum_matches_reference():
    """OTC's rule 'f = 0 -> pen = 1' also covers m = 0 < n (f = 2*0*n/n = 0); only the helper is checked."""
    for name in ("otc", "otc_strict"):
        assert PENALTIES[name](0, 2, 0.5, 5) == ref_penalty(name, 0, 2, 0.5, 5) == 1.0


def test_nested_answer_tag_matches_reference():
    """MASH's extraction is the non-greedy ``<answer>(.*?)</answer>``: a second <answer> opened inside
    an unclosed first one belongs to the span, so the text is not the gold answer."""
    text = "<answer>x <answer>Beijing</answer>"
    ref = RefPayPerSearch("exp", 0.5)
    reward = load_reward("pay_per_search", lam=0.5, penalty="exp")
    expected = ref([text], ["q0"], [0], [GOLD["q0"]])
    actual = reward(completions=[text], group_size=1, num_searches=[0], id=["q0"], answers=[GOLD["q0"]])
    assert actual == expected == [0.0]
