"""Trainer values that TRL or torch would reject only once training starts, checked when a recipe loads.

TRL's ``GRPOConfig`` accepts a negative learning rate or a zero temperature; torch's optimizer or the
sampler then fails with a traceback minutes later (or, for a temperature of 0, divides by zero). Each
rule here names the key, the value and what to write instead.

    check_trainer_values({"learning_rate": -1e-5})   # raises ConfigError naming trainer.learning_rate
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from posttrain.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]

_NUMBER = (int, float)


def _at_least(low: float, integer: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, _NUMBER) or not math.isfinite(v):
            return False
        return v >= low and (not integer or float(v).is_integer())

    kind = "a whole number" if integer else "a number"
    return ok, f"{kind} >= {low:g}"


def _above(low: float) -> Rule:
    def ok(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, _NUMBER) and math.isfinite(v) and v > low

    return ok, f"a number > {low:g}"


def _between(low: float, high: float, open_low: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, _NUMBER) or not math.isfinite(v):
            return False
        return (v > low if open_low else v >= low) and v <= high

    bracket = "(" if open_low else "["
    return ok, f"a number in {bracket}{low:g}, {high:g}]"


# key -> (check, what it must be, an example of a good value)
RULES: dict[str, tuple[Rule, str]] = {
    "learning_rate": (_at_least(0), "1e-6"),
    "num_generations": (_at_least(2, integer=True), "8 (GRPO compares completions within a group)"),
    "per_device_train_batch_size": (_at_least(1, integer=True), "8"),
    "gradient_accumulation_steps": (_at_least(1, integer=True), "1"),
    "max_completion_length": (_at_least(1, integer=True), "256"),
    "num_iterations": (_at_least(1, integer=True), "1"),
    "temperature": (_above(0), "1.0 (0 would divide the logits by zero; for greedy use eval)"),
    "top_p": (_between(0, 1, open_low=True), "1.0"),
    "beta": (_at_least(0), "0.0 (no KL) or 0.04"),
    "epsilon": (_at_least(0), "0.2"),
    "weight_decay": (_at_least(0), "0.0"),
    "warmup_steps": (_at_least(0), "0.03 (a ratio) or 30 (steps)"),
    "max_grad_norm": (_at_least(0), "1.0"),
    "logging_steps": (_above(0), "1"),
    "save_steps": (_above(0), "100"),
    "seed": (_at_least(0, integer=True), "0"),
}


def check_trainer_values(kwargs: dict[str, Any]) -> None:
    """Raise one ``ConfigError`` for the first out-of-range value of the ``trainer`` section."""
    for key, ((ok, must), example) in RULES.items():
        value = kwargs.get(key)
        if value is None:
            continue
        if not ok(value):
            raise ConfigError(f"trainer.{key} must be {must}, got {value!r}. For example: --{key} {example}.")
    steps = kwargs.get("max_steps")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or steps == 0 or steps < -1
    ):
        raise ConfigError(
            f"trainer.max_steps must be a positive whole number (or -1: train for num_train_epochs), "
            f"got {steps!r}. For example: --max_steps 100."
        )
