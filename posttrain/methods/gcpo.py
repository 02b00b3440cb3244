"""GCPO (GeometryZero, arXiv 2506.07160): GRPO plus a group-contrastive reward for an optional behaviour.

    method: gcpo       # with no `rewards` list: accuracy + 0.5 format + 0.5 gcpo_contrastive + 0.5 length

The rewards are built-in plugins (``rewards/gcpo.py``: the contrastive mask; ``rewards/length.py``;
``rewards/format.py`` with ``style: geometryzero``); answers are read as GeometryZero's code reads them
(the first ``<answer>`` span, a 2% numeric tolerance, option letters) in the reward, the mask and the
gated length reward alike. The loss is OpenRLHF's token-level mean per micro-batch (``bnpo``), no KL
(the authors' scripts: ``init_kl_coef 0``). docs/methods.md, "GCPO".
"""

from __future__ import annotations

from posttrain.errors import ConfigError
from posttrain.methods.base import PLAIN, Method

READING = {"extract": "tagged", "rel_tol": 0.02}
"""How GeometryZero reads answers (its ``reward_utils.accuracy_reward_func(relaxed=True)``)."""


def no_separate_normalisation(recipe, args) -> None:
    """The contrastive column must be summed with the others before the group normalisation (checked by
    the recipe loader for every recipe with ``gcpo_contrastive``, whatever its method)."""
    contrastive = recipe.method.name == "gcpo" or any(r.name == "gcpo_contrastive" for r in recipe.rewards)
    if contrastive and args.multi_objective_aggregation == "normalize_then_sum":
        raise ConfigError(
            "GCPO's group-contrastive reward needs trainer.multi_objective_aggregation: sum_then_normalize "
            "(the default): normalize_then_sum would normalise the masked auxiliary reward on its own and undo "
            "its sign. Remove trainer.multi_objective_aggregation."
        )


GCPO = Method(
    name="gcpo",
    summary="GCPO (GeometryZero, arXiv 2506.07160): a group-contrastive behaviour reward + a length reward",
    preset={**PLAIN, "loss_type": "bnpo", "scale_rewards": "group", "beta": 0.0},
    rewards=(
        {"name": "accuracy", "weight": 1.0, "kwargs": dict(READING)},
        {"name": "format", "weight": 0.5, "kwargs": {"style": "geometryzero"}},
        {
            "name": "gcpo_contrastive",
            "weight": 0.5,
            # The authors' detector (reward_utils.aux_line_reward_v2_func): any span, an empty one too.
            "kwargs": {"detector": "<auxiliary>.*?</auxiliary>", "epsilon": 0.05, **READING},
        },
        {"name": "length", "weight": 0.5, "kwargs": {"cap": 900}},
    ),
)
