"""Answers grouped by mathematical equivalence, and the majority vote over them.

Used by maj@k in evaluation, by TTRL's and TTRV's rewards and by ``posttrain adapt``'s before/after
votes. Two answers are one when :func:`posttrain.verify.math.answers_match` says so (``0.5`` and
``\\frac{1}{2}``); a tie goes to the answer seen first; a missing answer (None) does not vote.

    >>> majority_answer(["2", "3", "2.0", None])
    ('2', 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain.verify.math import answers_match


def clusters(answers: list[str | None]) -> list[int | None]:
    """Cluster index of each answer by equivalence (:func:`answers_match`), numbered by first appearance;
    None for a missing answer.

    >>> clusters(["0.5", None, "\\\\frac{1}{2}", "3"])
    [0, None, 0, 1]
    """
    reps: list[str] = []
    out: list[int | None] = []
    for ans in answers:
        if ans is None:
            out.append(None)
            continue
        for k, rep in enumerate(reps):
            if ans == rep or answers_match(ans, rep):
                out.append(k)
                break
        else:
            reps.append(ans)
            out.append(len(reps) - 1)
    return out


def majority_answer(answers: list[str | None]) -> tuple[str | None, float]:
    """The most common answer (equivalence by :func:`answers_match`) and its vote share."""
    ids = clusters(answers)
    voted = [k for k in ids if k is not None]
    if not voted:
        return None, 0.0
    counts = [voted.count(k) for k in range(max(voted) + 1)]
    best = counts.index(max(counts))  # the first of equal counts
    return answers[ids.index(best)], counts[best] / len(answers)


def majority_hits(group: Sequence[str | None]) -> tuple[str | None, float, list[float]]:
    """(majority answer, its vote share, 1.0/0.0 per answer: equal to it or not) for one group.

    Answers are clustered once by equivalence; the largest cluster wins, the first seen on a tie.

    >>> majority_hits(["2", "3", "2.0", None])
    ('2', 0.5, [1.0, 0.0, 1.0, 0.0])
    """
    ids = clusters(list(group))
    voted = [k for k in ids if k is not None]
    if not voted:
        return None, 0.0, [0.0] * len(group)
    counts = [voted.count(k) for k in range(max(voted) + 1)]
    best = counts.index(max(counts))
    return group[ids.index(best)], counts[best] / len(group), [1.0 if k == best else 0.0 for k in ids]
