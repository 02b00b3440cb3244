"""GCPO's proof: the group-contrastive mask follows where the behaviour helps (GeometryZero, arXiv 2506.07160).

Setting: a mixture of two task families, with one behaviour and the detector the CPU benchmarks use for
it (writing the computation out, e.g. "36 - 38 = -2"; :data:`DETECTOR`). Answers are read as the last
number (``extract: lenient``), so the behaviour decides the answer:

- ``helps``: reasoning-gym's chain_sum wording ("State the final answer to the following arithmetic
  problem: 36 - 38 ="). Writing the computation is how SmolLM2-135M gets these right.
- ``hurts``: the same wording asking for one of the two numbers (:data:`FAMILY_B`). Writing the
  computation ends on its result, which is the wrong number.

Arms, from the same weights and at equal wall budget: GRPO (accuracy only) and GCPO (accuracy +
``gcpo_contrastive`` with that detector, split by family in the logs + the correctness-gated
``length`` reward, GeometryZero's weights 0.5 and 0.5); the rest of the recipe is the quickstart's.
Same loss for both (``method: grpo``): the arms differ only in GCPO's two rewards.

Figures: the mask's sign per family over training (``mask_pos_rate`` on ``helps``, ``mask_neg_rate`` on
``hurts``, per-run means of the logged shares), the behaviour rate per family on held-out questions
(greedy + 4 samples at T = 0.7) before and after, and held-out accuracy. Effect: the behaviour gap
(rate on ``helps`` minus on ``hurts``) of GCPO after minus GRPO's.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from pathlib import Path

from bench.common import DEFAULT_RECIPE
from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting
from bench.stats import mean_over

# The completion writes the computation out ("36 - 38 = -2", "23 + 16 equals 39"), as in
# bench/compare_methods.py; the digit before the operator keeps "-2" or "The answer is 5." out.
DETECTOR = r"\d\s*[-+*/]\s*\d+\s*(?:=|equals\b)"
INSTRUCTION = "Answer with just the number."
FAMILY_A = "State the final answer to the following arithmetic problem: {a} {op} {b} ="
FAMILY_B = "State the first number of the following arithmetic problem: {a} {op} {b} ="
SAMPLES, TEMPERATURE, MAX_TOKENS = 4, 0.7, 24
EVAL_PER_FAMILY = 100


def make_rows(n: int, seed: int, family_b: str = FAMILY_B) -> list[dict]:
    """``n`` questions, half of each family, two numbers of 1-2 digits, + or -."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, op = rng.randint(1, 99), rng.randint(1, 99), rng.choice("+-")
        if i % 2 == 0:
            q, ans, fam = FAMILY_A.format(a=a, op=op, b=b), (a + b if op == "+" else a - b), "helps"
        else:
            q, ans, fam = family_b.format(a=a, op=op, b=b), a, "hurts"
        rows.append({"question": q, "answer": str(ans), "family": fam})
    return rows


def _family_mean(column: str, family: str):
    def stat(r: Records, q) -> float:
        values = [r.columns[column][i] for i in q if r.columns["family"][i] == family]
        return sum(values) / len(values) if values else math.nan

    return stat


def _gap(r: Records, q) -> float:
    return _family_mean("behaviour", "helps")(r, q) - _family_mean("behaviour", "hurts")(r, q)


def _scalar(name: str):
    return lambda r, q: r.scalars.get(name, math.nan)


