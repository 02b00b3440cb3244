"""DAPO's dynamic sampling (arXiv 2503.14476, Sec. 3.2): groups without reward variance are replaced.

A group whose rewards are all equal (after group-level plugins) has zero advantage everywhere, so it
adds nothing to the gradient but still dilutes the batch. A group counts as having signal when one of
its trained rows has a non-zero advantage: the rewards' variance, read after selections and advantage
transforms. With ``method.dynamic_sampling.enabled``, each
training generation batch is generated and scored, its uniform groups are dropped, and more prompts are
generated and scored ("rounds") until every group slot of the batch holds a group with signal or
``max_rounds`` rounds have run. Then the batch trains on what it has: a slot still empty holds a
uniform group masked out of the loss (``tool_mask`` 0, advantage 0), so uniform groups never reach the
loss. The batch keeps its shape, so the trainer, DeepSpeed and the micro-batch split do not change.

Which groups may fill which slots. On one process (or when every process holds whole groups) any group
with signal fills any empty slot of the same process, in generation order, as DAPO's buffer does. When
TRL spreads a group over several processes, a slot is filled only by the group generated at the same
position of a later round, so that no rows move between processes (fewer groups fill a batch then).
The plan is computed from the gathered rewards, so every process takes the same decisions.

The data order stays reproducible: the extra prompts come from the prompt feed (posttrain/feed.py) in
its seeded order, and dropped prompts are consumed, not re-queued (as in DAPO's reference: a dropped
prompt comes back only in the next pass over the data). Surplus groups with signal that find no empty
slot are dropped too. Logged per generation batch: ``dynamic/rounds``, ``dynamic/dropped_groups``
(uniform groups generated), ``dynamic/kept_groups`` (slots holding a group with signal),
``dynamic/unfilled_groups``.

    method: {name: dapo, dynamic_sampling: {enabled: true, max_rounds: 4}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather

from posttrain.errors import ConfigError

# Output keys that are one value per batch, recomputed after the merge, or merged row by row.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RECOUNTED = ("num_items_in_batch",)


@dataclass
class DynamicSampling:
    """``method.dynamic_sampling``: DAPO's dynamic sampling (module docstring)."""

    enabled: bool | None = None
    """Replace groups without reward variance by new ones; null: the method's default (on for ``dapo``)."""
    max_rounds: int = 4
    """Generation rounds at most per batch, the first included (verl's DAPO recipe allows 10 on GPUs)."""

    def __post_init__(self) -> None:
        if self.enabled is not None and not isinstance(self.enabled, bool):
            raise ConfigError(f"method.dynamic_sampling.enabled must be true or false, got {self.enabled!r}.")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int) or self.max_rounds < 1:
            raise ConfigError(
                "method.dynamic_sampling.max_rounds must be an integer >= 1 (generation rounds per batch, the "
                f"first included; 1 drops uniform groups without replacing them), got {self.max_rounds!r}."
            )

    @classmethod
    def from_value(cls, value: Any) -> DynamicSampling:
        """A mapping ``{enabled, max_rounds}``, a bare ``true``/``false``, or None (the method's default)."""
        if value is None or isinstance(value, DynamicSampling):
            return value or cls()
        if isinstance(value, bool):
            return cls(enabled=value)
        if not isinstance(value, dict):
            raise ConfigError(
                "method.dynamic_sampling must be a mapping like {enabled: true, max_rounds: 4}, "
                f"got {value!r}."
            )
        unknown = set(value) - {"enabled", "max_rounds"}
        if unknown:
            raise ConfigError(
                f"Unknown key(s) {sorted(unknown)} in method.dynamic_sampling; it takes enabled and max_rounds."
            )
        return cls(**value)


# ------------------------------------------------------------------------------------------- pure maths
def group_signal(advantages: torch.Tensor, rows_per_group: int, tol: float = 1e-6) -> list[bool]:
    """Per group of ``rows_per_group`` consecutive rows: whether any row has a non-zero advantage, i.e.
    whether the group reaches the gradient. An advantage is the reward minus its group's mean (then
    scaled), so this is the rewards' variance, not their mean (equal non-binary rewards carry no signal
    either); it also sees what selections and advantage transforms did (TTRL's trained subset).
    ``advantages``: (rows,) or token-level (rows, T)."""
    return rows_with_signal(advantages, tol).view(-1, rows_per_group).any(dim=1).tolist()


