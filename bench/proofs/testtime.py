"""TTRL's and TTRV's proof: adapting to unlabeled questions raises accuracy, after minus before.

Setting: ``bench/testtime.py``'s, under the harness. reasoning-gym chain_sum with 2-3 one-digit terms
("Answer with just the number.", answers read as the bare number: ``extract: lenient``), where
SmolLM2-135M's majority over samples at T = 0.7 beats its greedy answer. The model adapts (``posttrain
adapt``'s recipe: LoRA r 16, lr 1e-4, 16 votes per question of which 8 are trained on, T = 0.7, 24
tokens) to 40 unlabeled questions, two per step, so each is voted on several times in the budget and
the majority's flips can be followed (:mod:`posttrain.methods.ttrl.lockin`). Labels are only read to
score.

Evaluated before and after, greedy and 8 samples at T = 0.7 (maj@8): on the 40 adapted questions (the
test set of test-time RL) and on 200 other questions of the same task (held out: does the adaptation
carry over?). Training diagnostics: ``label_accuracy`` (the majority pseudo-label vs the truth, mean
over steps), ``flip_rate`` (share of revisited questions whose majority changed), ``locked_in`` (share
of questions locked in at the end) and ``locked_in_wrong`` (of those, wrong). Effect: greedy accuracy
after minus before on the held-out questions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting

ADAPTED, HELD_OUT = 40, 200
SAMPLES, TEMPERATURE, MAX_TOKENS = 8, 0.7, 24
TASK = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}


def _set_mean(column: str, which: str):
    def stat(r: Records, q) -> float:
        values = [r.columns[column][i] for i in q if r.columns["set"][i] == which]
        return sum(values) / len(values) if values else math.nan

    return stat


def _scalar(name: str):
    return lambda r, q: r.scalars.get(name, math.nan)


class TTRLProof(Setting):
    name = "ttrl"
    reward = "ttrl"
    description = (
        "test-time RL on 40 unlabeled chain_sum questions (2-3 one-digit terms), LoRA, 16 votes / 8 trained, "
        "T=0.7; greedy and maj@8 before/after on them and on 200 held-out questions"
    )
    default_budget = "8m"
    headline = ["greedy_before", "greedy_after", "maj_before", "maj_after", "label_accuracy", "flip_rate"]

    def __init__(self) -> None:
        self.arms = [Arm(self.name, {})]
        arm = self.name
        self.figures = [
            Figure("greedy_before", BASE, "before", _set_mean("greedy", "held_out")),
            Figure("greedy_after", arm, "after", _set_mean("greedy", "held_out")),
            Figure("maj_before", BASE, "before", _set_mean("maj", "held_out")),
            Figure("maj_after", arm, "after", _set_mean("maj", "held_out")),
            Figure("adapted_greedy_before", BASE, "before", _set_mean("greedy", "adapted")),
            Figure("adapted_greedy_after", arm, "after", _set_mean("greedy", "adapted")),
            Figure("adapted_maj_before", BASE, "before", _set_mean("maj", "adapted")),
            Figure("adapted_maj_after", arm, "after", _set_mean("maj", "adapted")),
            Figure("label_accuracy", arm, "after", _scalar("label_accuracy"), per_question=False),
            Figure("flip_rate", arm, "after", _scalar("flip_rate"), per_question=False),
            Figure("locked_in", arm, "after", _scalar("locked_in"), per_question=False),
            Figure("locked_in_wrong", arm, "after", _scalar("locked_in_wrong"), per_question=False),
        ]
        self.effect = ("greedy_after", "greedy_before")

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.methods.ttrl.adapt import build_recipe

        flags = {
            "model": self.starting_model(ctx),
            "reward": self.reward,
            "n_votes": 16,
            "n_train": 8,
            "output_dir": str(output_dir),
            "data.path": None,
            "data.generator": "chain_sum",
            "data.generator_kwargs": TASK,
            "data.size": ADAPTED,
            "data.seed": 1,
            "data.instruction": "Answer with just the number.",
            "extract": "lenient",
            "trainer.per_device_train_batch_size": 32,
            "trainer.temperature": TEMPERATURE,
            "trainer.max_completion_length": MAX_TOKENS,
            "trainer.seed": seed,
            "trainer.max_steps": ctx.max_steps or 10**6,
            "trainer.save_strategy": "no",
            "eval.before": False,
            "eval.after": False,
            "run.plot": False,
            **ctx.extra,
            **arm.flags,
        }
        return build_recipe(None, flags)

    def prepare(self, ctx: Context) -> None:
        import dataclasses

        from posttrain.data import load_datasets

        recipe = self.recipe(self.arms[0], 0, ctx, ctx.runs_dir / "prepare")
        size = min(HELD_OUT, max(ctx.eval_size, 1))
        # The loader's held-out split: other draws, none of them one of the adapted questions.
        train, held_out = load_datasets(dataclasses.replace(recipe.data, eval_size=size))
        adapted, unique = [dict(r) for r in train], [dict(r) for r in held_out]
        ctx.state["rows"] = [(r, "adapted") for r in adapted] + [(r, "held_out") for r in unique]
        ctx.state["report"] = {"adapted": len(adapted), "held_out": len(unique)}

    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        from posttrain.evaluation import evaluate

        rows = [r for r, _ in ctx.state["rows"]]
        result = evaluate(
            model,
            tokenizer,
            rows,
            MAX_TOKENS,
            SAMPLES,
            TEMPERATURE,
            64,
            seed,
            desc="ttrl proof",
            extract="lenient",
        )
        return Records(
            columns={
                "set": [which for _, which in ctx.state["rows"]],
                "greedy": [float(p["correct"]) for p in result.predictions],
                "maj": [float(p["majority_correct"]) for p in result.predictions],
            }
        )

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]

        def series(key: str) -> list[float]:
            return [r[key] for r in rows if r.get(key) is not None]

        out = {}
        for key, name in (("ttrl/label_accuracy", "label_accuracy"), ("ttrl/flip_rate", "flip_rate")):
            values = series(key)
            if values:
                out[name] = sum(values) / len(values)
        for key, name in (("ttrl/locked_in", "locked_in"), ("ttrl/locked_in_wrong", "locked_in_wrong")):
            values = series(key)
            if values:
                out[name] = values[-1]
        return out


class TTRVProof(TTRLProof):
    name = "ttrv"
    reward = "ttrv"
    description = TTRLProof.description.replace("test-time RL", "TTRV (frequency + entropy reward)")
