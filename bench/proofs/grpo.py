"""GRPO's proof: the demo's setting (recipes/quickstart.yaml), held-out accuracy after minus before.

The embedded SmolLM2-135M-Instruct on reasoning-gym ``chain_sum`` (two terms of 1-2 digits, "Answer with
just the number."), 200 held-out questions disjoint from training, GRPO with the recipe's settings
(lr 3e-5, G = 8, 4 prompts per step, T = 0.7, 24 new tokens, truncated completions masked). Evaluated
greedy and with 4 samples at T = 1.0 before training, at each mark and after the budget. With
``--budget 20m --marks 2.5m 5m 10m`` the gain at 2.5, 5, 10 and 20 minutes gives ``minutes_to_90pct``: the
shortest of those budgets whose gain's interval reaches 90% of the full budget's mean gain, which is
what ``make demo`` trains for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RECIPE
from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting, figure_interval
from bench.stats import mean_over

SAMPLES = 4


def _mean(column: str):
    return lambda r, q: mean_over(r.columns[column], q)


def held_out(recipe) -> Any:
    from posttrain.data import load_datasets

    _, eval_ds = load_datasets(recipe.data)
    return eval_ds


def accuracy_records(model, tokenizer, eval_ds, seed: int, max_new_tokens: int, extract: str = "lenient"):
    """Greedy, mean@4 and maj@4 per held-out question (T = 1.0 samples, seeded)."""
    from posttrain.evaluation import evaluate

    result = evaluate(
        model, tokenizer, eval_ds, max_new_tokens, SAMPLES, 1.0, 64, seed, desc="proof eval", extract=extract
    )
    preds = result.predictions
    return Records(
        columns={
            "greedy": [float(p["correct"]) for p in preds],
            "mean_at_4": [sum(p["samples_correct"]) / SAMPLES for p in preds],
            "maj_at_4": [float(p["majority_correct"]) for p in preds],
            "completion": [p["completion"] for p in preds],
        }
    )


class GRPOProof(Setting):
    name = "grpo"
    description = (
        "recipes/quickstart.yaml: SmolLM2-135M-Instruct, reasoning-gym chain_sum (2 terms, 1-2 digits), "
        "GRPO lr 3e-5, G=8, 4 prompts/step, T=0.7, 24 tokens; 200 held-out questions, greedy and 4 samples "
        "at T=1.0; after minus before"
    )
    arms = [Arm("grpo", {})]
    default_budget = "10m"
    default_marks = ("5m",)
    headline = ["greedy_before", "greedy_after", "mean_at_4_before", "mean_at_4_after", "minutes_to_90pct"]

    def __init__(self) -> None:
        self.figures = [
            Figure("greedy_before", BASE, "before", _mean("greedy")),
            Figure("greedy_after", "grpo", "after", _mean("greedy")),
            Figure("mean_at_4_before", BASE, "before", _mean("mean_at_4")),
            Figure("mean_at_4_after", "grpo", "after", _mean("mean_at_4")),
            Figure("maj_at_4_before", BASE, "before", _mean("maj_at_4")),
            Figure("maj_at_4_after", "grpo", "after", _mean("maj_at_4")),
        ]
        self.effect = ("greedy_after", "greedy_before")

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.config import load_recipe

        flags = {
            "model.name_or_path": self.starting_model(ctx),
            "data.eval_size": ctx.eval_size,
            "eval.before": False,  # the harness evaluates (its clock excludes evaluation)
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
        return accuracy_records(model, tokenizer, ctx.state["eval_ds"], seed, ctx.state["max_new_tokens"])

    def extra_figures(self, results: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """The gain (greedy after minus before) at each mark and at the budget, and ``minutes_to_90pct``."""
        phases = [p for p in results["runs"][0]["arms"]["grpo"]["phases"] if p != "after"]
        points = []
        for phase in [*phases, "after"]:
            minutes = ctx.budget / 60 if phase == "after" else float(phase.rstrip("m"))
            gain = figure_interval(
                results,
                Figure(f"greedy_{phase}", "grpo", phase, _mean("greedy")),
                Figure("greedy_before", BASE, "before", _mean("greedy")),
            )
            points.append({"minutes": minutes, **gain})
        points.sort(key=lambda p: p["minutes"])
        full = points[-1]["mean"]
        target = 0.9 * full
        minutes = next((p["minutes"] for p in points if p["ci_high"] >= target), math.nan)
        by_mean = next((p["minutes"] for p in points if p["mean"] >= target), math.nan)
        return {
            "gain_by_minutes": points,
            "minutes_to_90pct": minutes,
            "minutes_to_90pct_by_mean": by_mean,
            "rule": "shortest budget whose gain interval reaches 90% of the longest budget's mean gain",
        }
