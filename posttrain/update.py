"""The update's fast paths: TRL's loss, computed with less work (docs/scaling.md, "The update").

TRL 1.16 computes the policy's per-token log-probabilities with a fused, chunked LM head, but off
CUDA/XPU it projects *every* position through the 49k-vocabulary head (prompt tokens and padding too,
masked afterwards), runs the whole padded batch through the model, and steps AdamW one tensor at a
time. Each switch below removes one of those costs without changing the loss beyond float rounding
(``tests/test_update.py`` compares every switch with TRL's own computation on the tiny model):

- ``compact_logprobs``: the LM head sees only the completion tokens that enter the loss (what TRL
  itself does on Triton devices; :func:`compact_head`).
- ``trim_padding``: columns that are padding in every row are cut, rows whose completion is wholly
  masked (``mask_truncated_completions``) skip the forward (their log-probabilities are 0 either way),
  and ``length_buckets`` > 1 runs rows of similar length together (:func:`plan_buckets`).
- ``fused_optimizer``: torch's fused AdamW kernel when the optimizer is TRL's default ``adamw_torch``.

    update:
      compact_logprobs: true
      trim_padding: true
      length_buckets: 1
      fused_optimizer: true
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from posttrain.errors import ConfigError


@dataclass
class UpdateConfig:
    """How the trainer computes the loss and steps the optimizer (the maths stays TRL's)."""

    compact_logprobs: bool = True
    """Project only the completion tokens that enter the loss through the LM head."""
    trim_padding: bool = True
    """Cut padding columns and skip rows with no trained token before the model's forward."""
    length_buckets: int = 1
    """Forward the rows in this many groups of similar length (1 = the whole batch at once)."""
    fused_optimizer: bool = True
    """Use torch's fused AdamW when the optimizer is ``adamw_torch`` (TRL's default)."""

    def __post_init__(self) -> None:
        for name in ("compact_logprobs", "trim_padding", "fused_optimizer"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"update.{name} must be true or false, got {getattr(self, name)!r}.")
        if (
            isinstance(self.length_buckets, bool)
            or not isinstance(self.length_buckets, int)
            or self.length_buckets < 1
        ):
            raise ConfigError(
                f"update.length_buckets must be a whole number >= 1, got {self.length_buckets!r} "
                "(1 = the whole batch in one forward)."
            )


@contextlib.contextmanager
def compact_head() -> Iterator[None]:
    """Within this block, TRL's fused LM head scores only the positions with a label.

    TRL decides per device: compact on devices with Triton, every position elsewhere (so that a
    compiled graph on a Neuron device keeps one shape). The chunked log-prob function it calls is the
    same either way; only the rows handed to it change, so the values are the same.
    """
    import trl.trainer.utils as trl_utils

    decide = trl_utils._use_triton
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = decide


@dataclass(frozen=True)
class Layout:
    """Where each row's tokens sit: prompts left-padded, completions right-padded (TRL's layout)."""

    prompt_lengths: torch.Tensor  # (B,)
    completion_lengths: torch.Tensor  # (B,)
    prompt_width: int  # columns before the completion region


def read_layout(attention_mask: torch.Tensor, logits_to_keep: int) -> Layout | None:
    """Each row's prompt and completion lengths, or None if the mask is not TRL's padded layout."""
    width = attention_mask.size(1) - logits_to_keep
    mask = attention_mask.bool()
    prompt, completion = mask[:, :width], mask[:, width:]
    p, c = prompt.sum(1), completion.sum(1)
    cols_p = torch.arange(width, device=mask.device)
    cols_c = torch.arange(logits_to_keep, device=mask.device)
    expected_p = cols_p.unsqueeze(0) >= (width - p).unsqueeze(1)
    expected_c = cols_c.unsqueeze(0) < c.unsqueeze(1)
    if not (torch.equal(prompt, expected_p) and torch.equal(completion, expected_c)):
        return None
    return Layout(p.cpu(), c.cpu(), width)


def plan_buckets(layout: Layout, n_buckets: int) -> list[list[int]]:
    """Rows with at least one completion token, sorted by length and cut into ``n_buckets`` groups of
    (nearly) equal size; rows with none are left out (nothing of theirs enters the loss)."""
    rows = [i for i, c in enumerate(layout.completion_lengths.tolist()) if c > 0]
    total = (layout.prompt_lengths + layout.completion_lengths).tolist()
    rows.sort(key=lambda i: (total[i], i))
    n = max(1, min(n_buckets, len(rows)))
    bounds = [round(k * len(rows) / n) for k in range(n + 1)]
    return [rows[bounds[k] : bounds[k + 1]] for k in range(n) if bounds[k] < bounds[k + 1]]


def padded_positions(layout: Layout, buckets: list[list[int]] | None) -> tuple[int, int]:
    """(positions the model runs, positions holding real tokens) for the whole batch (``buckets`` None)
    or for the trimmed buckets."""
    p, c = layout.prompt_lengths, layout.completion_lengths
    real = int((p + c).sum())
    if buckets is None:
        return len(p) * (layout.prompt_width + int(c.numel() and c.max())), real
    run = sum(len(b) * (int(p[b].max()) + int(c[b].max())) for b in buckets)
    return run, int((p + c)[[i for b in buckets for i in b]].sum())


Score = Callable[[torch.Tensor, torch.Tensor, int, list[int]], tuple[torch.Tensor, torch.Tensor | None]]


def bucketed(
    score: Score,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    layout: Layout,
    buckets: list[list[int]],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities (and entropies) of the whole batch, each bucket forwarded without its
    padding columns. ``score(ids, mask, keep, rows)`` returns ``(logps, entropies)`` of shape
    ``(len(rows), keep)``. Positions outside a row's completion, and rows in no bucket, get 0, as in
    TRL's own output. RoPE sees every row shifted by its removed left padding: attention depends on
    relative positions only, so the values do not change beyond rounding."""
    batch = input_ids.size(0)
    logps = entropies = None
    for rows in buckets:
        index = torch.tensor(rows, device=input_ids.device)
        p_max = int(layout.prompt_lengths[rows].max())
        c_max = int(layout.completion_lengths[rows].max())
        cols = slice(layout.prompt_width - p_max, layout.prompt_width + c_max)
        lp, ent = score(input_ids[index, cols], attention_mask[index, cols], c_max, rows)
        if logps is None:
            logps = lp.new_zeros(batch, logits_to_keep)
            entropies = None if ent is None else ent.new_zeros(batch, logits_to_keep)
        logps = logps.index_put((index.unsqueeze(1), torch.arange(c_max, device=lp.device)), lp)
        if ent is not None:
            entropies = entropies.index_put((index.unsqueeze(1), torch.arange(c_max, device=ent.device)), ent)
    return logps, entropies


class FastUpdate:
    """The trainer's per-token log-probabilities through the switches of :class:`UpdateConfig`.

    ``original`` is TRL's ``_get_per_token_logps_and_entropies``; anything this class does not handle
    (vision inputs, MoE auxiliary losses, a mask that is not TRL's padded layout) goes to it whole.
    ``last`` holds the positions the last call ran and how many held real tokens (``update/padding``).
    """

    def __init__(self, config: UpdateConfig):
        self.config = config
        self.last: dict[str, int] = {}

    def per_token_logps(
        self,
        original,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **extra,
    ):
        head = compact_head() if self.config.compact_logprobs else contextlib.nullcontext()
        plain = compute_aux_loss or any(v is not None for v in extra.values()) or not self.config.trim_padding
        layout = None if plain else read_layout(attention_mask, logits_to_keep)
        buckets = [] if layout is None else plan_buckets(layout, self.config.length_buckets)
        if not buckets:  # nothing to trim, or no row with a trained token: TRL's call, whole
            self.last = {"positions": input_ids.numel(), "real": int(attention_mask.sum())}
            with head:
                return original(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size,
                    compute_entropy,
                    compute_aux_loss,
                    **extra,
                )

        def score(ids, mask, keep, rows):
            logps, entropies, _ = original(model, ids, mask, keep, batch_size, compute_entropy)
            return logps, entropies

        run, real = padded_positions(layout, buckets)
        self.last = {"positions": run, "real": real}
        with head:
            logps, entropies = bucketed(score, input_ids, attention_mask, logits_to_keep, layout, buckets)
        return logps, entropies, None
