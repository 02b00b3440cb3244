"""Test-time RL: TTRL (arXiv 2504.16084) and TTRV (arXiv 2510.06783), and the vote/train split.

    method: ttrl       # reward: agreement with the group's majority answer (rewards/ttrl.py ttrl_majority)
    method: ttrv       # reward: the answer's share minus an entropy term (ttrv_frequency)
    posttrain adapt --model M --data questions.jsonl --reward ttrl      (adapt.py: the command)

No labels are needed. Both are verl GRPO in their references: token-mean loss (``bnpo``), a k3 KL loss
of 0.001, clip 0.2. Every prompt votes with ``num_generations`` samples and ``method.train_samples`` of
them are trained on (TTRL: 64 and 32): :class:`VoteSubset`, a selection hook, keeps every (G/k)-th
sample of each group after the rewards saw the whole group and recomputes the advantages over the kept
samples alone, as TTRL's ``_select_top_k_per_prompt`` does (every (G/k)-th rather than the first k, so
that each process keeps as many rows when a group spans several). Both install a label-free watch on
the majority's flips and lock-in (lockin.py, after TTRL-Guard). docs/methods.md, "Test-time RL".
"""

from __future__ import annotations

import torch

from posttrain.advantages import combined_rewards, group_advantages, vote_subset
from posttrain.batch import ScoredBatch, Selected
from posttrain.errors import ConfigError
from posttrain.methods.base import PLAIN, Method

_PRESET = {**PLAIN, "loss_type": "bnpo", "scale_rewards": "group", "beta": 0.001}
_VOTES = ("ttrl_majority", "ttrv_frequency")


def install_watch(trainer, recipe) -> None:
    """The label-free lock-in watch (lockin.py), reading answers as the recipe's vote does."""
    from posttrain.methods.ttrl.lockin import MajorityWatch

    extract = next((r.kwargs.get("extract", "boxed") for r in recipe.rewards if r.name in _VOTES), "boxed")
    trainer.scored_hooks.append(MajorityWatch(extract=extract, log=trainer.log_metric))


TTRL = Method(
    name="ttrl",
    summary="TTRL (arXiv 2504.16084): reward = agreement with the group's majority vote, no labels",
    preset=_PRESET,
    rewards=({"name": "ttrl_majority", "weight": 1.0, "kwargs": {"extract": "boxed"}},),
    installs=(install_watch,),
)

# TTRV's entropy term in its per-sample form: the paper's group form is a constant per group that GRPO
# removes (rewards/ttrl.py; docs/methods.md).
TTRV = Method(
    name="ttrv",
    summary="TTRV (arXiv 2510.06783): reward = the answer's share minus 0.75 x an entropy term, no labels",
    preset=_PRESET,
    rewards=(
        {
            "name": "ttrv_frequency",
            "weight": 1.0,
            "kwargs": {"entropy_weight": 0.75, "entropy": "sample", "extract": "qwen_math"},
        },
    ),
    installs=(install_watch,),
)


class VoteSubset:
    """Selection hook: all ``group_size`` samples vote; ``keep`` of each group are trained on, with
    advantages recomputed over them (``weights``: the reward weights; ``scale``: TRL's scale_rewards)."""

    def __init__(self, keep: int, weights: torch.Tensor, scale: str):
        self.keep, self.weights, self.scale = keep, weights, scale

    def __call__(self, batch: ScoredBatch, advantages: torch.Tensor) -> Selected:
        keep = vote_subset(len(batch.rows), batch.group_size, self.keep)
        rewards = combined_rewards(batch.rewards_per_func, self.weights)
        return Selected(keep, group_advantages(rewards[keep], self.keep, self.scale), self.keep)


def check_train_samples(trainer, k: int) -> None:
    g = trainer.num_generations
    if not 2 <= k <= g or g % k:
        raise ConfigError(
            f"method.train_samples ({k}) must be between 2 and num_generations ({g}) and divide it: every "
            f"prompt votes with {g} samples and trains on {k} of them (TTRL: 64 and 32)."
        )
    stride = g // k
    if trainer.args.per_device_train_batch_size % stride:
        raise ConfigError(
            f"per_device_train_batch_size ({trainer.args.per_device_train_batch_size}) counts voting samples "
            f"and must be a multiple of num_generations / train_samples ({stride}), so that every step trains "
            f"on whole samples; e.g. per_device_train_batch_size {g}."
        )
    if trainer.multi_objective_aggregation != "sum_then_normalize":
        raise ConfigError(
            "method.train_samples recomputes the advantages of the trained samples with "
            "multi_objective_aggregation: sum_then_normalize (the default); remove the other setting."
        )


def install_vote_subset(trainer, recipe) -> None:
    """Vote on all of each prompt's samples, train on ``recipe.method.train_samples`` of them."""
    k = recipe.method.train_samples
    check_train_samples(trainer, k)
    trainer.selections.append(VoteSubset(k, trainer.reward_weights, trainer.scale_rewards))
