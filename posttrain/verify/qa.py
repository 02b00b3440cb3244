"""Short-answer QA scoring and abstention metrics: the same code for the reward and the evaluation.

Used by the ``pay_per_search`` reward (``rewards/search.py``) to decide correctness during training,
and by evaluation to score predictions and read abstention off search requests. Everything here is
a pure function on strings and dicts; the examples in the docstrings run as tests
(``pytest tests/test_qa.py -q``).

Answers follow the search-agent format of Search-R1 and MASH (arXiv 2510.01152): the answer is
the last ``<answer>...</answer>`` span of the completion, a search request is a
``<search>...</search>`` span. Correctness is SQuAD exact match after SQuAD normalisation
(lowercase, no punctuation, no articles, single spaces), taking the best of the gold answers
(MASH's ``reward_functions.py``; docs/methods.md, "Pay-per-search"). MASH's HotpotQA-style thresholded F1 with
its yes/no special case is off in MASH and not reproduced; :func:`f1_score` is plain SQuAD F1.

Abstention (MASH's evaluation): at test time the search tool is removed, and a completion that still asks
to search is read as "I would abstain without help". :func:`abstention_metrics` summarises a run's
records: accuracy with abstentions counted as wrong, the abstention rate, the accuracy on the
questions the model did answer, and, when each record says how often the model knows the answer
without searching (``known``), how well abstaining tracks not knowing.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
# MASH's reading (momergul/mash reward_functions): non-greedy spans, the last one counts; in
# "<answer>1<answer>2</answer>" the span is "1<answer>2", which matches no gold answer.
_ANSWER_SPAN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SEARCH_SPAN = re.compile(r"<search>((?:(?!<search>).)*?)</search>", re.DOTALL)

# MASH reads 0/10 correct no-search samples as "unknown" (its answerability threshold, 0.1).
UNKNOWN_THRESHOLD = 0.1

__all__ = [
    "UNKNOWN_THRESHOLD",
    "abstention_metrics",
    "count_searches",
    "exact_match",
    "extract_answer",
    "f1_score",
    "normalize_answer",
]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop the articles a/an/the, single spaces.

    >>> normalize_answer("The  Beijing.")
    'beijing'
    >>> normalize_answer("A Tale of Two Cities!")
    'tale of two cities'
    """
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _gold_list(answers: str | Iterable[Any] | None) -> list[str]:
    if answers is None:
        return []
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers if a is not None]


