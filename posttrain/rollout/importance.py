"""Importance-sampling correction for completions sampled by an engine other than the trainer.

vLLM samples with its own kernels and precision, so the probability it gave a token differs a little
from the trainer's. The correction (truncated / masked importance sampling, as in TRL's
``vllm_importance_sampling_*`` settings, which these functions follow) re-weights each token's or
sequence's loss by ``pi_train / pi_sampler``:

- ``token_truncate``: per-token ratio, clipped into ``[clip_min, clip_max]``;
- ``token_mask``: per-token ratio, 0 outside ``[clip_min, clip_max]``;
- ``sequence_truncate`` / ``sequence_mask``: the same on the product over the sequence's tokens.

Why this module exists: TRL computes ``pi_train`` with an extra forward pass over every completion
before the update. When each generation batch is used for exactly one optimizer step (GRPO's
default), the update's own forward pass computes the same log-probabilities, so posttrain takes them
from there (detached) and skips the extra pass; ``bench/rollout.py`` measures the saving.
"""

from __future__ import annotations

import math

import torch

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(
    trainer_logps: torch.Tensor,
    sampler_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_min: float | None = None,
    clip_max: float | None = 3.0,
) -> torch.Tensor:
    """(B, T) per-token log-probs of both -> weights, (B, T) for token modes or (B, 1) for sequence modes.

    ``mask`` (B, T) is 1 on completion tokens that count; padding contributes a ratio of 1. A sampler
    log-prob of NaN (unavailable) also counts as no correction.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown importance-sampling mode {mode!r}; choose one of {', '.join(MODES)}.")
    diff = torch.nan_to_num((trainer_logps - sampler_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    lo = -math.inf if clip_min is None else clip_min
    hi = math.inf if clip_max is None else clip_max
    if mode.endswith("truncate"):
        return ratio.clamp(min=lo, max=hi)
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)


def token_advantages(advantages: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-token advantages ``A * w`` (B, T).

    Multiplying the advantage by ``w >= 0`` is the same as multiplying the clipped policy-gradient loss
    by ``w``: ``-min(r A, clip(r) A) * w = -min(r (wA), clip(r) (wA))``; the sign of A is unchanged,
    so sign-dependent parts of the loss (clip side, off-policy masks) see the same thing.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    return advantages * weights


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count) of ``values`` over the tokens that enter the loss, for a mean across processes.

    ``values`` is (B, T) per token, or (B, 1) per sequence (a sequence-mode weight), which counts once
    for each sequence with at least one loss token. Padding and inserted (tool) tokens never count.

    >>> masked_sum(torch.tensor([[2.0, 4.0], [1.0, 1.0]]), torch.tensor([[1, 0], [1, 1]]))
    (tensor(4.), tensor(3.))
    >>> masked_sum(torch.tensor([[2.0], [5.0]]), torch.tensor([[1, 1], [0, 0]]))
    (tensor(2.), tensor(1.))
    """
    mask = mask.to(values.dtype)
    if values.size(-1) == 1 and mask.size(-1) != 1:
        mask = (mask.sum(dim=-1, keepdim=True) > 0).to(values.dtype)
    return (values * mask).sum(), mask.sum()


class ImportanceCorrection:
    """The correction as the trainer applies it: advantages -> per-token ``A * w`` on an engine's samples.

    TRL computes ``pi_train`` with an extra forward pass before the update; when each generation batch
    feeds one optimizer step, the update's own first forward pass gives the same log-probs, so they are
    taken from there: :meth:`expect` marks the batch, :meth:`observe` receives the log-probs of that
    pass (TRL's loss reads the advantages after it, pinned by tests/test_trl_internals.py). When the
    batch is reused (TRL computed ``old_per_token_logps``), :meth:`apply` weights it right away.
    ``log(name, value)`` records ``rollout/logp_gap`` and ``rollout/is_weight_mean``, means over the
    tokens that enter the loss of every process (``gather`` sums across processes).
    """

    def __init__(self, mode: str, clip_min: float | None, clip_max: float | None, log, gather):
        if mode not in MODES:
            raise ValueError(f"Unknown importance-sampling mode {mode!r}; choose one of {', '.join(MODES)}.")
        self.mode, self.clip_min, self.clip_max = mode, clip_min, clip_max
        self.log, self.gather = log, gather
        self._pending: dict | None = None

    def applies(self, inputs: dict) -> bool:
        return "sampling_per_token_logps" in inputs

    def apply(self, inputs: dict, trainer_logps: torch.Tensor) -> None:
        """Weight ``inputs["advantages"]`` in place from ``trainer_logps`` (B, T)."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        sampler = inputs["sampling_per_token_logps"]
        weights = importance_weights(trainer_logps, sampler, mask, self.mode, self.clip_min, self.clip_max)
        inputs["advantages"] = token_advantages(inputs["advantages"], weights)
        gap = (trainer_logps - sampler).abs()
        scored = mask * ~torch.isnan(gap)  # tokens the sampler could not score take no part, as in TRL
        totals = torch.stack([*masked_sum(torch.nan_to_num(gap), scored), *masked_sum(weights.float(), mask)])
        gap_sum, tokens, weight_sum, counted = self.gather(totals).view(-1, 4).sum(0).tolist()
        self.log("rollout/logp_gap", gap_sum / max(tokens, 1.0))
        self.log("rollout/is_weight_mean", weight_sum / max(counted, 1.0))

    def expect(self, inputs: dict) -> dict:
        """A copy of ``inputs`` (the buffered batch stays as generated) to weight at the next :meth:`observe`."""
        self._pending = dict(inputs)
        return self._pending

    def observe(self, trainer_logps: torch.Tensor) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.apply(pending, trainer_logps.detach())

    def done(self) -> None:
        self._pending = None
