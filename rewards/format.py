"""Format reward: 1.0 when a completion has the expected shape, else 0.0.

Load it as ``name: format`` in a recipe. By default the shape is a non-empty ``<think>`` block
followed by a non-empty ``<answer>`` block, with nothing but whitespace around them:

    >>> format_reward(["<think>2+2 is 4</think>\\n<answer>4</answer>", "<answer>4</answer>", "4"])
    [1.0, 0.0, 0.0]

kwargs: ``tags`` (the blocks, in order; ``[]`` for none), ``pattern`` (a regex the whole completion
must match, with ``.`` matching newlines; replaces the default tags unless ``tags`` is also given),
``require_boxed`` (a non-empty ``\\boxed{...}`` must appear somewhere), ``style`` (:data:`STYLES`):

    style         accepts                                                      used by (its reference)
    strict        the ``tags`` blocks in order, non-empty, only whitespace     the default (ours)
                  around them (or ``pattern``)
    geometryzero  the stripped text STARTS with <think>, and </think>,         GCPO (GeometryZero,
                  <answer>, </answer> follow in that order; anything else      reward_utils.format_reward_func)
                  may sit between or after them, blocks may be empty

``geometryzero`` is the authors' check, reproduced exactly: ``re.match`` of
``<think>.*?</think>.*?<answer>.*?</answer>`` (``re.DOTALL``) on the stripped completion. ``re.match``
anchors only the start, hence the leniency; their 0.5 is this reward's 1.0 at recipe weight 0.5.

    >>> format_reward(["<think></think> so\\n<answer>4</answer> done", "x <think>a</think><answer>4</answer>"],
    ...               style="geometryzero")
    [1.0, 0.0]

Run its tests with ``pytest tests/test_format_reward.py tests/test_reward_builtins.py -q``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from posttrain.errors import RewardError
from posttrain.rewards import completion_text
from posttrain.verify.math import last_boxed

DEFAULT_TAGS = ("think", "answer")
STYLES = ("strict", "geometryzero")
# GeometryZero's format pattern (r1_workspace, workspace/reward/reward_utils.py, format_reward_func).
_GEOMETRYZERO = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)


def has_tags(text: str, tags: Sequence[str]) -> bool:
    """True if ``text`` is exactly ``<t1>...</t1> <t2>...</t2> ...``: in order, non-empty, no extra text.

    >>> [has_tags(t, ["think", "answer"]) for t in ["<think>a</think><answer>b</answer>",
    ...                                             "<answer>b</answer><think>a</think>"]]
    [True, False]
    """
    pos = 0
    for tag in tags:
        opening, closing = f"<{tag}>", f"</{tag}>"
        start = len(text) - len(text[pos:].lstrip())  # skip whitespace between blocks
        if not text.startswith(opening, start):
            return False
        end = text.find(closing, start + len(opening))
        if end == -1:
            return False
        content = text[start + len(opening) : end]
        if not content.strip() or opening in content:
            return False
        pos = end + len(closing)
    return not text[pos:].strip()


def geometryzero_format(text: str) -> bool:
    """GeometryZero's format check: the pattern ``re.match``-ed (start-anchored only) on ``text.strip()``.

    >>> [geometryzero_format(t) for t in ["<think></think>\\n<answer></answer>!", "<answer>4</answer>"]]
    [True, False]
    """
    return _GEOMETRYZERO.match(text.strip()) is not None


def _check_style(style, tags, pattern) -> None:
    if style not in STYLES:
        raise RewardError(
            f"format: unknown `style: {style!r}`. Valid: {', '.join(STYLES)} (strict: the tags in order and "
            "nothing else; geometryzero: GeometryZero's start-anchored <think>...<answer>...</answer> check)."
        )
    if style == "geometryzero" and (tags is not None or pattern is not None):
        raise RewardError(
            "format: `style: geometryzero` is GeometryZero's fixed check and takes no `tags` or `pattern`. "
            "Drop them, or use `style: strict` with your own tags or pattern."
        )


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise RewardError(
            f"format: `pattern` {pattern!r} is not a valid regular expression ({exc}). Fix the pattern in "
            "this reward's kwargs."
        ) from exc


def format_reward(
    completions, tags=None, pattern=None, require_boxed=False, style="strict", **kwargs
) -> list[float]:
    """1.0 for each completion with the expected format, else 0.0 (``style``: module docstring).

    >>> format_reward(["Sum: \\\\boxed{4}", "Sum: 4"], tags=[], require_boxed=True)
    [1.0, 0.0]
    >>> format_reward(["Final: 42", "42"], pattern=r"Final: -?\\d+")
    [1.0, 0.0]
    """
    _check_style(style, tags, pattern)
    if isinstance(tags, str):
        tags = [tags]
    if tags is None:
        tags = () if pattern is not None else DEFAULT_TAGS
    regex = _compile(pattern) if pattern is not None else None
    scores = []
    for completion in completions:
        text = completion_text(completion)
        if style == "geometryzero":
            ok = geometryzero_format(text)
        else:
            ok = (not tags or has_tags(text, tags)) and (regex is None or regex.fullmatch(text) is not None)
        if require_boxed:
            ok = ok and last_boxed(text) is not None
        scores.append(1.0 if ok else 0.0)
    return scores