def rows_with_signal(advantages: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """(rows,) bool: a non-zero advantage on the row (on any token, for token-level advantages)."""
    moves = advantages.detach().float().abs() > tol
    return moves.any(dim=-1) if moves.dim() > 1 else moves


def slot_bins(n_groups: int, group_size: int, num_processes: int) -> list[list[int]]:
    """Which global group slots may take each other's groups: whole groups per process share one bin per
    process; groups spread over processes keep their position (one bin per slot)."""
    rows_local = n_groups * group_size // num_processes
    if rows_local % group_size == 0:
        per = rows_local // group_size
        return [list(range(p * per, (p + 1) * per)) for p in range(num_processes)]
    return [[g] for g in range(n_groups)]


def plan_slots(signals: list[list[bool]], bins: list[list[int]]) -> list[tuple[int, int] | None]:
    """For each global slot, the (round, group) whose rows fill it, or None when no group with signal was
    left for it. Within a bin, groups with signal fill the bin's slots in generation order (round, then
    position); the rest are dropped."""
    n_slots = len(signals[0]) if signals else 0
    plan: list[tuple[int, int] | None] = [None] * n_slots
    for slots in bins:
        sources = [(r, g) for r, signal in enumerate(signals) for g in slots if signal[g]]
        for slot, source in zip(slots, sources, strict=False):
            plan[slot] = source
    return plan


def local_rows(group: int, group_size: int, rows_local: int, process: int) -> list[int]:
    """This process's row indices (into its local batch) of global group ``group``, in order."""
    start, end = group * group_size, (group + 1) * group_size
    lo, hi = max(start, process * rows_local), min(end, (process + 1) * rows_local)
    return [i - process * rows_local for i in range(lo, hi)]


def merge_rounds(
    outputs: list[dict[str, Any]], picks: list[tuple[int, int]], pad_ids: dict[str, int]
) -> dict[str, Any]:
    """One local batch from rows of several rounds' outputs. ``picks``: (round, local row) per output row.
    Sequence tensors are padded to the longest round (prompts on the left, as TRL pads them)."""
    merged: dict[str, Any] = {}
    n_rows = len(outputs[0]["completion_ids"])
    for key, first in outputs[0].items():
        if key in _RECOUNTED:
            continue
        if not isinstance(first, torch.Tensor) or first.dim() == 0 or first.shape[0] != n_rows:
            raise ConfigError(
                f"Dynamic sampling cannot merge the batch field {key!r} (vision inputs or a custom rollout "
                "field); turn it off with --method.dynamic_sampling.enabled false."
            )
        tensors = [out[key] for out in outputs]
        if first.dim() >= 2:
            width = max(t.shape[1] for t in tensors)
            left = key in _LEFT_PADDED
            value = pad_ids.get(key, 0)
            tensors = [_pad(t, width, value, left) for t in tensors]
        merged[key] = torch.stack([tensors[r][i] for r, i in picks])
    return merged


def _pad(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    missing = width - t.shape[1]
    if missing == 0:
        return t
    pad = t.new_full((t.shape[0], missing, *t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


# ------------------------------------------------------------------------------------------- the loop
class DynamicSampler:
    """Runs the rounds of one training generation batch (module docstring).

    ``score(rows)`` generates and scores local rows (the trainer's one-round path); ``more(trainer)``
    returns the next local rows (the prompt feed's ``local_batch``). Rows per group are read from the scored output, so a
    method that trains on part of each group (TTRL's vote/train split) is planned on what it trains."""

    def __init__(self, max_rounds: int, group_size: int, n_groups: int, num_processes: int, process: int):
        if n_groups < 1:
            raise ConfigError(
                f"Dynamic sampling needs a generation batch of at least one whole group of {group_size}; "
                "raise per_device_train_batch_size x steps_per_generation x processes to a multiple of "
                "num_generations."
            )
        self.max_rounds, self.n_groups = max_rounds, n_groups
        self.num_processes, self.process = num_processes, process

    def _row_signal(self, output: dict[str, Any]) -> torch.Tensor:
        """Per local row, whether its advantage is non-zero, gathered from every process (1-D: the
        token-level advantages of an importance-corrected batch differ in width across processes)."""
        return gather(rows_with_signal(output["advantages"]).float())

    def sample(self, trainer, inputs, score, more) -> dict[str, Any]:
        outputs, signals = [], []
        for round_index in range(self.max_rounds):
            rows = inputs if round_index == 0 else more(trainer)
            outputs.append(score(rows))
            row_signal = self._row_signal(outputs[-1])
            per_group = len(row_signal) // self.n_groups  # fewer than G under TTRL's vote/train split
            bins = slot_bins(self.n_groups, per_group, self.num_processes)
            signals.append(group_signal(row_signal, per_group))
            plan = plan_slots(signals, bins)
            if all(source is not None for source in plan):
                break
        generated = len(signals) * self.n_groups
        with_signal = sum(sum(s) for s in signals)
        kept = sum(source is not None for source in plan)
        trainer.log_metric("dynamic/rounds", len(signals))
        trainer.log_metric("dynamic/dropped_groups", generated - with_signal)
        trainer.log_metric("dynamic/kept_groups", kept)
        trainer.log_metric("dynamic/unfilled_groups", self.n_groups - kept)
        return self._assemble(trainer, outputs, plan, per_group)

    def _assemble(self, trainer, outputs: list[dict[str, Any]], plan, per_group: int) -> dict[str, Any]:
        picks, unfilled = [], []
        rows_local = len(outputs[0]["advantages"])
        for slot, source in enumerate(plan):
            round_index, group = source if source is not None else (len(outputs) - 1, slot)
            targets = local_rows(slot, per_group, rows_local, self.process)
            sources = local_rows(group, per_group, rows_local, self.process)
            picks.extend((round_index, i) for i in sources)
            if source is None:
                unfilled.extend(range(len(picks) - len(targets), len(picks)))
        if len(outputs) == 1 and not unfilled:
            return outputs[0]
        pad_id = trainer.processing_class.pad_token_id
        pad_ids = {"prompt_ids": pad_id, "completion_ids": pad_id}
        merged = merge_rounds(outputs, picks, pad_ids)
        mask = merged.get("tool_mask")
        mask = torch.ones_like(merged["completion_mask"]) if mask is None else mask
        if unfilled:  # a uniform group left in an empty slot keeps the shape and stays out of the loss
            mask[unfilled] = 0
            merged["advantages"][unfilled] = 0
        merged["tool_mask"] = mask
        # dapo/bnpo normalise by the trained tokens across processes: count them for the merged batch.
        merged["num_items_in_batch"] = gather((merged["completion_mask"] * mask).sum()).sum()
        return merged
