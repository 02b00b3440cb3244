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
- ``share_prompts``: the G completions of a group share one prompt; its forward (and backward) runs once
  per group and the completions attend to its keys and values (:func:`shared_prompt_logps`). With
  the demo's short answers prompts are ~85% of the tokens, so this removes most of the update's work.
- ``fused_optimizer``: torch's fused AdamW kernel when the optimizer is TRL's default ``adamw_torch``.

    update:
      compact_logprobs: true
      trim_padding: true
      length_buckets: 2
      share_prompts: true
      fused_optimizer: true
"""

from __future__ import annotations

import contextlib
import inspect
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
    length_buckets: int = 2
    """Forward the rows (with shared prompts: their completions) in this many groups of similar length
    (1 = all at once)."""
    share_prompts: bool = True
    """Run each distinct prompt once and let its completions attend to its keys and values (one process,
    no gradient checkpointing, a plain causal LM; anything else takes the other paths)."""
    fused_optimizer: bool = True
    """Use torch's fused AdamW when the optimizer is ``adamw_torch`` (TRL's default)."""

    def __post_init__(self) -> None:
        for name in ("compact_logprobs", "trim_padding", "share_prompts", "fused_optimizer"):
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


def cut_by_length(lengths: list[int], n_buckets: int) -> list[list[int]]:
    """Positions into ``lengths`` sorted by length (ties by position) and cut into ``n_buckets`` groups of
    (nearly) equal size; never more groups than positions."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = max(1, min(n_buckets, len(order)))
    bounds = [round(k * len(order) / n) for k in range(n + 1)]
    return [order[bounds[k] : bounds[k + 1]] for k in range(n) if bounds[k] < bounds[k + 1]]


def plan_buckets(layout: Layout, n_buckets: int) -> list[list[int]]:
    """Rows with at least one completion token, sorted by length and cut into ``n_buckets`` groups of
    (nearly) equal size; rows with none are left out (nothing of theirs enters the loss)."""
    rows = [i for i, c in enumerate(layout.completion_lengths.tolist()) if c > 0]
    total = (layout.prompt_lengths + layout.completion_lengths).tolist()
    return [[rows[j] for j in bucket] for bucket in cut_by_length([total[i] for i in rows], n_buckets)]


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
    ``last`` holds the path the last call took (``shared``, ``buckets`` or ``trl``), the positions the
    backbone ran and how many of them held tokens.
    """

    def __init__(self, config: UpdateConfig):
        self.config = config
        self.last: dict[str, int] = {}

    def per_token_logps(
        self,
        trainer,
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
        # One forward per step under DDP/DeepSpeed (their wrappers expect one forward before each backward).
        n_buckets = 1 if hasattr(model, "module") else self.config.length_buckets
        buckets = [] if layout is None else plan_buckets(layout, n_buckets)
        # A LoRA model's adapters sit inside its base model's layers: the base model's backbone runs them.
        plain = model.get_base_model() if hasattr(model, "peft_config") else model
        if buckets and self.config.share_prompts and can_share_prompts(plain):
            shared = shared_prompt_logps(
                plain, input_ids, attention_mask, logits_to_keep, layout, trainer.temperature, compute_entropy,
                trainer.accelerator.autocast, n_buckets,
            )  # fmt: skip
            if shared is not None:
                logps, entropies, self.last = shared
                return logps, entropies, None
        if not buckets:  # nothing to trim, or no row with a trained token: TRL's call, whole
            self.last = {"path": "trl", "positions": input_ids.numel(), "real": int(attention_mask.sum())}
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
        self.last = {"path": "buckets", "positions": run, "real": real}
        with head:
            logps, entropies = bucketed(score, input_ids, attention_mask, logits_to_keep, layout, buckets)
        return logps, entropies, None


# Config attributes that scale or cap the logits in some models; the shared-prompt path projects through
# the LM head itself and leaves such models to TRL's head.
_LOGIT_SCALING = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def can_share_prompts(model) -> bool:
    """A plain causal LM whose backbone we can call with a KV cache: not wrapped by DDP or DeepSpeed (they
    expect their own forward), no gradient checkpointing (it turns the cache off), unscaled logits."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or getattr(model, "is_gradient_checkpointing", False):
        return False
    if not hasattr(model, "get_decoder") or model.get_output_embeddings() is None:
        return False
    config = model.config.get_text_config()
    return all(getattr(config, name, None) is None for name in _LOGIT_SCALING)


