"""What a checkpoint holds besides TRL's: stateful reward plugins and hooks, the prompt queue and feed, counters.

Written as ``posttrain_state.pt`` in every ``checkpoint-N`` folder by the main process and read back on
resume, so that ``--resume`` continues pay-per-search's history, SPARK's queue and the data stream.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

STATE_FILE = "posttrain_state.pt"


def _stateful(hooks) -> dict[str, Any]:
    """Hooks that keep state (a ``state_dict`` method), keyed by position and class name."""
    return {f"{i}:{type(h).__name__}": h for i, h in enumerate(hooks) if hasattr(h, "state_dict")}


def save(folder: str, plugins, queue, feed_state, generations: int, hooks=()) -> None:
    """``feed_state``: the position of the prompt feed to resume from (or None without a feed)."""
    state = {
        "rewards": {p.name: p.state_dict() for p in plugins if p.is_stateful},
        "hooks": {key: hook.state_dict() for key, hook in _stateful(hooks).items()},
        "queue": queue.state_dict() if queue is not None else None,
        "feed": feed_state,
        "generations": generations,
    }
    torch.save(state, os.path.join(folder, STATE_FILE))


def load(folder: str, plugins, queue, feed, hooks=()) -> dict[str, Any] | None:
    """Restore what ``folder`` holds into ``plugins``, ``hooks``, ``queue`` and ``feed``; returns the state
    (or None)."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        return None
    # Never unpickle a checkpoint: plain containers, numbers, strings and tensors only.
    state = torch.load(path, weights_only=True)
    for plugin in plugins:
        if plugin.is_stateful and plugin.name in state["rewards"]:
            plugin.load_state_dict(state["rewards"][plugin.name])
    saved_hooks = state.get("hooks", {})
    for key, hook in _stateful(hooks).items():
        if key in saved_hooks:
            hook.load_state_dict(saved_hooks[key])
    if queue is not None and state.get("queue") is not None:
        queue.load_state_dict(state["queue"])
    if feed is not None and state.get("feed") is not None:
        feed.load_state_dict(state["feed"])
    logger.info("Restored reward-plugin state, the prompt queue and the feed from %s", path)
    return state