class GCPOProof(Setting):
    name = "gcpo"
    description = (
        "two families where writing the computation helps (chain_sum) or hurts (name one of the numbers); "
        "GRPO vs GCPO (mask split by family + correctness-gated length) from the same weights at equal budget"
    )
    arms = [
        Arm(
            "gcpo",
            {
                "rewards": [
                    {"name": "accuracy", "weight": 1.0},
                    {
                        "name": "gcpo_contrastive",
                        "weight": 0.5,
                        "kwargs": {
                            "detector": DETECTOR,
                            "epsilon": 0.05,
                            "extract": "lenient",
                            "rel_tol": 0.0,
                            "split_by": "family",
                        },
                    },
                    # Half the budget: the gated length reward saturates before a completion is cut off.
                    {
                        "name": "length",
                        "weight": 0.5,
                        "kwargs": {"cap": MAX_TOKENS // 2, "correct_only": True},
                    },
                ]
            },
        ),
        Arm("grpo", {"rewards": [{"name": "accuracy", "weight": 1.0}]}),
    ]
    default_budget = "8m"
    headline = [
        "mask_pos_rate",
        "mask_neg_rate",
        "behaviour_helped_after",
        "behaviour_hurt_after",
        "gcpo_after",
        "grpo_after",
    ]

    def __init__(self) -> None:
        self.figures = [
            Figure("mask_pos_rate", "gcpo", "after", _scalar("mask_pos_helps"), per_question=False),
            Figure("mask_neg_rate", "gcpo", "after", _scalar("mask_neg_hurts"), per_question=False),
            Figure("mask_neg_rate_on_helps", "gcpo", "after", _scalar("mask_neg_helps"), per_question=False),
            Figure("mask_pos_rate_on_hurts", "gcpo", "after", _scalar("mask_pos_hurts"), per_question=False),
            Figure("behaviour_helped_before", BASE, "before", _family_mean("behaviour", "helps")),
            Figure("behaviour_helped_after", "gcpo", "after", _family_mean("behaviour", "helps")),
            Figure("grpo_behaviour_helped_after", "grpo", "after", _family_mean("behaviour", "helps")),
            Figure("behaviour_hurt_before", BASE, "before", _family_mean("behaviour", "hurts")),
            Figure("behaviour_hurt_after", "gcpo", "after", _family_mean("behaviour", "hurts")),
            Figure("grpo_behaviour_hurt_after", "grpo", "after", _family_mean("behaviour", "hurts")),
            Figure("behaviour_gap_after", "gcpo", "after", _gap),
            Figure("grpo_behaviour_gap_after", "grpo", "after", _gap),
            Figure("accuracy_before", BASE, "before", lambda r, q: mean_over(r.columns["greedy"], q)),
            Figure("gcpo_after", "gcpo", "after", lambda r, q: mean_over(r.columns["greedy"], q)),
            Figure("grpo_after", "grpo", "after", lambda r, q: mean_over(r.columns["greedy"], q)),
            Figure("gcpo_helps_after", "gcpo", "after", _family_mean("greedy", "helps")),
            Figure("gcpo_hurts_after", "gcpo", "after", _family_mean("greedy", "hurts")),
            Figure("grpo_helps_after", "grpo", "after", _family_mean("greedy", "helps")),
            Figure("grpo_hurts_after", "grpo", "after", _family_mean("greedy", "hurts")),
        ]
        self.effect = ("behaviour_gap_after", "grpo_behaviour_gap_after")

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.config import load_recipe

        data = ctx.state["data_dir"]
        flags = {
            "model.name_or_path": self.starting_model(ctx),
            "data.generator": None,
            "data.generator_kwargs": {},
            "data.path": str(data / "train.jsonl"),
            "data.keep_columns": ["family"],
            "data.eval_size": 0,
            **self.harness_flags(seed, ctx, output_dir),
            **ctx.extra,
            **arm.flags,
        }
        # Half the completion budget, whatever the budget is (the recipe refuses a cap at the budget).
        budget = ctx.extra.get(
            "max_completion_length", ctx.extra.get("trainer.max_completion_length", MAX_TOKENS)
        )
        flags["rewards"] = copy.deepcopy(flags["rewards"])
        for spec in flags["rewards"]:
            if spec["name"] == "length":
                spec["kwargs"]["cap"] = max(1, int(budget) // 2)
        return load_recipe(DEFAULT_RECIPE, flags)

    def prepare(self, ctx: Context) -> None:
        from posttrain.data import DataConfig, load_datasets

        data = ctx.runs_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        ctx.state["data_dir"] = data
        size = int(ctx.extra.pop("train_size", 2000))
        _write(data / "train.jsonl", make_rows(size, seed=1))
        per_family = min(EVAL_PER_FAMILY, max(ctx.eval_size // 2, 1))
        _write(data / "eval.jsonl", make_rows(2 * per_family, seed=2))
        recipe = self.recipe(self.arms[1], 0, ctx, ctx.runs_dir / "prepare")
        cfg = DataConfig(**{**recipe.data.__dict__, "path": str(data / "eval.jsonl")})
        ctx.state["eval_ds"] = load_datasets(cfg)[0]

    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        from posttrain.evaluation import evaluate

        detector = re.compile(DETECTOR, re.DOTALL)
        ds = ctx.state["eval_ds"]
        result = evaluate(model, tokenizer, ds, MAX_TOKENS, SAMPLES, TEMPERATURE, 64, seed, desc="gcpo proof")
        behaviour = []
        for p in result.predictions:
            texts = [p["completion"], *p["samples"]]
            behaviour.append(sum(bool(detector.search(t)) for t in texts) / len(texts))
        return Records(
            columns={
                "family": [r["family"] for r in ds],
                "greedy": [float(p["correct"]) for p in result.predictions],
                "behaviour": behaviour,
            }
        )

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
        out = {}
        for sign in ("pos", "neg"):
            for family in ("helps", "hurts"):
                values = [
                    r[f"gcpo/{family}/mask_{sign}"]
                    for r in rows
                    if r.get(f"gcpo/{family}/mask_{sign}") is not None
                ]
                if values:
                    out[f"mask_{sign}_{family}"] = sum(values) / len(values)
        return out


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
