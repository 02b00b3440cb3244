r"""SPARK's judge reward: score the recycled judge and reflection prompts by their verifiable labels.

SPARK (Liu et al., arXiv 2509.22624) turns each step's rollouts into new prompts for the same model
(``posttrain.methods.spark.templates``): pointwise judges ("is this answer correct?"), pairwise judges
("which of (A)/(B) is correct?") and reflections (re-solve after a wrong attempt). Their labels
follow from the verifier, so they are trained with the same GRPO objective. This reward routes on
the row's ``task`` column (SPARK's ``new_data_gen.py`` and ``math_verify_2.py``; docs/methods.md, "SPARK"):

    task                     column used               score
    pointwise, pairwise      judge_label               1.0 if the boxed verdict equals it, else 0.0
    reflection               answer (+ verifier)       rewards.math.score: the task's own accuracy check
    anything else / None     -                         None (not applicable: e.g. the main solve rows)

The verdict is read like an answer, with SPARK's rule by default: the first ``\boxed{...}`` (its
verifier parses with math_verify's first match; ``extract`` names another policy). It is normalised:
``\text{}``/``\mathrm{}`` wrappers, surrounding parentheses, quotes and full stops are removed, and
yes/no/a/b are matched case-insensitively (the reference compares the raw string). ``\box{...}`` is
read like ``\boxed{...}``: the reference's own judge prompts ask for ``\box{}`` while its verifier
parses only ``\boxed{`` (spec section 1.5), so a model trained on them writes ``\box{Yes}``; our
templates ask for ``\boxed{}``. An unparseable verdict scores 0.0, never an error.

Recipe entry (a per-sample plugin, next to ``accuracy`` for the main rows):

    - name: spark_judge
      weight: 1.0

    >>> spark_judge(
    ...     ["so \\boxed{Yes}", "(B) is wrong, \\boxed{A}", "\\boxed{\\frac{1}{2}}", "I think \\boxed{7}"],
    ...     task=["pointwise", "pairwise", "reflection", "solve"],
    ...     judge_label=["Yes", "B", None, None],
    ...     answer=[None, None, "0.5", "7"],
    ... )
    [1.0, 0.0, 1.0, None]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from posttrain.chat import prefill
from posttrain.errors import RewardError
from posttrain.rewards import completion_text
from posttrain.verify.math import score
from posttrain.verify.verdict import judge_verdict, normalise_verdict

JUDGE_TASKS = ("pointwise", "pairwise")
"""Values of the ``task`` column scored by the judge verdict against ``judge_label``."""

REFLECT_TASK = "reflection"
"""The ``task`` value scored like the original question, against its ``answer``."""


def spark_judge(
    completions: Sequence[Any],
    task: Sequence[str | None] | None = None,
    judge_label: Sequence[str | None] | None = None,
    answer: Sequence[Any] | None = None,
    verifier: Sequence[Any] | None = None,
    extract: str = "first_boxed",
    **kwargs: Any,
) -> list[float | None]:
    """Per-row score of SPARK's auxiliary tasks; None for rows of other tasks (module docstring).

    Without a ``task`` column (a data set with no SPARK rows) every row is None. A reflection row with
    neither an ``answer`` nor a ``verifier`` is None too, as for the ``accuracy`` reward.
    """
    n = len(completions)
    if task is None:
        return [None] * n
    prompts = kwargs.get("prompts") or [None] * n
    labels = judge_label if judge_label is not None else [None] * n
    answers = answer if answer is not None else [None] * n
    verifiers = verifier if verifier is not None else [None] * n
    scores: list[float | None] = []
    for i, (completion, row_task, label, gold, spec) in enumerate(
        zip(completions, task, labels, answers, verifiers, strict=True)
    ):
        if row_task in JUDGE_TASKS:
            expected = normalise_verdict(str(label)) if label is not None else None
            if expected is None:
                raise RewardError(
                    f"spark_judge: row {i} has task {row_task!r} but its `judge_label` is {label!r}; a judge "
                    "row needs one of 'Yes', 'No', 'A', 'B'. Fix the code that builds the SPARK rows "
                    "(posttrain.methods.spark.templates.pointwise / pairwise return the label)."
                )
            # With spark.verdict_prefix the prompt began the reply; the verdict is read from the whole of it.
            reply = prefill(prompts[i]) + completion_text(completion)
            scores.append(1.0 if judge_verdict(reply, extract) == expected else 0.0)
        elif row_task == REFLECT_TASK:
            if gold is None and not spec:
                scores.append(None)
            else:
                scores.append(score(completion_text(completion), gold, spec, extract))
        else:
            scores.append(None)
    return scores
