"""Non-finite losses: the step is skipped and counted; too many in a row stop the run.

A NaN or infinite loss (an overflow, a reward plugin's extreme value, a broken batch) would write NaN
into every weight at the optimizer step. After the backward pass, :class:`NonFiniteGuard` looks at the
loss; if any process's loss is not finite, every process drops its gradients (``grad = None``: torch's
optimizers then leave those weights, their moments and their weight decay untouched), so the step
changes nothing but the learning-rate schedule. It is logged as ``skipped/nonfinite`` (the run's total).
More than ``limit`` such steps in a row raise :class:`~posttrain.errors.TrainingError`; the last
checkpoint, written before them, is intact. Under DeepSpeed the engine steps inside the backward pass,
so there the guard can only count and stop (DeepSpeed skips overflowing fp16 steps itself).
"""

from __future__ import annotations

import logging

import torch

from posttrain.errors import TrainingError

logger = logging.getLogger(__name__)


class NonFiniteGuard:
    def __init__(self, limit: int = 3):
        self.limit = limit
        self.in_a_row = 0
        self.skipped = 0

    def state_dict(self) -> dict:  # checkpointed with the run
        return {"in_a_row": self.in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.in_a_row, self.skipped = int(state["in_a_row"]), int(state["skipped"])

    def after_backward(self, loss: torch.Tensor, model: torch.nn.Module, can_skip: bool = True) -> bool:
        """True when the step may proceed; else the gradients are dropped (``can_skip``) and it is counted."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if all_processes(finite):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        if can_skip:
            for p in model.parameters():
                p.grad = None
        if self.in_a_row > self.limit:
            raise TrainingError(
                f"The loss was NaN or infinite in {self.in_a_row} steps in a row (the limit: "
                f"run.max_nonfinite_steps = {self.limit}); the last checkpoint is intact. Look for an extreme "
                "reward or advantage in metrics.jsonl, lower the learning rate, or train in fp32."
            )
        logger.warning(
            "The loss is not finite: step skipped (%d in a row, %d in all).", self.in_a_row, self.skipped
        )
        return False


def all_processes(flag: bool) -> bool:
    """``flag`` AND-ed over every process (one process's NaN loss reaches every gradient through DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    from accelerate import PartialState

    value = torch.tensor([int(flag)], device=PartialState().device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())
