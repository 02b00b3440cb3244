"""The objective variants of the GRPO family, as pure functions on tensors.

Each function is the formula and nothing else, so it can be read against its paper and tested on
numbers worked out by hand (``tests/test_advantages.py``). How a recipe selects them:

===========================================  =========================================  =====================
variant                                      recipe                                     function
===========================================  =========================================  =====================
group mean / group std (GRPO)                ``trainer.scale_rewards: group`` (default)  :func:`group_advantages`
no std division (Dr.GRPO, GUI-G1)            ``trainer.scale_rewards: none``            :func:`group_advantages`
group mean / batch std                       ``trainer.scale_rewards: batch``           :func:`group_advantages`
per-sample loss weight (GUI-G1's ``rate``)    ``method.sample_weight: <column>``         :func:`weight_samples`
sequence-sum loss / constant (GUI-G1: 64)    ``method.loss_constant: 64``               :func:`sequence_sum_loss`
vote on G samples, train on k (TTRL)         ``method.train_samples: k``                :func:`vote_subset`
===========================================  =========================================  =====================

The three advantage scalings are computed by TRL's ``GRPOTrainer`` itself; :func:`group_advantages`
states the same formula (a test checks it against TRL's output on a real step). The methods install
the others as trainer hooks: GUI-G1's sample weights and constant (``posttrain/methods/gui_g1.py``),
TTRL's vote/train split (``posttrain/methods/ttrl``).

Sources: GRPO (DeepSeekMath, arXiv 2402.03300), Dr.GRPO (arXiv 2503.20783), GUI-G1 (arXiv
2505.15810: advantages without std, ``L = mean_i w_i * sum_t l_it / 64``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from posttrain.errors import DataError

SCALES = ("group", "batch", "none")
STD_EPS = 1e-4  # TRL's: advantages = (r - mean) / (std + 1e-4)


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Bessel-corrected standard deviation ignoring NaN entries."""
    mean = torch.nanmean(x, dim=dim, keepdim=dim is not None)
    count = (~torch.isnan(x)).sum(dim=dim) if dim is not None else (~torch.isnan(x)).sum()
    var = torch.nansum((x - mean) ** 2, dim=dim) / (count - 1).clamp(min=1)
    return var.sqrt()


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = STD_EPS
) -> torch.Tensor:
    """Advantages ``r_i - mean(group)``, divided by the group's std, the batch's std, or nothing.

    ``rewards`` is (N,), ``group_size`` consecutive rows per prompt. A NaN reward (an unscorable
    completion) takes no part in the means and stds and gets advantage 0.

    >>> group_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), 2, "none").tolist()
    [0.5, -0.5, 1.0, -1.0]
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be (N,) with N a multiple of group_size={group_size}.")
    groups = rewards.view(-1, group_size)
    centred = (groups - torch.nanmean(groups, dim=1, keepdim=True)).view(-1)
    if scale == "group":
        std = _nanstd(groups, dim=1).repeat_interleave(group_size)
        centred = centred / (std + eps)
    elif scale == "batch":
        centred = centred / (_nanstd(rewards) + eps)
    return torch.nan_to_num(centred, nan=0.0)


def weight_samples(advantages: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale each sample's advantage (hence its policy-gradient loss) by its weight ``w_i >= 0``.

    The clipped PPO term ``-min(rho * A, clip(rho) * A)`` is positively homogeneous in ``A``, so
    ``A -> w * A`` multiplies sample i's policy loss by exactly ``w_i`` for every loss type. The KL
    penalty (``beta > 0``) is not weighted; GUI-G1 trains with ``beta = 0``, where this is exact.

    >>> weight_samples(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).tolist()
    [0.5, -4.0]
    """
    if weights.shape != advantages.shape[:1]:
        raise ValueError(f"weights must be ({advantages.shape[0]},), got {tuple(weights.shape)}.")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample weights must be finite and >= 0.")
    weights = weights.to(advantages.dtype)
    return advantages * (weights if advantages.dim() == 1 else weights.unsqueeze(1))


def sequence_sum_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, constant: float) -> torch.Tensor:
    """``mean_i sum_t mask_it * l_it / constant``: no per-sequence length normalisation (GUI-G1).

    >>> sequence_sum_loss(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1, 1], [1, 0]]), 4.0)
    tensor(0.7500)
    """
    if constant <= 0:
        raise ValueError(f"constant must be > 0, got {constant}.")
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * constant)


def constant_loss_scale(max_completion_length: int, constant: float) -> float:
    """The factor turning TRL's ``dr_grpo`` loss (sum / (B * max_completion_length)) into
    :func:`sequence_sum_loss` with ``constant``.

    >>> constant_loss_scale(128, 64)
    2.0
    """
    if constant <= 0:
        raise ValueError(f"constant must be > 0, got {constant}.")
    return max_completion_length / constant


def vote_subset(n_rows: int, group_size: int, keep: int) -> torch.Tensor:
    """Row indices of the ``keep`` samples of each group that are trained on; all ``group_size`` vote.

    TTRL (arXiv 2504.16084) samples 64 completions per question, votes on all of them and trains on 32.
    Samples are i.i.d., so any fixed subset is a random one; every ``group_size // keep``-th row is
    taken rather than the first ``keep`` so that, when a group is spread over several processes, each
    keeps the same number of rows (the first ``keep`` would leave some processes with none).

    >>> vote_subset(8, 4, 2).tolist()
    [0, 2, 4, 6]
    """
    if keep < 1 or group_size % keep or n_rows % group_size:
        raise ValueError(
            f"keep ({keep}) must divide group_size ({group_size}), which must divide n_rows ({n_rows})."
        )
    return torch.arange(0, n_rows, group_size // keep)


def combined_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, F) rewards -> (N,) weighted sums; NaN where every reward was None (TRL's sum_then_normalize).

    >>> nan = float("nan")
    >>> combined_rewards(torch.tensor([[1.0, nan], [nan, nan]]), torch.tensor([1.0, 0.5])).tolist()[0]
    1.0
    """
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return rewards


def check_weight(value: Any, row_id: Any, column: str) -> float:
    """One sample weight from a data row: None means 1.0; anything else must be a finite number >= 0."""
    if value is None:
        return 1.0
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise DataError(
            f"Row {row_id!r}: the sample weight column {column!r} holds {value!r}; weights must be finite "
            "numbers >= 0 (null means 1). Fix the data, or unset method.sample_weight."
        )
    return float(value)
