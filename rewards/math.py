"""Math accuracy: extract a completion's final answer and check it against the reference.

Load it as ``name: accuracy`` in a recipe. The dataset needs an ``answer`` column (GSM8K's
``... #### 72`` is understood) and may have a ``verifier`` column that routes a row to
reasoning-gym's own scorer. The same :func:`score` is used by ``posttrain eval``, so the training
reward and the evaluation metric cannot drift apart.

    >>> accuracy(["so the total is \\\\boxed{72}", "I think it is 71"], answer=["72", "72"])
    [1.0, 0.0]
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

from posttrain.errors import RewardError
from posttrain.rewards import completion_text

# math-verify guards its parser with SIGALRM, which only works on the main thread; elsewhere
# (e.g. a reward run from a worker thread) it must run without a timeout.
_MATH_VERIFY_TIMEOUT_S = 5

_BOXED = "\\boxed{"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_PHRASE = re.compile(r"(?:answer\s+is|answer\s*:)[ \t:]*([^\n]*)", re.IGNORECASE)
# A minus sign counts only when it is not a binary minus ("5-3" ends in 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def last_boxed(text: str) -> str | None:
    """The content of the last non-empty ``\\boxed{...}`` with balanced braces, or None.

    >>> last_boxed("\\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = text.rfind(_BOXED)
    while start != -1:
        depth, begin = 1, start + len(_BOXED)
        for j in range(begin, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    content = text[begin:j].strip()
                    if content:
                        return content
                    break
        start = text.rfind(_BOXED, 0, start)  # unbalanced (truncated) or empty: try the one before
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion, or None when there is nothing that looks like one.

    Tried in order: the last ``\\boxed{...}``, the last ``<answer>...</answer>``, the rest of the
    line after the last "answer is" / "Answer:", the last number (thousands commas removed).

    >>> extract_answer("<answer>7</answer> no wait, \\\\boxed{8}")
    '8'
    >>> extract_answer("The answer is 1/2.")
    '1/2'
    >>> extract_answer("3 apples + 1,231 apples = 1,234 apples")
    '1234'
    >>> extract_answer("no idea") is None
    True
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for content in reversed(_ANSWER_TAG.findall(text)):
        if content.strip():
            return content.strip()
    for content in reversed(_ANSWER_PHRASE.findall(text)):
        content = content.strip().strip("*").strip().rstrip(".").strip()
        if content:
            return content
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def normalize_gsm8k(answer: str) -> str:
    """The number after GSM8K's ``####`` with commas removed; the stripped input when there is none.

    >>> normalize_gsm8k("She pays 3 * 4 = 12 dollars.\\n#### 1,234")
    '1234'
    """
    if "####" in answer:
        return answer.rpartition("####")[2].strip().replace(",", "")
    return answer.strip()


def _normalize_text(s: str) -> str:
    s = _THOUSANDS_COMMA.sub("", s.strip().replace("$", ""))
    return " ".join(s.rstrip(".").split()).lower()


def _for_parser(s: str) -> str:
    """Wrap math in ``$...$`` so math-verify reads it as LaTeX; leave prose to its own extraction."""
    s = _THOUSANDS_COMMA.sub("", s.strip())
    if "$" in s or _BOXED in s:
        return s
    if "\\" not in s and re.search(r"[A-Za-z]{2,}", s):
        return s  # "42 apples": math-verify finds the number; "$42 apples$" would be a product
    return f"${s}$"


@functools.lru_cache(maxsize=65536)
def answers_match(pred: str, gold: str) -> bool:
    """True when the predicted answer equals the reference, mathematically or as normalized text.

    >>> [answers_match(p, g) for p, g in [("72.0", "72"), ("0.5", "\\\\frac{1}{2}"), ("4.6", "\\\\frac{14}{3}")]]
    [True, True, False]
    """
    if pred is None or gold is None or not str(pred).strip() or not str(gold).strip():
        return False
    pred, gold = str(pred), str(gold)
    if _normalize_text(pred) == _normalize_text(gold):
        return True
    from math_verify import parse, verify  # imported lazily: it pulls in sympy (~1 s)

    on_main = threading.current_thread() is threading.main_thread()
    timeout = _MATH_VERIFY_TIMEOUT_S if on_main else None
    gold_parsed = parse(_for_parser(gold), parsing_timeout=timeout)
    pred_parsed = parse(_for_parser(pred), parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False  # unparseable: the normalized text comparison above was the only test
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


@functools.cache
def _reasoning_gym_scorer(generator: str):
    import reasoning_gym

    try:
        return reasoning_gym.get_score_answer_fn(generator)
    except ValueError as exc:
        raise RewardError(
            f"accuracy: the verifier names the reasoning-gym generator {generator!r}, which is not "
            f"registered ({exc}). Fix the `verifier` column of the dataset (see reasoning_gym.DATASETS)."
        ) from exc


def _parse_verifier(verifier: str | dict) -> dict[str, Any]:
    if isinstance(verifier, dict):
        spec = verifier
    else:
        try:
            spec = json.loads(verifier)
        except json.JSONDecodeError as exc:
            raise RewardError(
                f"accuracy: the `verifier` column holds {verifier[:200]!r}, which is not valid JSON ({exc}). "
                'Write it as {"kind": "reasoning_gym", "generator": ..., "entry": {...}} or leave it empty.'
            ) from exc
    if not isinstance(spec, dict) or spec.get("kind") != "reasoning_gym":
        raise RewardError(
            f"accuracy: unsupported verifier {str(verifier)[:200]!r}; the only kind is 'reasoning_gym'. "
            'Write it as {"kind": "reasoning_gym", "generator": ..., "entry": {...}} or leave it empty.'
        )
    if not isinstance(spec.get("generator"), str) or not isinstance(spec.get("entry"), dict):
        raise RewardError(
            "accuracy: a reasoning_gym verifier needs a string `generator` and a dict `entry` (the "
            f"reasoning-gym dataset item), got {str(verifier)[:200]!r}. Fix the dataset's `verifier` column."
        )
    return spec


def score(completion_text: str, answer: str, verifier: str | dict | None = None) -> float:
    """1.0 if the completion's final answer is right, else 0.0 (reasoning-gym rows: its own score).

    ``verifier``, when non-empty, is ``{"kind": "reasoning_gym", "generator": name, "entry": item}``
    (JSON); the row is then scored by reasoning-gym's ``score_answer`` for that generator, which may
    give partial credit.

    >>> score("... #### so \\\\boxed{1234}", "Work: 1000 + 234\\n#### 1,234")
    1.0
    """
    if verifier:
        spec = _parse_verifier(verifier)
        extracted = extract_answer(completion_text) or completion_text.strip()
        return float(_reasoning_gym_scorer(spec["generator"])(extracted, spec["entry"]))
    if answer is None:
        return 0.0
    gold = normalize_gsm8k(str(answer))
    pred = extract_answer(completion_text)
    if pred is None or not gold:
        return 0.0
    return 1.0 if answers_match(pred, gold) else 0.0


def accuracy(completions, answer=None, verifier=None, **kwargs) -> list[float | None]:
    """Per-row :func:`score`; None where the row has neither an answer nor a verifier.

    ``answer`` and ``verifier`` are dataset columns, aligned with ``completions``.

    >>> accuracy(
    ...     ["\\\\boxed{\\\\frac{1}{2}}", "The answer is 0.5", "It is 3", "nothing"],
    ...     answer=["0.5", "\\\\frac{1}{2}", "4", None],
    ... )
    [1.0, 1.0, 0.0, None]
    """
    n = len(completions)
    if answer is None and verifier is None:
        raise RewardError(
            "accuracy needs an `answer` column (or a `verifier` column) in the dataset, and found neither. "
            "Rename the dataset's reference column to `answer`, or map it in the recipe's data section."
        )
    answers = answer if answer is not None else [None] * n
    verifiers = verifier if verifier is not None else [None] * n
    scores: list[float | None] = []
    for completion, gold, verify_spec in zip(completions, answers, verifiers, strict=True):
        if gold is None and not verify_spec:
            scores.append(None)
        else:
            scores.append(score(completion_text(completion), gold, verify_spec))
    return scores
