"""Preemption: SIGTERM finishes the current step, writes a checkpoint and stops the run cleanly.

Schedulers (SLURM, Kubernetes, spot instances) send SIGTERM some time before they kill a job. On the
first SIGTERM the run finishes the optimizer step it is in, saves a checkpoint (staged and sealed:
:mod:`posttrain.checkpoints`) and ``posttrain train`` exits 0, printing the command that resumes it. A
second SIGTERM exits at once (status 143), for a scheduler or a person who cannot wait. In a
multi-process run the decision is shared: one process told to stop stops them all at the same step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class Preemption(TrainerCallback):
    """Installs the SIGTERM handler for the length of ``trainer.train()``; ``requested`` tells the caller."""

    def __init__(self) -> None:
        self.requested = False
        self.step: int | None = None
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            logger.warning("Second SIGTERM: exiting now, without a checkpoint.")
            os._exit(128 + signum)
        self.requested = True
        logger.warning(
            "SIGTERM: finishing the current step, then writing a checkpoint and stopping "
            "(send SIGTERM again to exit at once)."
        )

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if _any_process(self.requested):
            self.requested = True
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _any_process(flag: bool) -> bool:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    from accelerate import PartialState

    value = torch.tensor([int(flag)], device=PartialState().device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())
