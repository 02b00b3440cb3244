"""Memory-R+'s proof: does the episodic-memory reward keep a tiny model from collapsing where GRPO does?

Setting: the plain-GRPO collapse measured on this machine (TRL alone, SmolLM2-135M-Instruct,
reasoning-gym ``chain_sum`` of 2-3 one-digit terms, correctness plus a format reward, lr 2e-5, G = 8:
held-out greedy accuracy fell from 0.225 to 0.065 in 20 minutes). Both arms get the same correctness
(``accuracy``, the number in the <answer> tag) and format (``format``: <think> then <answer>) rewards
from the same weights at equal wall budget; the ``memory_r_plus`` arm adds ``episodic_memory``
(exploit + explore, K = 1, window 100, explore after 10 calls: the paper's 50-step warm-up scaled to a
budget of minutes). Same loss for both (``method: grpo``): the arms differ only in the memory reward.

Evaluated greedy and with 4 samples at T = 1.0 on 200 held-out questions before and after. Figures:
``acc_after`` / ``grpo_acc_after`` (greedy), ``collapse_rate`` / ``grpo_collapse_rate`` (share of seeds
whose held-out greedy accuracy ends below its start, or whose completions end up with the format and no
right answer on 90% of questions), ``embed_ms_per_step`` (the memory's cost, ``time/memory``).
Effect: acc_after minus grpo_acc_after.

Measured (3 seeds, 10 min, docs/results.md): with the answer read from the tag, the untrained model
starts at 0.000 (it never writes the tag), so a collapse below the start cannot show here; the lenient
reading of the collapse measured on this machine (start 0.225) is the next setting to try.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RECIPE
from bench.proofs.grpo import accuracy_records, held_out
from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting
from bench.stats import mean_over

INSTRUCTION = "Think inside <think></think>, then give only the final number inside <answer></answer>."
TASK = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}
TASK_REWARDS = [
    {"name": "accuracy", "weight": 1.0, "kwargs": {"extract": "tagged"}},
    {"name": "format", "weight": 0.5, "kwargs": {"tags": ["think", "answer"]}},
]
MEMORY = {
    "name": "episodic_memory",
    "weight": 1.0,
    "kwargs": {"explore": True, "k": 1, "window": 100, "warmup_steps": 10, "extract": "tagged"},
}


def _mean(column: str):
    return lambda r, q: mean_over(r.columns[column], q)


def _collapsed(arm: str):
    """Per seed 1.0 if the arm collapsed: held-out greedy below its start, or format-only completions."""

    def stat(r: Records, q) -> float:
        return r.scalars.get(f"collapsed/{arm}", math.nan)

    return stat


def _scalar(name: str):
    return lambda r, q: r.scalars.get(name, math.nan)


class MemoryProof(Setting):
    name = "memory_r_plus"
    description = (
        "chain_sum (2-3 one-digit terms) with correctness + format rewards, lr 2e-5, G=8 (where plain GRPO "
        "collapsed on this CPU); GRPO vs GRPO + episodic_memory (Memory-R+) from the same weights"
    )
    arms = [
        Arm("memory_r_plus", {"rewards": [*TASK_REWARDS, MEMORY]}),
        Arm("grpo", {"rewards": TASK_REWARDS}),
    ]
    default_budget = "10m"
    headline = ["acc_after", "grpo_acc_after", "collapse_rate", "grpo_collapse_rate", "embed_ms_per_step"]

    def __init__(self) -> None:
        self.figures = [
            Figure("acc_before", BASE, "before", _mean("greedy")),
            Figure("acc_after", "memory_r_plus", "after", _mean("greedy")),
            Figure("grpo_acc_after", "grpo", "after", _mean("greedy")),
            Figure("mean_at_4_after", "memory_r_plus", "after", _mean("mean_at_4")),
            Figure("grpo_mean_at_4_after", "grpo", "after", _mean("mean_at_4")),
            Figure("format_only_after", "memory_r_plus", "after", _mean("format_only")),
            Figure("grpo_format_only_after", "grpo", "after", _mean("format_only")),
            Figure(
                "embed_ms_per_step",
                "memory_r_plus",
                "after",
                _scalar("embed_ms_per_step"),
                per_question=False,
            ),
        ]
        self.effect = ("acc_after", "grpo_acc_after")

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.config import load_recipe

        flags = {
            "model.name_or_path": self.starting_model(ctx),
            "data.generator": "chain_sum",
            "data.generator_kwargs": TASK,
            "data.instruction": INSTRUCTION,
            "data.eval_size": ctx.eval_size,
            "method.name": "grpo",
            "learning_rate": 2e-5,
            "max_completion_length": 48,
            **self.harness_flags(seed, ctx, output_dir),
            **ctx.extra,
            **arm.flags,
        }
        return load_recipe(DEFAULT_RECIPE, flags)

    def prepare(self, ctx: Context) -> None:
        recipe = self.recipe(self.arms[0], 0, ctx, ctx.runs_dir / "prepare")
        ctx.state["eval_ds"] = held_out(recipe)
        ctx.state["max_new_tokens"] = recipe.grpo_config().max_completion_length

    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        from posttrain.rewards import completion_text
        from rewards.format import has_tags

        records = accuracy_records(
            model, tokenizer, ctx.state["eval_ds"], seed, ctx.state["max_new_tokens"], extract="tagged"
        )
        texts = [completion_text(c) for c in records.columns.pop("completion")]
        records.columns["format_only"] = [
            float(has_tags(t, ["think", "answer"]) and not ok)
            for t, ok in zip(texts, records.columns["greedy"])
        ]
        return records

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
        costs = [r["time/memory"] for r in rows if r.get("time/memory") is not None]
        return {"embed_ms_per_step": 1000 * sum(costs) / len(costs)} if costs else {}

    def extra_figures(self, results: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Collapse per arm and seed: greedy accuracy after below before, or format-only on 90%."""
        out: dict[str, Any] = {}
        for arm, key in (("memory_r_plus", "collapse_rate"), ("grpo", "grpo_collapse_rate")):
            flags = []
            for run in results["runs"]:
                if arm not in run["arms"]:
                    continue
                before = run[BASE].columns["greedy"]
                after = run["arms"][arm]["phases"]["after"].columns
                acc_drop = sum(after["greedy"]) < sum(before)
                format_only = sum(after["format_only"]) >= 0.9 * len(after["format_only"])
                flags.append(float(acc_drop or format_only))
            out[key] = sum(flags) / len(flags) if flags else math.nan
            out[f"{key}_per_seed"] = flags
        return out
