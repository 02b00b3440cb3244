"""Length reward: the completion's length in tokens, capped and scaled to [0, 1].

GCPO's length reward (GeometryZero; the authors' workspace uses ``0.5 * min(tokens, 900) / 900``:
recipe weight 0.5, ``cap: 900``), ``min(n_tokens, cap) / cap``. Load it as ``name: length`` with
``kwargs: {cap: 900}``; add ``correct_only: true`` to grant it only to correct completions, so that
length is never rewarded on its own (the completion's correctness, from the same verifier as the
``accuracy`` reward, multiplies it; rows without a reference answer then score None). Correctness is
judged with the ``extract`` / ``rel_tol`` kwargs, as the ``accuracy`` reward's of the same names
(``lenient`` and 0 by default); for GCPO give GeometryZero's ``extract: tagged, rel_tol: 0.02``, as its
``accuracy`` and ``gcpo_contrastive`` have, so that all three agree on which completions are right.

Tokens come from ``completion_ids``; without them (e.g. in a unit test) whitespace-separated words
are counted instead.

    >>> length(["a b c", "a"], completion_ids=[[1, 2, 3, 4], [5]], cap=2)
    [1.0, 0.5]
    >>> length(["so 4", "so 5"], completion_ids=[[1, 2], [1, 2]], cap=4, correct_only=True, answer=["4", "4"])
    [0.5, 0.0]

GeometryZero counts tokens by re-tokenizing the response text (``reward_utils.length_reward_func``, the
text after the chat template's ``<|im_start|>assistant``, its newline included); ``completion_ids`` hold
the generated tokens, the end-of-sequence one included, so counts can differ by a token or two.

Tests: ``pytest tests/test_gcpo.py tests/test_reference_gcpo.py tests/test_reward_builtins.py -q``.
"""

from __future__ import annotations

from posttrain.errors import RewardError
from posttrain.rewards import completion_text
from posttrain.verify.math import check_extract_kwargs
from rewards.math import accuracy


def length(
    completions,
    completion_ids=None,
    cap=512,
    correct_only=False,
    answer=None,
    verifier=None,
    extract="lenient",
    rel_tol=0.0,
    **kwargs,
) -> list[float | None]:
    """``min(n_tokens, cap) / cap`` per completion (times its correctness with ``correct_only``).

    >>> length(["one two three", ""], cap=4)
    [0.75, 0.0]
    >>> gated = dict(correct_only=True, answer=["4", "4"], extract="tagged", rel_tol=0.02)
    >>> length(["<answer>4.05</answer>", "so 4"], completion_ids=[[1, 2], [1, 2]], cap=4, **gated)
    [0.5, 0.0]
    """
    check_extract_kwargs(extract, rel_tol, "length")  # checked even when unused: a typo is still a typo
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
        correct = accuracy(completions, answer=answer, verifier=verifier, extract=extract, rel_tol=rel_tol)
        scores = [None if c is None else s * c for s, c in zip(scores, correct, strict=True)]
    return scores