def shared_prompt_logps(
    model,
    input_ids,
    attention_mask,
    logits_to_keep: int,
    layout: Layout,
    temperature: float,
    compute_entropy: bool,
    autocast,
    n_buckets: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, int]] | None:
    """Per-token log-probabilities (and entropies) with each distinct prompt forwarded once.

    The rows' prompts are grouped (identical ids and padding); the backbone runs the distinct prompts with
    a KV cache; the completions run on top of their prompt's keys and values, ``n_buckets`` groups of
    similar length at a time (each cut to its longest completion). The first completion token is scored
    from the prompt's last hidden state, the others from the completion's, and only tokens that enter the
    loss go through the LM head. Positions are those of TRL's padded forward (column indices), so every
    value equals TRL's up to rounding; gradients reach the prompt through the cache. Also returns the
    positions the backbone ran and the real tokens among them. Returns None when no prompt repeats.
    """
    from transformers import DynamicCache
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    rows = torch.nonzero(layout.completion_lengths > 0).flatten().tolist()
    width = layout.prompt_width
    index = torch.tensor(rows, device=input_ids.device)
    prompts = torch.cat([input_ids[index, :width], attention_mask[index, :width]], dim=1)
    distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if distinct.size(0) == len(rows):
        return None
    p_max = int(layout.prompt_lengths[rows].max())
    lengths = layout.completion_lengths[rows].tolist()
    prompt_ids, prompt_mask = distinct[:, width - p_max : width], distinct[:, 2 * width - p_max :]
    backbone = model.get_decoder()
    # transformers renamed past_key_values to cache (5.2x); .venv-vllm keeps an older one.
    cache_arg = (
        "cache" if "cache" in inspect.signature(type(backbone).forward).parameters else "past_key_values"
    )
    head = model.get_output_embeddings()
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    logps = input_ids.new_zeros(input_ids.size(0), logits_to_keep, dtype=torch.float32)
    entropies = logps if compute_entropy else None
    ran = {"path": "shared", "positions": prompt_ids.numel(), "real": int(prompt_mask.sum()) + sum(lengths)}
    with autocast():
        first = backbone(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True)
        cache = getattr(first, "cache", None) or first.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        for bucket in cut_by_length(lengths, n_buckets):
            at = index[bucket]  # batch rows of this bucket
            owner, c_len = inverse[bucket], max(lengths[i] for i in bucket)
            rows_cache = DynamicCache()  # each row's prompt keys and values (indexing keeps the graph)
            for i, (keys, values) in enumerate(layers):
                rows_cache.update(keys[owner], values[owner], i)
            ids = input_ids[at, width : width + c_len]
            kept = attention_mask[at, width : width + c_len]
            mask = torch.cat([prompt_mask[owner], kept], dim=1)
            rest = backbone(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_arg: rows_cache})
            hidden = torch.cat([first.last_hidden_state[owner, -1:], rest.last_hidden_state[:, :-1]], dim=1)
            scored = kept.bool()
            values = ChunkedLogProbFunction.apply(
                hidden[scored], head.weight, head.bias, ids[scored], temperature, 32768, None, 1.0, outputs
            )  # fmt: skip
            grid = (at.unsqueeze(1), torch.arange(c_len, device=input_ids.device))
            logps = logps.index_put(grid, values[0].new_zeros(scored.shape).masked_scatter(scored, values[0]))
            if compute_entropy:
                placed = values[1].new_zeros(scored.shape).masked_scatter(scored, values[1])
                entropies = entropies.index_put(grid, placed)
            ran["positions"] += ids.numel()
    return logps, entropies, ran
