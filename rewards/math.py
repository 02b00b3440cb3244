"""The ``accuracy`` reward: 1.0 when a completion's final answer is right (``posttrain.verify.math``).

Load it as ``name: accuracy`` in a recipe. The dataset needs an ``answer`` column (GSM8K's
``... #### 72`` is understood) and may have a ``verifier`` column that routes a row to
reasoning-gym's own scorer. ``extract`` names how the final answer is read (``lenient`` by default;
``boxed``, ``first_boxed``, ``tagged``, ``qwen_math``: see :mod:`posttrain.verify.math`), ``rel_tol`` a
relative numeric tolerance (GeometryZero: 0.02). The same :func:`~posttrain.verify.math.score` is used by
``posttrain eval``, so the training reward and the evaluation metric cannot drift apart.

    >>> accuracy(["so the total is \\\\boxed{72}", "I think it is 71"], answer=["72", "72"])
    [1.0, 0.0]
"""

from __future__ import annotations

from posttrain.errors import RewardError
from posttrain.rewards import completion_text

# The answer-reading functions, importable from here as before this module became the plugin only.
from posttrain.verify.math import (  # noqa: F401
    EXTRACTORS,
    answers_match,
    check_extract_kwargs,
    extract_answer,
    first_boxed,
    get_extractor,
    last_boxed,
    normalize_gsm8k,
    score,
    within_tolerance,
)


def accuracy(
    completions, answer=None, verifier=None, extract="lenient", rel_tol=0.0, log_metric=None, **kwargs
) -> list[float | None]:
    """Per-row :func:`score`; None where the row has neither an answer nor a verifier.

    ``answer`` and ``verifier`` are dataset columns, aligned with ``completions``. ``extract``: how the
    final answer is read (:data:`EXTRACTORS`; ``lenient`` by default, methods set their reference's);
    ``rel_tol``: GeometryZero's relative numeric tolerance (0 = exact). Logged: ``accuracy/no_answer``,
    the share of scored completions from which the policy extracted no answer.

    >>> accuracy(
    ...     ["\\\\boxed{\\\\frac{1}{2}}", "The answer is 0.5", "It is 3", "nothing"],
    ...     answer=["0.5", "\\\\frac{1}{2}", "4", None],
    ... )
    [1.0, 1.0, 0.0, None]
    """
    extractor = check_extract_kwargs(extract, rel_tol)
    n = len(completions)
    if answer is None and verifier is None:
        raise RewardError(
            "accuracy needs an `answer` column (or a `verifier` column) in the dataset, and found neither. "
            "Rename the dataset's reference column to `answer`, or map it in the recipe's data section."
        )
    answers = answer if answer is not None else [None] * n
    verifiers = verifier if verifier is not None else [None] * n
    scores: list[float | None] = []
    missing = scored = 0
    for completion, gold, verify_spec in zip(completions, answers, verifiers, strict=True):
        if gold is None and not verify_spec:
            scores.append(None)
            continue
        text = completion_text(completion)
        scored += 1
        missing += extractor(text) is None
        scores.append(score(text, gold, verify_spec, extract, rel_tol))
    if log_metric is not None and scored:
        log_metric("accuracy/no_answer", missing / scored)
    return scores
