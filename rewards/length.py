"""Length reward: the completion's length in tokens, capped and scaled to [0, 1].

GCPO's length reward (GeometryZero; the authors' workspace uses ``0.5 * min(tokens, 900) / 900``:
recipe weight 0.5, ``cap: 900``), ``min(n_tokens, cap) / cap``. Load it as ``name: length`` with
``kwargs: {cap: 900}``; add ``correct_only: true`` to grant it only to correct completions, so that
length is never rewarded on its own (the completion's correctness, from the same verifier as the
``accuracy`` reward, multiplies it; rows without a reference answer then score None).

Tokens come from ``completion_ids``; without them (e.g. in a unit test) whitespace-separated words
are counted instead.

    >>> length(["a b c", "a"], completion_ids=[[1, 2, 3, 4], [5]], cap=2)
    [1.0, 0.5]
    >>> length(["so 4", "so 5"], completion_ids=[[1, 2], [1, 2]], cap=4, correct_only=True, answer=["4", "4"])
    [0.5, 0.0]
"""

from __future__ import annotations

from posttrain.errors import RewardError
from posttrain.rewards import completion_text
from rewards.math import accuracy


def length(
    completions, completion_ids=None, cap=512, correct_only=False, answer=None, verifier=None, **kwargs
) -> list[float | None]:
    """``min(n_tokens, cap) / cap`` per completion (times its correctness with ``correct_only``).

    >>> length(["one two three", ""], cap=4)
    [0.75, 0.0]
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise RewardError(
            f"length: `cap` must be a positive integer, got {cap!r}. Fix it in this reward's kwargs."
        )
    if not isinstance(correct_only, bool):
        raise RewardError(f"length: `correct_only` must be true or false, got {correct_only!r}.")
    if completion_ids is not None:
        counts = [len(ids) for ids in completion_ids]
    else:
        counts = [len(completion_text(c).split()) for c in completions]
    scores: list[float | None] = [min(n, cap) / cap for n in counts]
    if correct_only:
        if answer is None and verifier is None:
            raise RewardError(
                "length: `correct_only: true` needs the dataset's `answer` (or `verifier`) column to tell "
                "correct completions apart, and found neither. Drop `correct_only`, or use labelled data."
            )
        correct = accuracy(completions, answer=answer, verifier=verifier)
        scores = [None if c is None else s * c for s, c in zip(scores, correct, strict=True)]
    return scores
