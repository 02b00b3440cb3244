"""Length reward: the completion's length in tokens, capped and scaled to [0, 1].

GCPO's length reward, ``min(n_tokens, cap) / cap``. Load it as ``name: length`` with
``kwargs: {cap: 512}``. Tokens come from ``completion_ids``; without them (e.g. in a unit test)
whitespace-separated words are counted instead.

    >>> length(["a b c", "a"], completion_ids=[[1, 2, 3, 4], [5]], cap=2)
    [1.0, 0.5]
"""

from __future__ import annotations

from posttrain.errors import RewardError
from posttrain.rewards import completion_text


def length(completions, completion_ids=None, cap=512, **kwargs) -> list[float]:
    """``min(n_tokens, cap) / cap`` per completion.

    >>> length(["one two three", ""], cap=4)
    [0.75, 0.0]
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise RewardError(
            f"length: `cap` must be a positive integer, got {cap!r}. Fix it in this reward's kwargs."
        )
    if completion_ids is not None:
        counts = [len(ids) for ids in completion_ids]
    else:
        counts = [len(completion_text(c).split()) for c in completions]
    return [min(n, cap) / cap for n in counts]
