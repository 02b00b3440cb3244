"""DAPO's dynamic sampling against the same run without it, at equal wall budget, on two tasks.

Both arms run ``method: dapo`` (token-level loss, clip-higher, overlong filtering and punishment) from
the same weights; they differ only in ``method.dynamic_sampling.enabled``. Dynamic sampling spends wall
time generating extra prompts in place of groups without reward variance, so at equal budget it takes
fewer optimizer steps, each with more groups that carry signal; the question is which wins.

- ``dynamic_demo``: the demo's task and settings (recipes/quickstart.yaml; GRPO's proof setting), 200
  held-out questions, greedy and 4 samples at T = 1.0.
- ``dynamic_ttrl``: TTRL's proof setting (40 unlabeled questions, 16 votes of which 8 are trained, LoRA):
  a group whose trained samples all agree with the majority carries no signal.

Figures per arm: held-out greedy accuracy after (``acc_after`` / ``plain_acc_after``), the share of
optimizer steps with any signal (``signal_steps``: steps not skipped for lack of gradient), the share of
trained groups with signal (``signal_groups``: kept slots for dynamic, groups with reward variance for
plain), optimizer steps taken, and for dynamic the generation rounds per batch. Effect: acc_after minus
plain_acc_after.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.proofs.grpo import GRPOProof
from bench.proofs.harness import BASE, Arm, Context, Figure
from bench.proofs.testtime import TTRLProof, _set_mean
from bench.stats import mean_over

ARMS = [
    Arm("dynamic", {"method.name": "dapo", "method.dynamic_sampling": {"enabled": True, "max_rounds": 4}}),
    Arm("plain", {"method.name": "dapo", "method.dynamic_sampling": {"enabled": False}}),
]


def _scalar(name: str):
    return lambda r, q: r.scalars.get(name, math.nan)


def signal_scalars(output_dir: Path) -> dict[str, float]:
    """From a finished run's metrics.jsonl: steps, the share of steps with signal, the share of trained
    groups with signal, and the mean generation rounds per batch (1 without dynamic sampling)."""
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    if not steps:
        return {}
    skipped = max((r.get("train/skipped_steps") or 0.0) for r in steps)
    if "dynamic/kept_groups" in steps[0]:
        groups = [
            r["dynamic/kept_groups"] / (r["dynamic/kept_groups"] + r["dynamic/unfilled_groups"])
            for r in steps
        ]
        rounds = [r["dynamic/rounds"] for r in steps]
    else:
        groups = [1.0 - r["frac_reward_zero_std"] for r in steps if r.get("frac_reward_zero_std") is not None]
        rounds = [1.0]
    return {
        "steps": float(len(steps)),
        "signal_steps": 1.0 - skipped / len(steps),
        "signal_groups": sum(groups) / len(groups) if groups else math.nan,
        "rounds": sum(rounds) / len(rounds),
    }


def _figures(accuracy) -> list[Figure]:
    out = [
        Figure("acc_before", BASE, "before", accuracy),
        Figure("acc_after", "dynamic", "after", accuracy),
        Figure("plain_acc_after", "plain", "after", accuracy),
    ]
    for arm, prefix in (("dynamic", ""), ("plain", "plain_")):
        for name in ("signal_steps", "signal_groups", "steps", "rounds"):
            out.append(Figure(f"{prefix}{name}", arm, "after", _scalar(name), per_question=False))
    return out


HEADLINE = [
    "acc_after",
    "plain_acc_after",
    "signal_steps",
    "plain_signal_steps",
    "signal_groups",
    "plain_signal_groups",
]


class DynamicDemoProof(GRPOProof):
    name = "dynamic_demo"
    description = (
        "recipes/quickstart.yaml (the demo: SmolLM2-135M-Instruct, chain_sum 2 terms of 1-2 digits, G=8, "
        "4 prompts/step), method dapo with vs without dynamic sampling (max_rounds 4); 200 held-out questions"
    )
    arms = ARMS
    default_budget = "5m"
    default_marks = ()
    headline = HEADLINE

    def __init__(self) -> None:
        self.figures = _figures(lambda r, q: mean_over(r.columns["greedy"], q))
        self.effect = ("acc_after", "plain_acc_after")

    def extra_figures(self, results: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {}

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        return signal_scalars(output_dir)


class DynamicTTRLProof(TTRLProof):
    name = "dynamic_ttrl"
    reward = "ttrl"
    description = (
        "TTRL's proof setting (40 unlabeled chain_sum questions, 16 votes / 8 trained, LoRA, T=0.7), method "
        "dapo's dynamic sampling on vs off (TTRL's loss and majority reward otherwise); held-out greedy"
    )
    default_budget = "4m"
    headline = HEADLINE

    def __init__(self) -> None:
        self.arms = [
            Arm(a.name, {"method.dynamic_sampling": a.flags["method.dynamic_sampling"]}) for a in ARMS
        ]
        self.figures = _figures(_set_mean("greedy", "held_out"))
        self.effect = ("acc_after", "plain_acc_after")

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        return signal_scalars(output_dir)
