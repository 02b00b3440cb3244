"""GCPO's group-contrastive reward: reward an optional behaviour only where, in its group, it helps.

GeometryZero (Wang et al., arXiv 2506.07160) trains geometry solvers that may draw auxiliary
constructions. An unconditional bonus for drawing them teaches the model to draw them everywhere;
Group Contrastive Masking signs the bonus per prompt from the rollout group itself:

    aux_i = 1 if completion i shows the behaviour (the detector), else 0
    acc_i = correctness, judged as GeometryZero's accuracy reward judges it (below)
    delta = mean(acc | aux = 1) - mean(acc | aux = 0)
    M     = sign(delta) if both subgroups are non-empty and |delta| > epsilon, else 0
    reward_i = M * aux_i

The mask's exact code was never released; this follows the reconstruction in
docs/methods.md ("GCPO"; the reviews' description of Eq. 4) (epsilon 0.05 and recipe weight 0.5 from the
authors' development scripts). An alternative reading also rewards the non-constructing rollouts
when M = -1; under GRPO's group normalisation that only adds a constant to the whole group, so it
gives the same advantages and is not offered as a separate option.

Recipe entry (a group-level plugin: the trainer calls it on whole groups, gathered across processes):

    - name: gcpo_contrastive
      weight: 0.5
      kwargs: {detector: null, epsilon: 0.05, extract: tagged, rel_tol: 0.02}

Correctness uses :func:`rewards.math.accuracy` with this reward's ``extract`` and ``rel_tol``, which
default to GeometryZero's (r1_workspace ``workspace/reward/reward_utils.py``, ``accuracy_reward_func``
with ``relaxed=True``): the first ``<answer>...</answer>`` span (unclosed: the text after the last
``<answer>``; no tag: no answer), then math-verify, then any number within 2% of the reference's last
number, then an option letter in either case. Give the ``accuracy`` reward the same two kwargs (``method:
gcpo`` does), so that the mask and the accuracy reward can never disagree on which rollouts are right.

``detector`` is a regular expression searched in the completion text (``re.DOTALL``; add ``(?i)``
for case-insensitive), or a function written as ``pkg.module:function`` taking the completion text
and returning a bool. The default detects a non-empty ``<auxiliary>...</auxiliary>`` span, the tag
GeometryZero's prompt asks the model to mark its constructions with. The authors' detector
(``aux_line_reward_v2_func``) also counts an empty span, which a model can emit for free; posttrain does
not, and ``detector: "<auxiliary>.*?</auxiliary>"`` restores their exact reading.

Logged every step: ``gcpo/mask_pos``, ``gcpo/mask_neg``, ``gcpo/mask_zero`` (shares of groups),
``gcpo/empty_subgroup`` (share of groups where everyone or no one showed the behaviour),
``gcpo/aux_rate`` (share of completions with it), ``gcpo/acc_aux`` / ``gcpo/acc_no_aux`` (mean
accuracy with and without it) and ``gcpo/unscorable_groups`` (groups without a reference answer).
With ``split_by: <column>`` (a data column naming each question's kind, e.g. two task families), the
mask shares and the behaviour rate are also logged per value: ``gcpo/<value>/mask_pos``,
``gcpo/<value>/mask_neg``, ``gcpo/<value>/aux_rate``, to see where the mask turns which way.

Tests: ``pytest tests/test_gcpo.py tests/test_reference_gcpo.py -q``.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import RewardError
from posttrain.rewards import completion_text, group_reward, import_object
from posttrain.verify.math import check_extract_kwargs
from rewards.math import accuracy

AUX_TAG = "auxiliary"
_AUX_SPAN = re.compile(rf"<{AUX_TAG}>(.*?)</{AUX_TAG}>", re.DOTALL)
# `pkg.module:function`, or `pkg.module.function` when `pkg` is an importable package.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?$")

Detector = Callable[[str], bool]


def has_auxiliary(text: str) -> bool:
    """True if ``text`` holds a closed, non-empty ``<auxiliary>...</auxiliary>`` span.

    >>> [has_auxiliary(t) for t in ["<auxiliary>draw AD</auxiliary>", "<auxiliary> </auxiliary>", "draw AD"]]
    [True, False, False]
    """
    return any(span.strip() for span in _AUX_SPAN.findall(text))


def _looks_like_import(detector: str) -> bool:
    if not _IMPORT_PATH.fullmatch(detector) or ("." not in detector and ":" not in detector):
        return False
    if ":" in detector:
        return True
    top = detector.partition(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def make_detector(detector: str | Detector | None = None) -> Detector:
    """Turn a recipe's ``detector`` into a predicate ``(completion_text) -> bool``.

    None: :func:`has_auxiliary`. A callable: itself. ``pkg.module:function`` (or ``pkg.module.function``
    with ``pkg`` importable): that function. Any other string: a regular expression, searched.

    >>> make_detector(r"\\d+ \\+ \\d+ =")("so 2 + 3 = 5")
    True
    >>> make_detector("rewards.gcpo:has_auxiliary")("<auxiliary>AD</auxiliary>")
    True
    """
    if detector is None:
        return has_auxiliary
    if callable(detector):
        return detector
    if not isinstance(detector, str) or not detector:
        raise RewardError(
            f"gcpo_contrastive: `detector` must be a regular expression or 'pkg.module:function', got "
            f"{detector!r}. Fix it in this reward's kwargs (or leave it out for the <auxiliary> tag)."
        )
    if _looks_like_import(detector):
        fn = import_object(detector, "gcpo_contrastive", "its `detector` kwarg")
        if not callable(fn):
            raise RewardError(
                f"gcpo_contrastive: the detector {detector!r} is a {type(fn).__name__}, not a function. "
                "Point it at a function `(completion_text) -> bool`."
            )
        return fn
    try:
        pattern = re.compile(detector, re.DOTALL)
    except re.error as exc:
        raise RewardError(
            f"gcpo_contrastive: the detector {detector!r} is not a valid regular expression ({exc}). Fix the "
            "pattern, or write a function as 'pkg.module:function'."
        ) from exc
    return lambda text: pattern.search(text) is not None


def contrast_mask(acc: Sequence[float | None], aux: Sequence[bool], epsilon: float) -> int:
    """GCPO's mask M for one group: +1 (the behaviour helps), -1 (it hurts) or 0 (no evidence).

    Completions with ``acc`` None (unscorable) take no part in either subgroup.

    >>> contrast_mask([1, 1, 0, 0], [True, True, False, False], 0.05)
    1
    >>> contrast_mask([1, 0, 1, 0], [True, True, False, False], 0.05)
    0
    >>> contrast_mask([1, 1, 1, 1], [True, True, True, True], 0.05)
    0
    """
    with_aux = [a for a, x in zip(acc, aux, strict=True) if x and a is not None]
    without = [a for a, x in zip(acc, aux, strict=True) if not x and a is not None]
    if not with_aux or not without:
        return 0
    delta = sum(with_aux) / len(with_aux) - sum(without) / len(without)
    if abs(delta) <= epsilon:
        return 0
    return 1 if delta > 0 else -1


def check_epsilon(epsilon: Any) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon):
        raise RewardError(f"gcpo_contrastive: `epsilon` must be a number in [0, 1), got {epsilon!r}.")
    if not 0 <= epsilon < 1:
        raise RewardError(
            f"gcpo_contrastive: `epsilon` must be in [0, 1), got {epsilon}: accuracies differ by at most 1, so "
            "epsilon >= 1 would never let the mask fire. GeometryZero used 0.05 (0.01-0.30 explored)."
        )
    return float(epsilon)


@group_reward
class GroupContrastive:
    """The ``gcpo_contrastive`` reward: ``M * aux_i`` per completion, M signed per group (module docstring).

    ``extract`` / ``rel_tol``: how correctness is judged, as the ``accuracy`` reward's kwargs of the same
    names; GeometryZero's ``tagged`` and 0.02 by default.

    >>> reward = GroupContrastive(detector="AUX", epsilon=0.05)
    >>> right, wrong = "<answer>4.05</answer>", "<answer>5</answer>"  # 4.05 is within 2% of 4
    >>> reward(["AUX " + right, "AUX " + right, wrong, wrong], group_size=4, answer=["4"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    """

    def __init__(
        self,
        detector: str | Detector | None = None,
        epsilon: float = 0.05,
        extract: str = "tagged",
        rel_tol: float = 0.02,
        split_by: str | None = None,
    ):
        if split_by is not None and (not isinstance(split_by, str) or not split_by):
            raise RewardError(
                f"gcpo_contrastive: split_by must be a data column name or null, got {split_by!r}."
            )
        self.split_by = split_by
        self.detector = make_detector(detector)
        self.epsilon = check_epsilon(epsilon)
        check_extract_kwargs(extract, rel_tol, "gcpo_contrastive")  # at load time, not at the first step
        self.extract, self.rel_tol = extract, rel_tol

    def __call__(
        self,
        completions: Sequence[Any],
        group_size: int,
        answer: Sequence[Any] | None = None,
        verifier: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        aux = [bool(self.detector(t)) for t in texts]
        acc = accuracy(texts, answer=answer, verifier=verifier, extract=self.extract, rel_tol=self.rel_tol)
        scores: list[float | None] = []
        masks: list[int] = []
        empty = unscorable = 0
        for start in range(0, len(texts), group_size):
            g_acc, g_aux = acc[start : start + group_size], aux[start : start + group_size]
            scored = [x for a, x in zip(g_acc, g_aux, strict=True) if a is not None]
            if not scored:
                unscorable += 1  # no reference answer: nothing to contrast, and nothing to reward
            elif all(scored) or not any(scored):
                empty += 1
            m = contrast_mask(g_acc, g_aux, self.epsilon)
            masks.append(m)
            scores.extend(None if a is None else float(m * x) for a, x in zip(g_acc, g_aux, strict=True))
        if log_metric is not None:
            self._log(log_metric, masks, empty, unscorable, acc, aux)
            if self.split_by is not None:
                self._log_split(log_metric, kwargs.get(self.split_by), masks, aux, group_size)
        return scores

    def _log_split(self, log_metric, column, masks: list[int], aux: list[bool], group_size: int) -> None:
        if column is None:
            raise RewardError(
                f"gcpo_contrastive: split_by names the column {self.split_by!r}, which the data does not have; "
                "add it to the rows or remove split_by."
            )
        kinds = [str(v) for v in column[::group_size]]
        for kind in sorted(set(kinds)):
            groups = [i for i, k in enumerate(kinds) if k == kind]
            shown = [aux[i * group_size + j] for i in groups for j in range(group_size)]
            log_metric(f"gcpo/{kind}/mask_pos", sum(masks[i] == 1 for i in groups) / len(groups))
            log_metric(f"gcpo/{kind}/mask_neg", sum(masks[i] == -1 for i in groups) / len(groups))
            log_metric(f"gcpo/{kind}/aux_rate", sum(shown) / len(shown))

    @staticmethod
    def _log(log_metric, masks, empty, unscorable, acc, aux) -> None:
        n = len(masks)
        log_metric("gcpo/mask_pos", masks.count(1) / n)
        log_metric("gcpo/mask_neg", masks.count(-1) / n)
        log_metric("gcpo/mask_zero", masks.count(0) / n)
        log_metric("gcpo/empty_subgroup", empty / n)
        log_metric("gcpo/unscorable_groups", unscorable / n)
        log_metric("gcpo/aux_rate", sum(aux) / len(aux))
        with_aux = [a for a, x in zip(acc, aux, strict=True) if x and a is not None]
        without = [a for a, x in zip(acc, aux, strict=True) if not x and a is not None]
        if with_aux:  # a mean over no completions would be NaN in the logs
            log_metric("gcpo/acc_aux", sum(with_aux) / len(with_aux))
        if without:
            log_metric("gcpo/acc_no_aux", sum(without) / len(without))
