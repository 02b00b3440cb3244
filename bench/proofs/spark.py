"""SPARK's proof: does the policy learn to judge its own answers, against GRPO at equal budget?

Setting: the demo's task (recipes/quickstart.yaml: chain_sum, two terms of 1-2 digits, "Answer with just
the number.", 200 held-out questions), both arms with the recipe's trainer settings; SPARK adds its
recycled judge and reflection tasks (phase schedule, ``spark_judge``), with the answers shown to the
judge read as the task's accuracy reads them (the bare number) and ``spark.verdict_prefix`` so that
SmolLM2-135M's next tokens after the prefix are its verdict (without it, probes found almost no
readable verdict). The GRPO arm is the same run without the recycled tasks. Both start from the same
weights (``--judge_warm_start N`` first trains the judge on N verifier-labelled pointwise tasks from
the base model's own training-set samples, shared by both arms; 0 = none).

Evaluated on the held-out questions (before: the starting weights; after: each arm):

- solve: greedy accuracy, and 4 samples at T = 1.0 (mean@4, maj@4).
- judge: every one of the 4 samples is judged pointwise with the canonical Yes/No template and the
  verdict prefix; ``judge_bacc`` is the balanced accuracy of the verdicts against the verifier (an
  unreadable verdict counts as wrong; a judge that always says "No" scores 0.5). Pairwise: each
  question with a right and a wrong sample is judged in both orders (accuracy, and position bias =
  accuracy with the right answer first minus second).
- ``selfverify_at_n``: of the 4 samples, the majority among those the model itself judged "Yes" (all
  of them when it judged none "Yes"); compared with plain ``maj_at_n`` over the same samples.

Effect: judge_bacc_after (SPARK) minus grpo_judge_bacc_after.

The SPARK arm recycles as SPARK does; the class-balanced variant probed in docs/results.md is the same
run with ``--spark.balance_labels true --spark.pointwise_share 0.5 --judge_warm_start 128`` (recipe
overrides reach both arms; the GRPO arm does not recycle, so they change only SPARK's).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RECIPE
from bench.proofs.grpo import held_out
from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting
from bench.stats import balanced_accuracy, mean_over

PREFIX = "Judgement: \\boxed{"
N = 4  # samples per held-out question


def _mean(column: str):
    return lambda r, q: mean_over(r.columns[column], q)


def _bacc(r: Records, q) -> float:
    labels = [y for i in q for y in r.columns["judge_labels"][i]]
    verdicts = [v for i in q for v in r.columns["judge_verdicts"][i]]
    return balanced_accuracy(labels, verdicts)


def _pairwise(order: str):
    def stat(r: Records, q) -> float:
        values = [v for i in q for v in r.columns[f"pair_{order}"][i]]
        return sum(values) / len(values) if values else math.nan

    return stat


def _position_bias(r: Records, q) -> float:
    return _pairwise("first")(r, q) - _pairwise("second")(r, q)


class SparkProof(Setting):
    name = "spark"
    description = (
        "chain_sum (quickstart), GRPO vs SPARK (recycled pointwise/pairwise/reflection tasks, verdict prefix) "
        "from the same weights at equal wall budget; judge balanced accuracy on the model's own held-out samples"
    )
    arms = [
        Arm(
            "spark",
            {
                "method.name": "spark",
                "rewards": [
                    {"name": "accuracy", "weight": 1.0, "tasks": ["solve"], "kwargs": {"extract": "lenient"}},
                    {"name": "spark_judge", "weight": 1.0},
                ],
                "spark.verdict_prefix": PREFIX,
            },
        ),
        Arm("grpo", {}),
    ]
    default_budget = "10m"
    headline = [
        "judge_bacc_before",
        "judge_bacc_after",
        "grpo_judge_bacc_after",
        "solve_after",
        "grpo_solve_after",
        "selfverify_at_n",
        "maj_at_n",
    ]

    def __init__(self) -> None:
        self.figures = [
            Figure("judge_bacc_before", BASE, "before", _bacc),
            Figure("judge_bacc_after", "spark", "after", _bacc),
            Figure("grpo_judge_bacc_after", "grpo", "after", _bacc),
            Figure("solve_before", BASE, "before", _mean("greedy")),
            Figure("solve_after", "spark", "after", _mean("greedy")),
            Figure("grpo_solve_after", "grpo", "after", _mean("greedy")),
            Figure("selfverify_at_n", "spark", "after", _mean("selfverify")),
            Figure("maj_at_n", "spark", "after", _mean("maj")),
            Figure("grpo_selfverify_at_n", "grpo", "after", _mean("selfverify")),
            Figure("grpo_maj_at_n", "grpo", "after", _mean("maj")),
            Figure("pairwise_acc_after", "spark", "after", _pairwise("both")),
            Figure("grpo_pairwise_acc_after", "grpo", "after", _pairwise("both")),
            Figure("position_bias_after", "spark", "after", _position_bias),
            Figure("judge_readable_after", "spark", "after", _mean("readable")),
            Figure("judge_yes_rate_after", "spark", "after", _mean("yes_rate")),
            Figure("grpo_judge_yes_rate_after", "grpo", "after", _mean("yes_rate")),
        ]
        self.effect = ("judge_bacc_after", "grpo_judge_bacc_after")

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.config import load_recipe

        flags = {
            "model.name_or_path": self.starting_model(ctx),
            "data.eval_size": ctx.eval_size,
            "spark.seed": seed,
            **self.harness_flags(seed, ctx, output_dir),
            **ctx.extra,
            **arm.flags,
        }
        return load_recipe(DEFAULT_RECIPE, flags)

    def prepare(self, ctx: Context) -> None:
        warm = int(ctx.extra.pop("judge_warm_start", 0) or 0)  # a setting option, not a recipe key
        recipe = self.recipe(self.arms[1], 0, ctx, ctx.runs_dir / "prepare")
        ctx.state["eval_ds"] = held_out(recipe)
        ctx.state["max_new_tokens"] = recipe.grpo_config().max_completion_length
        if warm:
            ctx.state["start_model"] = judge_warm_start(recipe, warm, ctx)

    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        return spark_records(model, tokenizer, ctx.state["eval_ds"], seed, ctx.state["max_new_tokens"])


def spark_records(model, tokenizer, eval_ds, seed: int, max_new_tokens: int, prefix: str = PREFIX) -> Records:
    """Per question: greedy correctness, the 4 samples' labels and the model's verdicts on them,
    pairwise results in both orders, maj@4 and self-verified choice (module docstring)."""
    import torch

    from posttrain.evaluation import evaluate, generate
    from posttrain.methods.spark.templates import JUDGE_TEMPLATE, PAIRWISE, chat
    from posttrain.verify.math import get_extractor
    from posttrain.verify.verdict import judge_verdict
    from posttrain.verify.vote import majority_answer

    answer_of = get_extractor("lenient")
    result = evaluate(model, tokenizer, eval_ds, max_new_tokens, N, 1.0, 64, seed, desc="spark proof")
    rows = [dict(r) for r in eval_ds]
    preds = result.predictions
    point_prompts, point_index = [], []
    pair_prompts, pair_index = [], []
    rng = random.Random(seed)
    for i, (row, p) in enumerate(zip(rows, preds)):
        answers = [answer_of(t) for t in p["samples"]]
        for j, answer in enumerate(answers):
            if answer is not None:
                text = JUDGE_TEMPLATE.format(question=row["question"], answer=answer)
                point_prompts.append(chat(text, row, prefix))
                point_index.append((i, j))
        right = next((a for a, ok in zip(answers, p["samples_correct"]) if ok and a is not None), None)
        wrong = next((a for a, ok in zip(answers, p["samples_correct"]) if not ok and a is not None), None)
        if right is not None and wrong is not None:
            template = rng.choice(PAIRWISE)
            for first, (a, b, label) in (("first", (right, wrong, "A")), ("second", (wrong, right, "B"))):
                text = template.format(question=row["question"], answer_a=a, answer_b=b)
                pair_prompts.append(chat(text, row, prefix))
                pair_index.append((i, first, label))
    torch.manual_seed(seed)
    verdict_texts = [t[0] for t in generate(model, tokenizer, point_prompts, 6, desc="judge (pointwise)")]
    pair_texts = [t[0] for t in generate(model, tokenizer, pair_prompts, 6, desc="judge (pairwise)")]
    n = len(rows)
    labels: list[list[bool]] = [[] for _ in range(n)]
    verdicts: list[list[bool | None]] = [[] for _ in range(n)]
    said_yes: list[set[int]] = [set() for _ in range(n)]
    readable = [[] for _ in range(n)]
    for (i, j), text in zip(point_index, verdict_texts):
        v = judge_verdict(text)
        labels[i].append(bool(preds[i]["samples_correct"][j]))
        verdicts[i].append(None if v is None else v == "Yes")
        readable[i].append(v in ("Yes", "No"))
        if v == "Yes":
            said_yes[i].add(j)
    pair_first: list[list[float]] = [[] for _ in range(n)]
    pair_second: list[list[float]] = [[] for _ in range(n)]
    for (i, order, label), text in zip(pair_index, pair_texts):
        (pair_first if order == "first" else pair_second)[i].append(float(judge_verdict(text) == label))
    selfverify, maj = [], []
    for i, (row, p) in enumerate(zip(rows, preds)):
        answers = [answer_of(t) for t in p["samples"]]
        chosen = [answers[j] for j in sorted(said_yes[i])] or answers
        pick, _ = majority_answer(chosen)
        selfverify.append(float(pick is not None and _right(pick, row)))
        maj.append(float(p["majority_correct"]))
    return Records(
        columns={
            "greedy": [float(p["correct"]) for p in preds],
            "mean4": [sum(p["samples_correct"]) / N for p in preds],
            "maj": maj,
            "selfverify": selfverify,
            "judge_labels": labels,
            "judge_verdicts": verdicts,
            "readable": [sum(r) / len(r) if r else math.nan for r in readable],
            "yes_rate": [sum(v is True for v in vs) / len(vs) if vs else math.nan for vs in verdicts],
            "pair_first": pair_first,
            "pair_second": pair_second,
            "pair_both": [a + b for a, b in zip(pair_first, pair_second)],
        }
    )


def _right(answer: str, row: dict[str, Any]) -> bool:
    from posttrain.evaluation import is_correct

    return is_correct(answer, row)


def judge_warm_start(recipe, examples: int, ctx: Context) -> str:
    """Train the judge alone on ``examples`` pointwise tasks labelled by the verifier: the base model's own
    samples on training questions, half right and half wrong (the right half topped up with reference
    answers where the model has too few right samples); returns the saved folder."""
    from posttrain.data import load_datasets
    from posttrain.evaluation import generate, is_correct
    from posttrain.methods.mash.warmstart import Segment, encode, warm_start
    from posttrain.methods.spark.templates import chat, pointwise
    from posttrain.models import load_model
    from posttrain.verify.math import get_extractor

    out = ctx.runs_dir / "judge_warm_start"
    model, tokenizer = load_model(recipe.model)
    train_ds, _ = load_datasets(recipe.data)
    rows = [dict(r) for r in train_ds][: max(examples, 1)]
    samples = generate(model, tokenizer, [r["prompt"] for r in rows], 24, 4, 1.0, 64, "warm-start samples")
    answer_of = get_extractor("lenient")
    rng = random.Random(0)
    right, wrong = [], []
    for row, texts in zip(rows, samples):
        for text in texts:
            answer = answer_of(text)
            if answer is not None:
                (right if is_correct(text, row) else wrong).append((row, answer))
    from_model = len(right)
    # A 135M model is right on ~2% of its samples here: the reference answer (a bare number, as the
    # model's right answers are written) tops the right side up, so the warm start is balanced.
    right += [(row, str(row["answer"])) for row in rows[: max(0, examples // 2 - from_model)]]
    k = min(len(right), len(wrong), examples // 2)
    ctx.state["report"] = {
        "judge_warm_start": {
            "examples": 2 * k,
            "right_from_model": from_model,
            "right_from_reference": len(right) - from_model,
        }
    }
    if k == 0:
        return recipe.model.name_or_path  # nothing to balance: no warm start
    chosen = rng.sample(right, k) + rng.sample(wrong, k)
    encoded = []
    for row, answer in chosen:
        ok = is_correct(answer, row)
        text, label = pointwise(row["question"], answer, ok, rng)
        prompt = chat(text, row, PREFIX)
        encoded.append(encode(tokenizer, prompt, [Segment(f"{label}}}", True)]))
    warm_start(model, tokenizer, encoded, str(out / "tmp"), epochs=1, learning_rate=5e-5)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
