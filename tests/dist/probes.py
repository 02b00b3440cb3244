"""Reward plugins that the multi-process tests (tests/test_distributed.py) launch.

A launched ``posttrain.train`` imports this module as ``probes`` (the tests put ``tests/dist`` on
``PYTHONPATH``) from a recipe entry such as ``{name: "probes:EngineProbe", kwargs: {out_dir: ...}}``.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState

from posttrain.rewards import completion_text, group_reward


def _deepspeed_engine():
    """The live DeepSpeed engine of this process, if any: the reward API does not hand out the trainer."""
    try:
        from deepspeed import DeepSpeedEngine
    except ImportError:
        return None
    return next((obj for obj in gc.get_objects() if isinstance(obj, DeepSpeedEngine)), None)


class EngineProbe:
    """Scores 0; on its first call writes ``engine-rank<r>.json`` in ``out_dir`` describing what trains.

    Written from inside the step, after accelerate has wrapped the model, so it records what really ran:
    the distributed type, and for DeepSpeed the engine, its ZeRO stage, optimizer and weight dtype.
    """

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.done = False

    def __call__(self, completions, **kwargs):
        if not self.done:
            self.done = True
            self._write()
        return [0.0] * len(completions)

    def _write(self) -> None:
        import torch

        state = AcceleratorState()
        engine = _deepspeed_engine()
        record = {
            "rank": state.process_index,
            "world_size": state.num_processes,
            "distributed_type": str(state.distributed_type),
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "engine": type(engine).__name__ if engine else None,
            "zero_stage": engine.zero_optimization_stage() if engine else None,
            "optimizer": type(engine.optimizer).__name__ if engine else None,
            "param_dtype": str(next(engine.module.parameters()).dtype) if engine else None,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"engine-rank{state.process_index}.json").write_text(json.dumps(record))


@group_reward
def answer_length_position(completions, group_size, answer, **kwargs):
    """A group-level score in [0, 1] from the row's answer, the completion's length and its position in its group.

    Rows ``[k * G, (k + 1) * G)`` are prompt k's group, so a group that arrived split over processes and
    was put back in another order, or mixed with another prompt's rows, scores differently:
    answer_length_position(["ab", "ab", "abc", "a"], group_size=4, answer=["1"] * 4) == [1.0, 0.0, 2/3, 1/3].
    """
    scores = []
    for i, (completion, ans) in enumerate(zip(completions, answer, strict=True)):
        position = i % group_size
        value = int(ans) + len(completion_text(completion)) + position
        scores.append((value % group_size) / (group_size - 1))
    return scores


def crash_on_rank1(completions, **kwargs):
    """Scores 0 on every process but rank 1, which raises at its first call."""
    if PartialState().process_index == 1:
        raise RuntimeError("crash_on_rank1: rank 1 fails on purpose")
    return [0.0] * len(completions)
