"""GUI-G1's objective (arXiv 2505.15810): per-sample loss weights and a sequence-sum loss over a constant.

    method: {name: dr_grpo, sample_weight: rate, loss_constant: 64}

GUI-G1 removes GRPO's length and difficulty biases: no std division (``scale_rewards: none``), the
per-sequence token mean replaced by a sum over a constant (``L = mean_i w_i sum_t l_it / 64``), and a
per-question weight ``w_i`` from the data (its ``rate`` field). Both options work with any method:

- ``method.sample_weight: <column>`` multiplies each sample's advantage by the row's value (an advantage
  transform; :func:`posttrain.advantages.weight_samples`: the clipped PPO term is positively homogeneous
  in the advantage, so this weights the policy loss exactly; the KL term stays unweighted).
- ``method.loss_constant: C`` rescales TRL's ``dr_grpo`` loss (sum / (B x max_completion_length)) to
  sum / (B x C) (a loss transform; :func:`posttrain.advantages.constant_loss_scale`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from posttrain.advantages import check_weight, constant_loss_scale, weight_samples

logger = logging.getLogger(__name__)


class SampleWeights:
    """Advantage transform: multiply each sample's advantage by its row's ``column`` (see :func:`weight_samples`).

    Rows without the column (e.g. prompts a hook queued) get weight 1.
    """

    def __init__(self, column: str):
        self.column = column

    def __call__(self, advantages: torch.Tensor, batch: Any) -> torch.Tensor:
        ids: Sequence[Any] = batch.column("id")
        weights = [
            check_weight(v, i, self.column) for v, i in zip(batch.column(self.column), ids, strict=True)
        ]
        return weight_samples(advantages, torch.tensor(weights, device=advantages.device))


class ConstantLoss:
    """Loss transform: TRL's ``dr_grpo`` loss, sum / (B x max_completion_length), made sum / (B x constant)."""

    def __init__(self, max_completion_length: int, constant: float):
        self.scale = constant_loss_scale(max_completion_length, constant)

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale


def check_loss_constant(trainer, constant: float) -> None:
    if trainer.loss_type != "dr_grpo":
        raise ValueError(
            f"loss_constant rescales the dr_grpo loss, but loss_type is {trainer.loss_type!r}; set "
            "loss_type='dr_grpo' (the recipe's method.loss_constant does this itself)."
        )
    if getattr(trainer, "_entropy_bonus_enabled", False):
        raise ValueError(
            "loss_constant cannot be combined with TRL's entropy bonus (entropy_coef): the rescaling "
            "would scale the bonus too. Unset one of them."
        )


def install(trainer, recipe) -> None:
    """Put the ``method`` section's sample weights and loss constant on ``trainer``."""
    options = recipe.method
    if options.sample_weight is not None:
        trainer.advantage_transforms.append(SampleWeights(options.sample_weight))
        if trainer.beta:
            logger.warning(
                "method.sample_weight weights each sample's policy loss; the KL penalty (beta=%s) stays "
                "unweighted.",
                trainer.beta,
            )
    if options.loss_constant is not None:
        check_loss_constant(trainer, options.loss_constant)
        trainer.loss_transforms.append(ConstantLoss(trainer.max_completion_length, options.loss_constant))
