"""DAPO's soft overlong punishment (Yu et al., arXiv 2503.14476, Eq. 13): a completion that runs into
the last ``cache`` tokens before the length limit loses reward linearly, one past the limit loses 1.

    L = len(completion_ids), L_max = max_length, L_cache = cache
    R = 0                                  if L <= L_max - L_cache
        ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
        -1                                 if L > L_max

The paper: L_max = 20,480 (the generation limit), L_cache = 4,096. ``method: dapo`` adds it with
``max_length`` = the recipe's ``max_completion_length`` and ``cache`` = a fifth of it (the paper's
ratio). A completion cut at the limit has L = L_max and scores -1; truncated completions are also
masked from the loss by DAPO's overlong filtering, so in practice the term shapes the completions
that end inside the cache interval.

    >>> overlong(["a", "b", "c"], completion_ids=[[1] * 6, [1] * 9, [1] * 10], max_length=10, cache=4)
    [0.0, -0.75, -1.0]
"""

from __future__ import annotations

from posttrain.errors import RewardError
from posttrain.rewards import completion_text


def overlong(completions, completion_ids=None, max_length=None, cache=None, **kwargs) -> list[float]:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise RewardError(f"overlong: `max_length` must be a positive integer (tokens), got {max_length!r}.")
    if cache is None:
        cache = max(1, max_length // 5)
    if not isinstance(cache, int) or isinstance(cache, bool) or not 1 <= cache <= max_length:
        raise RewardError(f"overlong: `cache` must be an integer in [1, max_length], got {cache!r}.")
    lengths = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c).split()) for c in completions]
    )
    start = max_length - cache
    scores = []
    for n in lengths:
        if n <= start:
            scores.append(0.0)
        elif n <= max_length:
            scores.append((start - n) / cache)
        else:
            scores.append(-1.0)
    return scores
