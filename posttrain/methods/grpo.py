"""GRPO, Dr.GRPO and DAPO: members of the family that are TRL loss settings and nothing more.

    method: grpo       # GRPO (DeepSeekMath, arXiv 2402.03300) as TRL defines it: token mean per sequence,
                       #   group mean/std advantages, no KL
    method: dr_grpo    # Dr.GRPO (arXiv 2503.20783): no length and no std normalisation
    method: dapo       # DAPO (arXiv 2503.14476): token-level loss over the batch, clip-higher 0.28,
                       #   truncated completions masked (overlong filtering), no KL, the soft
                       #   overlong punishment (rewards/overlong.py) added to the recipe's rewards,
                       #   and dynamic sampling (posttrain/dynamic.py) unless the recipe turns it off

Their rewards come from the recipe (``accuracy`` by default). docs/methods.md, "The TRL settings each
method preset sets".
"""

from __future__ import annotations

from posttrain.methods.base import PLAIN, Method

GRPO = Method(
    name="grpo",
    summary="GRPO (DeepSeekMath, arXiv 2402.03300): group-normalised advantages, clipped ratio",
    preset={**PLAIN, "loss_type": "grpo", "scale_rewards": "group", "beta": 0.0},
)

DR_GRPO = Method(
    name="dr_grpo",
    summary="Dr.GRPO (arXiv 2503.20783): no length or std normalisation",
    preset={**PLAIN, "loss_type": "dr_grpo", "scale_rewards": "none", "beta": 0.0},
)


def add_overlong(recipe) -> None:
    """DAPO's soft overlong punishment joins the recipe's rewards (unless it lists one already), over the
    last fifth of max_completion_length (the paper: 4,096 of 20,480)."""
    from posttrain.rewards import RewardSpec

    if any(r.name == "overlong" for r in recipe.rewards):
        return
    import dataclasses

    from trl import GRPOConfig

    default = next(f.default for f in dataclasses.fields(GRPOConfig) if f.name == "max_completion_length")
    limit = int(recipe.trainer.get("max_completion_length", default))
    recipe.rewards.append(
        RewardSpec(name="overlong", weight=1.0, kwargs={"max_length": limit, "cache": max(1, limit // 5)})
    )


def dynamic_sampling_on(recipe) -> None:
    """DAPO's signature component is on unless the recipe says ``dynamic_sampling: {enabled: false}``."""
    if recipe.method.dynamic_sampling.enabled is None:
        recipe.method.dynamic_sampling.enabled = True


DAPO = Method(
    name="dapo",
    summary="DAPO (arXiv 2503.14476): token-level loss, clip-higher, overlong filtering, dynamic sampling",
    preset={
        **PLAIN,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "beta": 0.0,
        "epsilon_high": 0.28,
        "mask_truncated_completions": True,
    },
    checks=(add_overlong, dynamic_sampling_on),
)
