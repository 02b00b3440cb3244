"""Reward plugins used by the trainer and command-line tests.

Importable as ``helpers_plugins`` because pytest puts ``tests/`` on ``sys.path``; a ``posttrain``
subprocess finds it through ``PYTHONPATH=tests`` and a recipe entry ``name: helpers_plugins:boom``.
"""

from __future__ import annotations

import math
import random

from posttrain.rewards import completion_text, group_reward

# Completions each misbehaving plugin saw on its last call, so a test can check the error message.
SEEN: dict[str, list] = {}


class SeededRandom:
    """Random scores from a private seeded RNG: every group has reward variance, so every step learns."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def __call__(self, completions, **kwargs):
        return [self.rng.random() for _ in completions]

    def state_dict(self):  # stateful: a resumed run continues the same random sequence
        version, internal, gauss = self.rng.getstate()
        return {"version": version, "internal": list(internal), "gauss": gauss}

    def load_state_dict(self, state):
        self.rng.setstate((state["version"], tuple(state["internal"]), state["gauss"]))


@group_reward
class GroupRecorder:
    """A group-level reward that records what it is called with and scores rank within the group."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, group_size, **kwargs):
        self.calls.append(
            {
                "group_size": group_size,
                "prompts": list(prompts),
                "completions": list(completions),
                "columns": {k: list(v) for k, v in kwargs.items() if isinstance(v, list)},
            }
        )
        # Score: the completion's position in its group divided by the group size -> varies in a group.
        return [(i % group_size) / group_size for i in range(len(completions))]


class Counter:
    """A stateful per-sample reward: counts its calls; the count is saved with every checkpoint."""

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [float(len(completion_text(c))) for c in completions]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def boom(completions, **kwargs):
    """Raises on every row."""
    SEEN["boom"] = list(completions)
    raise ValueError("boom: cannot score this")


def odd_answer_raises(completions, answer, **kwargs):
    """Raises when any row's reference answer is odd, so run row by row the odd rows fail."""
    if any(int(a) % 2 for a in answer):
        raise ValueError("odd answer")
    return [1.0] * len(completions)


@group_reward
def group_boom(completions, group_size, **kwargs):
    """A group-level reward that raises."""
    raise RuntimeError("group boom")


def short(completions, **kwargs):
    """Returns one score too few."""
    return [1.0] * (len(completions) - 1)


def nan_reward(completions, **kwargs):
    """Returns NaN for every row."""
    SEEN["nan_reward"] = list(completions)
    return [math.nan] * len(completions)


_CALLS = {"n": 0}


def fails_on_third_call(completions, **kwargs):
    """Scores 1.0 twice, then raises (a plugin that breaks mid-run)."""
    _CALLS["n"] += 1
    if _CALLS["n"] >= 3:
        raise RuntimeError("the grader went away")
    return [1.0] * len(completions)


_THIRD = {"n": 0}


def fails_every_third_call(completions, **kwargs):
    """Scores 0.5, except every third call raises (a flaky grader)."""
    _THIRD["n"] += 1
    if _THIRD["n"] % 3 == 0:
        raise RuntimeError("flaky grader")
    return [0.5] * len(completions)


def uniform_when_even(completions, answer, **kwargs):
    """1 for every completion of a question with an even answer (a group without variance); otherwise a
    score from the completion's text (varies within a group of sampled completions)."""
    import zlib

    return [
        1.0 if int(a) % 2 == 0 else zlib.crc32(completion_text(c).encode()) % 97 / 97
        for c, a in zip(completions, answer, strict=True)
    ]


def always_one(completions, **kwargs):
    """The same reward everywhere: no group ever has variance."""
    return [1.0 for _ in completions]
