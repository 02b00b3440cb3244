"""Trainer callbacks: metrics to JSONL, a wall-clock budget, and the end-of-run plot."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)


class MetricsJsonl(TrainerCallback):
    """Appends every logged dict (with ``step``) as one line of ``<output_dir>/metrics.jsonl``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in logs.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": state.global_step, **clean}) + "\n")


class TimeBudget(TrainerCallback, ExportableState):
    """Stops training once the training wall time exceeds ``seconds``. The time spent is saved with
    every checkpoint (``trainer_state.json``), so a resumed run only gets what is left of the budget."""

    def __init__(self, seconds: float, spent: float = 0.0):
        self.seconds = seconds
        self.spent = spent  # before this process started training
        self.start = None

    def state(self) -> dict:
        return {"args": {"seconds": self.seconds}, "attributes": {"spent": self.elapsed()}}

    def elapsed(self) -> float:
        return self.spent + (time.monotonic() - self.start if self.start is not None else 0.0)

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, dict) and state.global_step > 0:  # resumed: the checkpoint's time counts
            self.spent = float(saved.get("attributes", {}).get("spent", 0.0))
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = self.elapsed()
        if elapsed >= self.seconds:
            logger.info(
                "Time budget of %.0f s reached after %d steps: stopping.", self.seconds, state.global_step
            )
            control.should_training_stop = True
        return control


def roll_back_metrics(path: str | Path, step: int) -> int:
    """Resuming from ``checkpoint-<step>``: rows logged after it would be logged again, so move them to
    ``metrics.rolled_back.jsonl`` (kept, never deleted) and keep ``metrics.jsonl`` up to ``step``.
    Returns how many rows moved; the rewrite is atomic (a temporary file renamed over the old one)."""
    path = Path(path)
    if not path.exists():
        return 0
    keep, moved = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row_step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut off by a kill: nothing after it was logged
            moved.append(line)
            continue
        (moved if row_step > step else keep).append(line)
    if moved:
        with open(path.with_name("metrics.rolled_back.jsonl"), "a") as f:
            f.write("".join(line + "\n" for line in moved))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
        logger.info("Resuming at step %d: moved %d later metrics rows to %s.", step, len(moved), f.name)
    return len(moved)


def purge_tensorboard_after(trainer, step: int, output_dir: str | Path) -> None:
    """Resuming from ``checkpoint-<step>``: TensorBoard writes on in the interrupted run's folder and
    discards what that run wrote after ``step`` (``SummaryWriter(purge_step=...)``), so each step shows
    once there, as in metrics.jsonl."""
    import functools

    from transformers.integrations import TensorBoardCallback

    previous = sorted(
        (p for p in (Path(output_dir) / "runs").glob("*") if any(p.glob("events.out.tfevents.*"))),
        key=lambda p: p.stat().st_mtime,
    )
    for callback in trainer.callback_handler.callbacks:
        writer = getattr(callback, "_SummaryWriter", None)  # transformers' writer factory
        if isinstance(callback, TensorBoardCallback) and writer is not None:
            callback._SummaryWriter = functools.partial(writer, purge_step=step + 1)
            if previous and callback.logging_dir is None:
                callback.logging_dir = str(previous[-1])
