"""Math answers: how a completion's final answer is read, and whether it equals the reference.

The one implementation behind the ``accuracy`` reward, the test-time rewards, SPARK's recycler and
judge, GCPO's mask and ``posttrain eval`` (a reward and the evaluation of its task cannot drift apart).

How the final answer is read is a named policy (:data:`EXTRACTORS`), a reward's ``extract`` kwarg:

    policy       reads                                                  used by (its reference)
    lenient      last \\boxed{}, else last <answer>, else "answer is",  the default (ours)
                 else the last number
    boxed        the last \\boxed{} only                               TTRL (ttrl_math.extract_answer)
    first_boxed  the first \\boxed{} only                              SPARK (math_verify_2.reward_func)
    tagged       the first <answer>...</answer> (unclosed: after it)    GeometryZero (reward_utils)
    qwen_math    last \\boxed{}, else "the answer is", else last number TTRV, TTRL's first release

A policy that finds nothing gives None: no answer, scored 0 (and no vote for the test-time rewards).
:func:`score` checks an answer against a reference by math-verify equivalence (GSM8K's ``#### N``
understood), with GeometryZero's relative tolerance and option letters when asked, or routes a row
with a ``verifier`` to reasoning-gym's own scorer. docs/methods.md, "How answers are read".

    >>> score("so the total is \\boxed{72}", "72"), extract_answer("I think it is 71", "boxed")
    (1.0, None)
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from posttrain.errors import RewardError

# math-verify guards its parser with SIGALRM, which only works on the main thread; elsewhere
# (e.g. a reward run from a worker thread) it must run without a timeout.
_MATH_VERIFY_TIMEOUT_S = 5

_BOXED = "\\boxed{"
_ANSWER_OPEN = "<answer>"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_PHRASE = re.compile(r"(?:answer\s+is|answer\s*:)[ \t:]*([^\n]*)", re.IGNORECASE)
# A minus sign counts only when it is not a binary minus ("5-3" ends in 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_QWEN_NUMBER = re.compile(r"-?\d*\.?\d+")


def _box_content(text: str, start: int) -> str | None:
    """The stripped content of the box starting at ``start`` (-1: none); None when it never closes or is empty."""
    if start == -1:
        return None
    content = _boxed_at(text, start)
    return (content.strip() or None) if content is not None else None


def _boxed_at(text: str, start: int) -> str | None:
    """The content of the ``\\boxed{`` starting at ``start`` when its braces close; None if they never do."""
    depth, begin = 1, start + len(_BOXED)
    for j in range(begin, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:j]
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last non-empty ``\\boxed{...}`` with balanced braces, or None.

    An unbalanced (truncated) or empty last box falls back to the one before it.

    >>> last_boxed("\\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = text.rfind(_BOXED)
    while start != -1:
        content = _boxed_at(text, start)
        if content is not None and content.strip():
            return content.strip()
        start = text.rfind(_BOXED, 0, start)
    return None


def boxed_only(text: str) -> str | None:
    """Policy ``boxed``: the last ``\\boxed{...}`` and nothing else; None when it is unclosed or empty.

    TTRL's current code (PRIME-RL/TTRL, ``ttrl_math.extract_answer``) reads the last box only: a
    completion cut off inside its box, or without one, has no answer and does not vote.

    >>> boxed_only("\\\\boxed{1} then \\\\boxed{2"), boxed_only("so 2"), boxed_only("\\\\boxed{3}.")
    (None, None, '3')
    """
    return _box_content(text, text.rfind(_BOXED))


def first_boxed(text: str) -> str | None:
    """Policy ``first_boxed``: the first ``\\boxed{...}`` of the text, as SPARK's verifier reads answers
    (InternLM/Spark ``math_verify_2.reward_func``: math-verify's first match); None when that box never
    closes (a truncated completion) or is empty.

    >>> first_boxed("\\\\boxed{1} then \\\\boxed{2}"), first_boxed("\\\\boxed{12"), first_boxed("12")
    ('1', None, None)
    """
    return _box_content(text, text.find(_BOXED))


def tagged(text: str) -> str | None:
    """Policy ``tagged``: the first ``<answer>...</answer>`` span, as GeometryZero reads answers; when no span
    is closed, the text after the last ``<answer>`` (a completion cut off inside its answer); else None.

    >>> tagged("<think>so \\\\boxed{2}</think><answer> 3 </answer><answer>4</answer>"), tagged("<answer> 5")
    ('3', '5')
    >>> tagged("\\\\boxed{3}") is None
    True
    """
    match = _ANSWER_TAG.search(text)
    if match is not None:
        return match.group(1).strip() or None
    if _ANSWER_OPEN in text:
        return text.rpartition(_ANSWER_OPEN)[2].strip() or None
    return None


def _last_tag(text: str) -> str | None:
    for content in reversed(_ANSWER_TAG.findall(text)):
        if content.strip():
            return content.strip()
    return None


def _answer_phrase(text: str) -> str | None:
    for content in reversed(_ANSWER_PHRASE.findall(text)):
        content = content.strip().strip("*").strip().rstrip(".").strip()
        if content:
            return content
    return None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def lenient(text: str) -> str | None:
    """Policy ``lenient``: the last box, else the last ``<answer>`` span, else the rest of the line after
    the last "answer is" / "Answer:", else the last number (thousands commas removed).

    >>> lenient("<answer>7</answer> no wait, \\\\boxed{8}"), lenient("The answer is 1/2.")
    ('8', '1/2')
    >>> lenient("3 apples + 1,231 apples = 1,234 apples"), lenient("no idea")
    ('1234', None)
    """
    if not text:
        return None
    return last_boxed(text) or _last_tag(text) or _answer_phrase(text) or _last_number(text)


def qwen_math(text: str) -> str | None:
    """Policy ``qwen_math``: the order of the Qwen2.5-Math evaluation parser, which TTRL's first release and
    TTRV use: the last box, else what follows the last "the answer is" / "final answer is", else the last
    number. No ``<answer>`` tags; unlike that parser, nothing at all is None (it returns "" there).

    >>> qwen_math("<answer>7</answer>"), qwen_math("So the final answer is 12."), qwen_math("x = -3.5")
    ('7', '12', '-3.5')
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for phrase in ("he answer is", "final answer is"):
        if phrase in text:
            content = text.rpartition(phrase)[2].strip().split("\n")[0].strip().rstrip(".").strip()
            if content:
                return content
    numbers = _QWEN_NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else None


# Answer extraction policies, by the name a reward's `extract` kwarg gives. Each built-in reward
# defaults to what its method's reference code does (docs/methods.md, "matches the reference").
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "lenient": lenient,
    "boxed": boxed_only,
    "first_boxed": first_boxed,
    "tagged": tagged,
    "qwen_math": qwen_math,
}


def get_extractor(policy: str, reward: str = "accuracy") -> Callable[[str], str | None]:
    """The extraction function for ``policy``; a :class:`RewardError` naming the valid ones otherwise."""
    if not isinstance(policy, str) or policy not in EXTRACTORS:
        raise RewardError(
            f"{reward}: unknown answer extraction policy `extract: {policy!r}`. Valid: {', '.join(EXTRACTORS)} "
            "(boxed: the last \\boxed{} only; tagged: the last <answer> span only; lenient: box, tag, "
            '"answer is", last number).'
        )
    return EXTRACTORS[policy]


def extract_answer(text: str, policy: str = "lenient") -> str | None:
    """The final answer of a completion under ``policy`` (default ``lenient``), or None.

    >>> extract_answer("<answer>7</answer> no wait, \\\\boxed{8}"), extract_answer("The answer is 1/2.")
    ('8', '1/2')
    >>> extract_answer("I think 7", "boxed") is None
    True
    """
    return get_extractor(policy)(text or "")


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


_FLOAT = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_OPTION = re.compile(r"[A-Z]")


def within_tolerance(pred: str, gold: str, rel_tol: float) -> bool:
    """Any number in ``pred`` within ``rel_tol`` (relative) of the last number in ``gold``: GeometryZero's
    "relaxed" check (2%), for answers read off a drawn figure.

    >>> within_tolerance("about 10.15 cm", "10", 0.02), within_tolerance("10.3", "10", 0.02)
    (True, False)
    """
    golds = _FLOAT.findall(gold)
    if not golds:
        return False
    target = float(golds[-1])
    return any(abs(float(x) - target) < rel_tol * abs(target) for x in _FLOAT.findall(pred))


def check_extract_kwargs(extract: Any, rel_tol: Any, reward: str = "accuracy") -> Callable[[str], str | None]:
    """Validate a reward's ``extract`` / ``rel_tol`` kwargs; returns the extraction function."""
    extractor = get_extractor(extract, reward)
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, int | float) or not 0 <= rel_tol < 1:
        raise RewardError(
            f"{reward}: `rel_tol` must be a number in [0, 1) (a relative tolerance; GeometryZero used 0.02), got "
            f"{rel_tol!r}."
        )
    return extractor


