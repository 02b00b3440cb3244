r"""A judge's verdict: "Yes", "No", "A" or "B", read from its reply (SPARK's judge tasks).

SPARK (arXiv 2509.22624) trains the policy to judge answers pointwise ("is this correct? Yes/No", or
"A: correct / B: incorrect") and pairwise ("which of (A)/(B) is correct?"). The verdict is read like an
answer (by default SPARK's rule, the first ``\boxed{}``; ``\box{}``, which SPARK's own prompts ask
for, is read too) and normalised: ``\text{}``-style wrappers, parentheses, quotes and full stops are
removed and the words are matched case-insensitively. Used by the ``spark_judge`` reward and by
``posttrain eval --judge`` / ``generate --reflect``.
"""

from __future__ import annotations

import re

from posttrain.verify.math import get_extractor

_VERDICTS = {"yes": "Yes", "no": "No", "a": "A", "b": "B"}
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|mbox)\s*\{(.*)\}", re.DOTALL)
_SURROUNDING = " \t\n()\"'.`$*"


def normalise_verdict(text: str) -> str | None:
    r"""``"Yes"``, ``"No"``, ``"A"`` or ``"B"`` for a verdict written in any usual way, else None.

    >>> [normalise_verdict(s) for s in ["yes", "(B)", "\\text{No}.", "'a'", "Correct"]]
    ['Yes', 'B', 'No', 'A', None]
    """
    previous = None
    while text != previous:  # peel layers until none is left: "(\text{A})" -> "\text{A}" -> "A"
        previous = text
        text = text.strip(_SURROUNDING)
        wrapped = _WRAPPER.fullmatch(text)
        if wrapped:
            text = wrapped.group(1)
    return _VERDICTS.get(text.lower())


def judge_verdict(text: str, extract: str = "first_boxed") -> str | None:
    r"""The verdict in the first ``\boxed{...}`` (or ``\box{...}``) of a judge's reply, or None.

    >>> [judge_verdict(t) for t in ["\\boxed{\\text{yes}}", "first \\boxed{A}, no: \\boxed{(B)}", "\\box{No}"]]
    ['Yes', 'A', 'No']
    >>> judge_verdict("first \\boxed{A}, no: \\boxed{(B)}", extract="boxed"), judge_verdict("It is correct.")
    ('B', None)
    """
    content = get_extractor(extract, "spark_judge")(text.replace("\\box{", "\\boxed{"))  # "\boxed{" untouched
    return None if content is None else normalise_verdict(content)