def exact_match(prediction: str | None, answers: str | Iterable[Any] | None) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer, else 0.0.

    ``answers`` is one gold answer or a list of them; no prediction (None) or no gold scores 0.0.

    >>> exact_match("the Beijing.", ["Peking", "beijing"])
    1.0
    >>> exact_match("Beijing city", "Beijing"), exact_match(None, "Beijing")
    (0.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in _gold_list(answers)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD 2.0's rule for empty answers: full marks only if both are empty.
        return float(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, answers: str | Iterable[Any] | None) -> float:
    """SQuAD token F1 between the normalised prediction and the best gold answer.

    Tokens are the whitespace words after :func:`normalize_answer`, counted with multiplicity.
    No prediction (None) or no gold scores 0.0.

    >>> f1_score("the city of Beijing", "Beijing")  # precision 1/3, recall 1
    0.5
    >>> f1_score("Barack Obama", ["Obama", "Barack Hussein Obama"])  # p 1, r 2/3 beats p 1/2, r 1
    0.8
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(gold).split()) for gold in _gold_list(answers)), default=0.0)


def extract_answer(text: str) -> str | None:
    """The stripped content of the last closed ``<answer>...</answer>`` span, or None without one.

    Only closed spans count: an ``<answer>`` that is never closed (a completion cut off by the token
    limit) gives None, and an unclosed one after a closed span leaves the closed span the answer.
    An empty span gives ``""`` (a tag without an answer, which matches no gold answer).

    >>> extract_answer("<think>hm</think><answer> Beijing </answer>")
    'Beijing'
    >>> extract_answer("<answer>Paris</answer> no, <answer>Lyon</answer>")
    'Lyon'
    >>> extract_answer("<answer>Beijing") is None
    True
    """
    spans = _ANSWER_SPAN.findall(text or "")
    return spans[-1].strip() if spans else None


def count_searches(text: str) -> int:
    """The number of closed ``<search>...</search>`` spans: the search requests in a completion.

    With the search tool removed at evaluation, any count above 0 is an abstention.

    >>> count_searches("<search>capital of China</search><document>...</document><search>x</search>")
    2
    >>> count_searches("<search>never closed"), count_searches("<answer>Beijing</answer>")
    (0, 0)
    """
    return len(_SEARCH_SPAN.findall(text or ""))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _abstained(record: Mapping[str, Any], i: int) -> bool:
    if record.get("searched") is not None:
        return bool(record["searched"])
    if record.get("num_searches") is not None:
        return record["num_searches"] > 0
    raise ValueError(
        f"Record {i} has neither `num_searches` nor `searched`: say how many searches it asked for."
    )


def _known_metrics(known: list[float], abstained: list[bool], threshold: float) -> dict[str, float | None]:
    """Abstention against answerability; ``known`` is the share of no-search samples that were right."""
    if not known:
        return dict.fromkeys(
            (
                "abstain_when_unknown",
                "abstain_when_known",
                "abstention_slope",
                "abstention_precision",
                "abstention_recall",
                "abstention_f1",
            )
        )
    at_zero = [a for k, a in zip(known, abstained) if k == 0]
    at_one = [a for k, a in zip(known, abstained) if k == 1]
    when_unknown, when_known = _mean(at_zero), _mean(at_one)
    slope = when_unknown - when_known if when_unknown is not None and when_known is not None else None
    unknown = [k < threshold for k in known]
    hits = sum(u and a for u, a in zip(unknown, abstained))
    precision = hits / sum(abstained) if any(abstained) else None
    recall = hits / sum(unknown) if any(unknown) else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "abstain_when_unknown": when_unknown,
        "abstain_when_known": when_known,
        "abstention_slope": slope,
        "abstention_precision": precision,
        "abstention_recall": recall,
        "abstention_f1": f1,
    }


def abstention_metrics(
    records: Sequence[Mapping[str, Any]], unknown_threshold: float = UNKNOWN_THRESHOLD
) -> dict[str, float | int | None]:
    """Accuracy and abstention of an evaluation run where a search request is an abstention.

    Each record is one evaluated sample: ``correct`` (0/1 exact match), ``f1`` (defaults to
    ``correct``), and ``num_searches`` (or ``searched``, a bool; ``searched`` wins when both are given). Optional ``known`` in [0, 1] is
    the share of k samples *without* search that were correct, MASH's ``sampling_knowns / 10``: the
    ground truth for "the model would get this wrong on its own".

    Returned keys (None where the set they average over is empty):

    - ``n``; ``exact_match`` and ``f1``: means over all records, an abstention scoring 0 (the search
      tool is gone, so an abstention gives no answer);
    - ``searches_mean``: mean ``num_searches`` (None when a record gives only ``searched``);
    - ``abstention_rate``; ``answered_accuracy``: mean ``correct`` over the non-abstained records
      (MASH's parametric precision);
    - with ``known`` (over the records that carry it): ``abstain_when_unknown`` (abstention rate at
      known == 0, MASH's Abs(0)), ``abstain_when_known`` (at known == 1) and ``abstention_slope``
      (their difference, MASH's Delta); ``abstention_precision`` / ``_recall`` / ``_f1`` where a
      positive is an abstention and the truth is "unknown" (known < ``unknown_threshold``, 0.1 as
      in MASH's script: 0 of 10 samples right). Without ``known`` all six are None.

    >>> m = abstention_metrics([
    ...     {"correct": 1, "f1": 1.0, "num_searches": 0, "known": 1.0},  # answered, right
    ...     {"correct": 0, "f1": 0.5, "num_searches": 0, "known": 0.0},  # answered, wrong
    ...     {"correct": 0, "f1": 0.0, "num_searches": 2, "known": 0.0},  # abstained, unknown
    ...     {"correct": 1, "f1": 1.0, "num_searches": 1, "known": 0.6},  # abstained, known
    ... ])
    >>> m["exact_match"], m["f1"], m["abstention_rate"], m["answered_accuracy"]
    (0.25, 0.375, 0.5, 0.5)
    >>> m["abstain_when_unknown"], m["abstain_when_known"], m["abstention_precision"], m["abstention_recall"]
    (0.5, 0.0, 0.5, 0.5)
    """
    if not records:
        raise ValueError("abstention_metrics needs at least one record.")
    abstained = [_abstained(r, i) for i, r in enumerate(records)]
    correct = [0.0 if a else float(r["correct"]) for r, a in zip(records, abstained)]
    f1 = [0.0 if a else float(r.get("f1", r["correct"])) for r, a in zip(records, abstained)]
    searches = [r.get("num_searches") for r in records]
    answered = [float(r["correct"]) for r, a in zip(records, abstained) if not a]
    known_pairs = [(float(r["known"]), a) for r, a in zip(records, abstained) if r.get("known") is not None]
    for k, _ in known_pairs:
        if not 0 <= k <= 1:
            raise ValueError(f"`known` must be a share in [0, 1], got {k}.")
    return {
        "n": len(records),
        "exact_match": _mean(correct),
        "f1": _mean(f1),
        "searches_mean": None if None in searches else _mean([float(s) for s in searches]),
        "abstention_rate": _mean([float(a) for a in abstained]),
        "answered_accuracy": _mean(answered),
        **_known_metrics([k for k, _ in known_pairs], [a for _, a in known_pairs], unknown_threshold),
    }
