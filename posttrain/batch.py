"""What the trainer's hooks see: one scored generation batch, and the signatures of the hooks.

A :class:`ScoredBatch` is gathered from every process, so a prompt's group is whole even when TRL
spreads it over ranks (``process_slice`` is this process's part). The hooks (``posttrain/trainer.py``)::

    Selection         fn(batch, advantages (N,)) -> Selected | None   train on a subset of the rows
    AdvantageTransform fn(advantages (N,), batch) -> (N,)              edit the global advantages
    LossMaskHook      fn(output, batch) -> (B_local, T) mask | None     drop tokens from the loss
    ScoredHook        fn(batch) -> None                                 see every training batch
    LossTransform     fn(loss) -> loss                                  rescale the loss
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ScoredBatch:
    """One generation batch after scoring, gathered from all processes (N rows in total)."""

    rows: list[dict[str, Any]]
    """Dataset rows, ``group_size`` consecutive rows per prompt."""
    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[list[int]]
    rewards_per_func: torch.Tensor
    """(N, F) rewards, NaN where a plugin returned None."""
    reward_names: list[str]
    group_size: int
    process_slice: slice
    """This process's rows within the N."""
    mode: str = "train"
    advantages: torch.Tensor | None = None
    """(N,) final advantages, set after the advantage transforms."""
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def subset(self, keep: torch.Tensor, group_size: int, process_slice: slice) -> ScoredBatch:
        """The rows ``keep`` (global indices, ``group_size`` per prompt), the full batch in ``extra``."""
        rows = keep.tolist()
        return ScoredBatch(
            rows=[self.rows[i] for i in rows],
            prompts=[self.prompts[i] for i in rows],
            completions=[self.completions[i] for i in rows],
            completion_ids=[self.completion_ids[i] for i in rows],
            rewards_per_func=self.rewards_per_func[keep.to(self.rewards_per_func.device)],
            reward_names=self.reward_names,
            group_size=group_size,
            process_slice=process_slice,
            mode=self.mode,
            extra={**self.extra, "votes": self},
        )


@dataclass
class Selected:
    """A selection's answer: train on the rows ``keep`` (global indices, every process keeping the same
    number) with these ``advantages``, ``group_size`` rows per prompt."""

    keep: torch.Tensor
    advantages: torch.Tensor
    group_size: int


def select_rows(output: dict[str, Any], batch: ScoredBatch, chosen: Selected, process_index: int):
    """This process's ``output`` and the gathered ``batch`` cut to the selected rows: (output, batch).

    Every process keeps the same number of rows (``chosen.keep`` holds as many in each process's slice),
    so the new slices are contiguous again; the trained-token count is recounted over all processes.
    """
    from accelerate.utils import gather

    keep, start, stop = chosen.keep, batch.process_slice.start, batch.process_slice.stop
    n_local = stop - start
    local = keep[(keep >= start) & (keep < stop)] - start
    out = {}
    for key, value in output.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n_local:
            out[key] = value[local.to(value.device)]
        elif isinstance(value, list) and len(value) == n_local:
            out[key] = [value[i] for i in local.tolist()]
        else:
            out[key] = value
    mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
    out["num_items_in_batch"] = gather(mask.sum()).sum()  # dapo/bnpo normalise by trained tokens
    new_slice = slice(process_index * len(local), (process_index + 1) * len(local))
    return out, batch.subset(keep, chosen.group_size, new_slice)


Selection = Callable[[ScoredBatch, torch.Tensor], "Selected | None"]
AdvantageTransform = Callable[[torch.Tensor, ScoredBatch], torch.Tensor]
LossMaskHook = Callable[[dict[str, Any], ScoredBatch], "torch.Tensor | None"]
ScoredHook = Callable[[ScoredBatch], None]
LossTransform = Callable[[torch.Tensor], torch.Tensor]