def score(
    completion_text: str,
    answer: str,
    verifier: str | dict | None = None,
    extract: str = "lenient",
    rel_tol: float = 0.0,
) -> float:
    """1.0 if the completion's final answer is right, else 0.0 (reasoning-gym rows: its own score).

    ``extract`` names the answer extraction policy (:data:`EXTRACTORS`). With ``rel_tol > 0`` a number
    within that relative tolerance of the reference also counts (:func:`within_tolerance`); a reference
    that is a single capital letter (a multiple-choice option) also matches the same letter written in
    lower case. ``verifier``, when non-empty, is ``{"kind": "reasoning_gym", "generator": name, "entry":
    item}`` (JSON); the row is then scored by reasoning-gym's ``score_answer`` for that generator, which
    may give partial credit.

    >>> score("... #### so \\\\boxed{1234}", "Work: 1000 + 234\\n#### 1,234")
    1.0
    >>> score("<answer>10.1</answer>", "10", extract="tagged", rel_tol=0.02), score("8", "8", extract="boxed")
    (1.0, 0.0)
    """
    extractor = get_extractor(extract)
    if verifier:
        spec = _parse_verifier(verifier)
        extracted = extractor(completion_text) or completion_text.strip()
        return float(_reasoning_gym_scorer(spec["generator"])(extracted, spec["entry"]))
    if answer is None:
        return 0.0
    gold = normalize_gsm8k(str(answer))
    pred = extractor(completion_text)
    if pred is None or not gold:
        return 0.0
    if answers_match(pred, gold):
        return 1.0
    if rel_tol and within_tolerance(pred, gold, rel_tol):
        return 1.0
    if _OPTION.fullmatch(gold) and pred.strip().upper() == gold:
        return 1.0
    return 0.0
