"""Method homes: everything that makes a method itself lives in one module or folder here.

    grpo.py      GRPO, Dr.GRPO, DAPO: TRL loss presets
    gcpo.py      GCPO (GeometryZero): preset, its four rewards, its recipe checks
    gui_g1.py    GUI-G1's objective: per-sample loss weights, the sequence-sum loss over a constant
    ttrl/        TTRL and TTRV: presets, rewards, the vote/train split; adapt.py: `posttrain adapt`
    spark/       SPARK: preset, rewards, the `spark:` section, the recycler and its prompts (recycle.py,
                 templates.py), judging and reflecting at inference (selfcheck.py)
    memory_r.py  Memory-R and Memory-R+: GRPO + episodic-memory rewards (rewards/memory.py)
    mash/        pay-per-search (MASH): preset, reward, the `search:` section, the tool loop's wiring
                 (rollout.py), the warm start (warmstart.py), its evaluation (evaluate.py)

A method is a :class:`~posttrain.methods.base.Method`: the TRL settings it presets, the rewards it
brings when a recipe lists none, the checks its reference imposes on a recipe, what it installs on the
trainer, and how it is evaluated. :data:`METHODS` maps a recipe's ``method.name`` to it, and
:data:`SECTIONS` maps a recipe section a method brings to its dataclass; both are read lazily, so
importing this package imports no method. docs/methods.md has each method's formulas and sources.

    from posttrain.methods import get_method
    get_method("spark").preset["beta"]      # 0.001
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from posttrain.errors import ConfigError

METHODS: dict[str, str] = {
    "grpo": "posttrain.methods.grpo:GRPO",
    "dr_grpo": "posttrain.methods.grpo:DR_GRPO",
    "dapo": "posttrain.methods.grpo:DAPO",
    "gcpo": "posttrain.methods.gcpo:GCPO",
    "spark": "posttrain.methods.spark:SPARK",
    "ttrl": "posttrain.methods.ttrl:TTRL",
    "ttrv": "posttrain.methods.ttrl:TTRV",
    "mash": "posttrain.methods.mash:MASH",
    "memory_r": "posttrain.methods.memory_r:MEMORY_R",
    "memory_r_plus": "posttrain.methods.memory_r:MEMORY_R_PLUS",
}
"""``method.name`` -> ``module:object`` of its :class:`~posttrain.methods.base.Method`."""

SECTIONS: dict[str, str] = {
    "spark": "posttrain.methods.spark.config:SparkConfig",
    "search": "posttrain.methods.mash.config:SearchConfig",
}
"""Recipe sections a method brings -> ``module:class`` of the section's dataclass."""


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str):
    """The :class:`~posttrain.methods.base.Method` called ``name``; a :class:`ConfigError` naming the valid
    ones (and the closest) otherwise."""
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown method.name {name!r}.{hint} Valid: {', '.join(METHODS)}.")
    return _load(METHODS[name])


def section_class(name: str) -> type:
    """The dataclass of the recipe section ``name`` (one of :data:`SECTIONS`)."""
    return _load(SECTIONS[name])
