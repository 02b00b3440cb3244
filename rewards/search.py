"""MASH's pay-per-search reward: right answers score, and each search beyond the fewest needed costs.

MASH (Gul, Cardie, Goyal, arXiv 2510.01152) trains a search agent whose reward is the answer's
exact match times a penalty on the number of searches; at test time, with the search tool removed,
a request to search reads as an abstention (``posttrain/verify/qa.py``). For one completion of question q
with ``m`` searches (the rule of MASH's code, docs/methods.md "Pay-per-search",
read from momergul/mash ``reward_functions.py``):

    acc   = exact_match(last <answer> span, gold answers)          (posttrain.verify.qa, SQuAD normalised)
    m_min = fewest searches of a correct completion of q, in this call or any earlier one
    r     = acc * pen(m, m_min)                                     (0 when acc = 0)

Penalties (``penalty`` kwarg; ``c`` = ``max_searches``, MASH 5):

    none        1                                                   (Search-R1)
    exp         lam ** (m - m_min)                                  (MASH's default; lam 0.5 NQ, 0.8 multi-hop)
    linear      max(1 - m / (c + 1), 0)
    otc         OTC-GRPO (arXiv 2504.14870), n = m_min:
                  f = 0 if m = n = 0;  m if n = 0;  2mn / (m + n) otherwise
                  1 if f = 0;  cos(m pi / (2m + c)) if n = 0;  sin(f pi / (2n)) otherwise
    otc_strict  otc, but 0 for any m > 0 once a correct answer without search is known (n = 0)

A correct completion always has m >= m_min (its own count takes part in the minimum), so every
penalty lies in [0, 1] and one search more than the best known costs a factor lam under ``exp``.

State: the history maps each question (the row's ``id``, else its prompt) to the fewest searches of
a correct answer seen so far. It is updated after each call, saved in every checkpoint and restored
on resume (MASH keeps it in memory only). It grows by one int per distinct question, which stays
small even for data sets of millions of questions. Rows of one call with the same key are pooled
like one group, as MASH groups rollouts by question text.

The search count comes from the rollout, not the text: the recipe's search tool loop passes
``num_searches`` (one int per completion) to the reward (recipe section ``search: {enabled: true}``).

Recipe entry (a group-level, stateful plugin):

    - name: pay_per_search
      kwargs: {lam: 0.5, penalty: exp}

Logged every call: ``search/accuracy`` (over rows with gold answers), ``search/searches_mean``,
``search/searches_correct_mean`` (over correct rows), ``search/no_search_rate``,
``search/no_answer_rate`` (no closed answer tag), ``search/penalty_mean`` (over correct rows),
``search/history_size`` and ``search/unscorable_groups`` (groups without gold answers, scored None).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from posttrain.errors import RewardError
from posttrain.rewards import completion_text, group_reward
from posttrain.verify.qa import exact_match, extract_answer

Penalty = Callable[[int, int, float, int], float]


def no_penalty(m: int, m_min: int, lam: float, max_searches: int) -> float:
    """Search-R1: searches are free.

    >>> no_penalty(3, 0, 0.5, 5)
    1.0
    """
    return 1.0


def exp_penalty(m: int, m_min: int, lam: float, max_searches: int) -> float:
    """MASH's exponential decay, ``lam ** (m - m_min)``: each search beyond the best known costs ``lam``.

    >>> [exp_penalty(m, 1, 0.5, 5) for m in (1, 2, 3)]
    [1.0, 0.5, 0.25]
    """
    return lam ** (m - m_min)


def linear_penalty(m: int, m_min: int, lam: float, max_searches: int) -> float:
    """``max(1 - m / (c + 1), 0)`` with ``c = max_searches``; ignores the best known count.

    >>> [round(linear_penalty(m, 0, 0.5, 5), 4) for m in (0, 3, 7)]
    [1.0, 0.5, 0.0]
    """
    return max(1.0 - m / (max_searches + 1), 0.0)


def otc_penalty(m: int, m_min: int, lam: float, max_searches: int) -> float:
    """OTC-GRPO's tool-efficiency factor (arXiv 2504.14870), ``n = m_min``; 1 when ``m == n``.

    >>> otc_penalty(0, 0, 0.5, 5), otc_penalty(2, 2, 0.5, 5)
    (1.0, 1.0)
    >>> round(otc_penalty(1, 0, 0.5, 5), 4)  # cos(pi / 7)
    0.901
    >>> round(otc_penalty(3, 1, 0.5, 5), 4)  # f = 2*3*1/4 = 1.5: sin(1.5 pi / 2)
    0.7071
    """
    n = m_min
    f = 0.0 if m == n == 0 else (m if n == 0 else 2 * m * n / (m + n))
    if f == 0:
        return 1.0
    if n == 0:
        return math.cos(m * math.pi / (2 * m + max_searches))
    return math.sin(f * math.pi / (2 * n))


def otc_strict_penalty(m: int, m_min: int, lam: float, max_searches: int) -> float:
    """:func:`otc_penalty`, except 0 for any search once a correct answer without one is known.

    >>> otc_strict_penalty(1, 0, 0.5, 5), otc_strict_penalty(0, 0, 0.5, 5)
    (0.0, 1.0)
    """
    if m_min == 0 and m > 0:
        return 0.0
    return otc_penalty(m, m_min, lam, max_searches)


# The penalty variants by recipe name (MASH's `retrieval_penalty_type`).
PENALTIES: dict[str, Penalty] = {
    "exp": exp_penalty,
    "none": no_penalty,
    "linear": linear_penalty,
    "otc": otc_penalty,
    "otc_strict": otc_strict_penalty,
}


def gold_answers(answers: Any, answer: Any) -> list[str] | None:
    """A row's gold answers: its ``answers`` list if non-empty, else ``[answer]``, else None.

    >>> gold_answers(["Peking", "Beijing"], "Peking"), gold_answers([], "Beijing"), gold_answers(None, "")
    (['Peking', 'Beijing'], ['Beijing'], None)
    """
    if isinstance(answers, Sequence) and not isinstance(answers, str):
        listed = [str(a) for a in answers if a is not None and str(a).strip()]
        if listed:
            return listed
    elif isinstance(answers, str) and answers.strip():
        return [answers]
    if answer is not None and str(answer).strip():
        return [str(answer)]
    return None


def _question_key(row_id: Any, prompt: Any) -> str:
    if row_id is not None and str(row_id) != "":
        return f"id:{row_id}"
    if isinstance(prompt, str):
        return f"prompt:{prompt}"
    # Chat prompts are lists of messages: a canonical JSON text names them.
    return "prompt:" + json.dumps(prompt, sort_keys=True, default=str)


def _check_lam(lam: Any) -> float:
    if (
        isinstance(lam, bool)
        or not isinstance(lam, numbers.Real)
        or not math.isfinite(lam)
        or not 0 < lam <= 1
    ):
        raise RewardError(
            f"pay_per_search: `lam` must be a number in (0, 1], got {lam!r}. It is the factor each search "
            "beyond the fewest needed costs: MASH used 0.5 on single-hop NQ, 0.8 on multi-hop data."
        )
    return float(lam)


def _check_max_searches(max_searches: Any) -> int:
    if isinstance(max_searches, bool) or not isinstance(max_searches, numbers.Integral) or max_searches < 0:
        raise RewardError(
            f"pay_per_search: `max_searches` must be an integer >= 0, got {max_searches!r}. It is the "
            "search budget c of the linear and OTC penalties; MASH used 5."
        )
    return int(max_searches)


def _check_penalty(penalty: Any) -> Penalty:
    if not isinstance(penalty, str) or penalty not in PENALTIES:
        raise RewardError(
            f"pay_per_search: unknown `penalty` {penalty!r}. Valid penalties: {', '.join(PENALTIES)} "
            "(exp is MASH's default)."
        )
    return PENALTIES[penalty]


def _search_counts(num_searches: Any, n: int) -> list[int]:
    if num_searches is None:
        raise RewardError(
            "pay_per_search needs the number of searches of each completion (`num_searches`), which the "
            "recipe's search tool loop passes to the rewards. Run it with the search tool rollout "
            "(`search: {enabled: true}` in the recipe, as in recipes/mash_search.yaml)."
        )
    if hasattr(num_searches, "tolist"):
        num_searches = num_searches.tolist()  # a tensor or array from the rollout
    if (
        isinstance(num_searches, str | bytes)
        or not isinstance(num_searches, Sequence)
        or len(num_searches) != n
    ):
        raise RewardError(
            f"pay_per_search: `num_searches` must be a list with one count per completion ({n}), got "
            f"{num_searches!r:.200}. The recipe's search tool loop should pass it aligned with the rows."
        )
    counts = []
    for i, m in enumerate(num_searches):
        valid = not isinstance(m, bool) and isinstance(m, numbers.Real) and math.isfinite(m)
        if not valid or m < 0 or m != int(m):
            raise RewardError(
                f"pay_per_search: `num_searches` of row {i} is {m!r}, not a count >= 0. The recipe's search "
                "tool loop should count the searches of each completion."
            )
        counts.append(int(m))
    return counts


@group_reward
class PayPerSearch:
    """The ``pay_per_search`` reward: ``exact_match * penalty(m, m_min)`` (module docstring).

    >>> reward = PayPerSearch(lam=0.5)
    >>> group = ["<answer>Beijing</answer>", "<search>q</search><answer>The  Beijing.</answer>",
    ...          "<answer>Shanghai</answer>", "I need to search"]
    >>> reward(group, group_size=4, num_searches=[0, 1, 0, 0], id=["q1"] * 4, answer=["beijing"] * 4)
    [1.0, 0.5, 0.0, 0.0]
    >>> reward(["<answer>Beijing</answer>"], group_size=1, num_searches=[2], id=["q1"], answer=["beijing"])
    [0.25]
    >>> reward.state_dict()
    {'history': {'id:q1': 0}}
    """

    def __init__(self, lam: float = 0.5, penalty: str = "exp", max_searches: int = 5):
        self.lam = _check_lam(lam)
        self.penalty = penalty
        self.penalty_fn = _check_penalty(penalty)
        self.max_searches = _check_max_searches(max_searches)
        # question key -> fewest searches of a correct completion seen so far
        self.history: dict[str, int] = {}

    def __call__(
        self,
        completions: Sequence[Any],
        group_size: int,
        num_searches: Sequence[int] | None = None,
        prompts: Sequence[Any] | None = None,
        answer: Sequence[Any] | None = None,
        answers: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        counts = _search_counts(num_searches, n)
        golds = [
            gold_answers(
                answers[i] if answers is not None else None, answer[i] if answer is not None else None
            )
            for i in range(n)
        ]
        if all(g is None for g in golds):
            raise RewardError(
                "pay_per_search needs gold answers, and no row of this batch has one: the data needs an "
                "`answers` column (a list of accepted answers) or an `answer` column."
            )
        keys = self._keys(kwargs.get("id"), prompts, n)
        predictions = [extract_answer(completion_text(c)) for c in completions]
        acc = [None if g is None else exact_match(p, g) for p, g in zip(predictions, golds, strict=True)]
        # This call's best per question; merged with the history before scoring, then stored.
        best = dict(self.history)
        for key, a, m in zip(keys, acc, counts, strict=True):
            if a:
                best[key] = min(m, best.get(key, m))
        scores: list[float | None] = []
        penalties = []
        for key, a, m in zip(keys, acc, counts, strict=True):
            if a is None:
                scores.append(None)
            elif not a:
                scores.append(0.0)
            else:
                pen = self.penalty_fn(m, best[key], self.lam, self.max_searches)
                penalties.append(pen)
                scores.append(pen)
        self.history = best
        if log_metric is not None:
            self._log(log_metric, acc, counts, predictions, penalties, group_size)
        return scores

    @staticmethod
    def _keys(ids: Sequence[Any] | None, prompts: Sequence[Any] | None, n: int) -> list[str]:
        if ids is None and prompts is None:
            raise RewardError(
                "pay_per_search keys its history by question and got neither an `id` column nor the "
                "prompts. Give the data an `id` column (or pass `prompts`)."
            )
        return [
            _question_key(ids[i] if ids is not None else None, prompts[i] if prompts is not None else None)
            for i in range(n)
        ]

    def _log(self, log_metric, acc, counts, predictions, penalties, group_size) -> None:
        n = len(counts)
        scored = [a for a in acc if a is not None]
        correct = [m for a, m in zip(acc, counts, strict=True) if a]
        groups = [acc[s : s + group_size] for s in range(0, n, group_size)]
        log_metric("search/accuracy", sum(scored) / len(scored))
        log_metric("search/searches_mean", sum(counts) / n)
        log_metric("search/no_search_rate", sum(m == 0 for m in counts) / n)
        log_metric("search/no_answer_rate", sum(p is None for p in predictions) / n)
        log_metric("search/history_size", float(len(self.history)))
        log_metric("search/unscorable_groups", sum(all(a is None for a in g) for g in groups) / len(groups))
        if correct:  # a mean over no completions would be NaN in the logs
            log_metric("search/searches_correct_mean", sum(correct) / len(correct))
            log_metric("search/penalty_mean", sum(penalties) / len(penalties))

    def state_dict(self) -> dict[str, Any]:
        """The history, ``{"history": {question key: fewest searches of a correct answer}}``."""
        return {"history": dict(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the history with a checkpoint's (a state without one, e.g. ``{}``, empties it)."""
        history = state.get("history", {}) if isinstance(state, Mapping) else None
        if not isinstance(history, Mapping) or not all(
            isinstance(k, str) and isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
            for k, v in history.items()
        ):
            raise RewardError(
                "pay_per_search: the checkpoint's reward state is not a pay_per_search history "
                "({'history': {question: fewest searches}}). Resume from a checkpoint of the same recipe."
            )
        self.history = {k: int(v) for k, v in history.items()}
