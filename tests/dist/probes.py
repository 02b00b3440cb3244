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


def killed_on_rank1(completions, **kwargs):
    """Rank 1 dies by SIGKILL at its first call (an OOM kill, a lost node): no Python error, no goodbye."""
    if PartialState().process_index == 1:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return [0.0] * len(completions)


def _synthetic(answer: str, completion, position: int, group_size: int) -> tuple[str, int]:
    """A deterministic stand-in completion and search count from the row's answer, the real completion's
    length and its position in its group (the tiny random model never answers, searches or draws)."""
    key = int(answer) + len(completion_text(completion)) + position
    aux = "<auxiliary>draw AD</auxiliary>" if position % 2 else ""
    said = answer if key % 3 else "no"
    return f"<think>{aux}</think><answer>{said}</answer>", key % 3


@group_reward
class GcpoProbe:
    """The real ``gcpo_contrastive`` on synthetic completions (:func:`_synthetic`): some groups construct
    and are right more often with it, some less, so the mask takes every sign."""

    def __init__(self):
        from posttrain.rewards import load_reward

        self.reward = load_reward("gcpo_contrastive", epsilon=0.05)

    def __call__(self, completions, group_size, answer, **kwargs):
        texts = [
            _synthetic(a, c, i % group_size, group_size)[0]
            for i, (c, a) in enumerate(zip(completions, answer))
        ]
        return self.reward(completions=texts, group_size=group_size, answer=answer)


@group_reward
class PayPerSearchProbe:
    """The real, stateful ``pay_per_search`` on synthetic completions and search counts (:func:`_synthetic`),
    keyed by question: its history carries from step to step."""

    def __init__(self):
        from posttrain.rewards import load_reward

        self.reward = load_reward("pay_per_search", lam=0.5)

    def __call__(self, completions, group_size, answer, question, **kwargs):
        made = [
            _synthetic(a, c, i % group_size, group_size) for i, (c, a) in enumerate(zip(completions, answer))
        ]
        return self.reward(
            completions=[m[0] for m in made],
            group_size=group_size,
            num_searches=[m[1] for m in made],
            id=list(question),
            answer=answer,
        )

    def state_dict(self):
        return self.reward.state_dict()

    def load_state_dict(self, state):
        self.reward.load_state_dict(state)


class RowProbe:
    """Scores 0; writes, per call, the rows this process scored (``local``) or, as a group reward, the rows
    gathered from every process (``gathered``) to ``<out_dir>/<kind>-rank<r>.jsonl``: prompt text and task."""

    def __init__(self, out_dir: str, kind: str = "local"):
        self.path = Path(out_dir) / f"{kind}-rank{PartialState().process_index}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, completions, prompts, task=None, **kwargs):
        tasks = task if task is not None else [None] * len(completions)
        rows = [
            [p[-1]["content"] if isinstance(p, list) else p, t or "solve"] for p, t in zip(prompts, tasks)
        ]
        with open(self.path, "a") as f:
            f.write(json.dumps(rows) + "\n")
        return [0.0] * len(completions)


@group_reward
class GatheredRowProbe(RowProbe):
    def __init__(self, out_dir: str):
        super().__init__(out_dir, "gathered")


@group_reward
def uniform_when_even(prompts, completions, answer, group_size, **kwargs):
    """Whole groups with an even answer score 1 (no variance: dynamic sampling drops them); the others
    score their position in the group (variance even under greedy decoding)."""
    return [1.0 if int(a) % 2 == 0 else (i % group_size) / group_size for i, a in enumerate(answer)]
