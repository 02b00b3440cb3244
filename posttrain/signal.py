"""Optimizer steps without a gradient signal are skipped, not taken on momentum.

When every advantage of an optimizer step is 0 on the tokens that enter the loss (all groups unanimous,
every importance weight masked, ...) and no KL or entropy term acts, the gradient is exactly 0, yet
AdamW would still move every weight on its momentum for many steps. The step is skipped instead,
decided together on all processes, and counted as ``train/skipped_steps``. Measured
(bench/search.py): without it, one rewarded step followed by 20 zero-reward steps drifted a
warm-started policy out of its answer format.
"""

from __future__ import annotations

from typing import Any

import torch


def has_signal(inputs: dict[str, Any], beta: float, entropy_bonus: bool) -> bool:
    """Whether a micro-batch can produce a non-zero gradient: a token that enters the loss has a non-zero
    (importance-weighted) advantage, or a KL or entropy term acts on its own."""
    if beta != 0.0 or entropy_bonus:
        return True
    mask = (
        inputs["completion_mask"] * inputs["tool_mask"]
        if "tool_mask" in inputs
        else inputs["completion_mask"]
    )
    advantages = inputs["advantages"]
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    return bool(((advantages != 0) & (mask != 0)).any())


class SignalGate:
    """Watches every micro-batch of an optimizer step (:meth:`observe`) and skips the step when none had a
    signal on any process (:meth:`wrap` the optimizer). ``reduce(tensor)`` sums across processes;
    ``log(name, value)`` records ``train/skipped_steps``."""

    def __init__(self, reduce, log):
        self.reduce, self.log = reduce, log
        self.seen = False  # any micro-batch of the current optimizer step with a gradient
        self.skipped_steps = 0

    def state_dict(self) -> dict[str, Any]:  # checkpointed: a resumed run keeps counting
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state["skipped_steps"])

    def observe(self, inputs: dict[str, Any], beta: float, entropy_bonus: bool) -> None:
        self.seen = self.seen or has_signal(inputs, beta, entropy_bonus)

    def wrap(self, optimizer):
        step = optimizer.step

        def step_if_signal(*args, **kwargs):
            seen, self.seen = self.seen, False
            if self.reduce(torch.tensor(float(seen))).item() == 0:  # no process has a gradient
                self.skipped_steps += 1
                self.log("train/skipped_steps", float(self.skipped_steps))
                return None
            return step(*args, **kwargs)

        optimizer.step = step_if_signal
        return optimizer
