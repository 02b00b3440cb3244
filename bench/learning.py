"""Learning at a fixed wall budget: held-out accuracy before/after GRPO, posttrain vs bare TRL.

    python -m bench.learning                          # quickstart recipe, its own run.time_budget per side
    python -m bench.learning --budget 5m --eval_size 100
    python -m bench.learning --model /tmp/tiny --steps 2 --budget 30 --eval_size 4 --out /tmp/learning.json

Both sides get the same recipe: data (same training rows, same held-out split), ``GRPOConfig``, seed
and wall budget, counted from the start of training and checked after each optimizer step.

- posttrain: ``posttrain.train.run(recipe)`` into ``<runs_dir>/posttrain`` (``--overwrite``), which
  evaluates before and after training itself.
- bare TRL: ``trl.GRPOTrainer`` with a plain reward function (``rewards.math.score`` per row) and a
  wall-budget callback, into ``<runs_dir>/trl``; evaluated before and after with
  ``posttrain.evaluation.evaluate`` and the same settings ``run`` uses (greedy accuracy, plus mean@k
  and maj@k when the recipe's ``eval.num_samples`` > 1).

The before-accuracy is measured once per side (same model, same greedy decoding, so it should agree;
``before_match`` in the JSON says whether it did). Extra ``--key value`` flags go to the recipe of both
sides (e.g. ``--data.size 500``). Writes ``bench/results/learning.json`` (or ``--out``); the last line is
``posttrain_before=<x> posttrain_after=<x> trl_before=<x> trl_after=<x>`` (greedy accuracies).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runnable as `python bench/learning.py`

from bench.common import (  # noqa: E402
    REPO,
    StepTimer,
    WallBudget,
    accuracy,
    add_common_args,
    environment,
    headline,
    recipe_overrides,
    setup_logging,
    write_json,
)

logger = logging.getLogger("bench.learning")

GREEDY = "accuracy_greedy"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "learning")
    parser.add_argument(
        "--budget",
        default=None,
        help="wall budget per side: seconds or e.g. '20m' (default: the recipe's run.time_budget)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="cap on steps (default: the recipe's max_steps)"
    )
    parser.add_argument(
        "--eval_size",
        type=int,
        default=None,
        help="held-out questions (default: the recipe's data.eval_size)",
    )
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=1,
        help="throwaway bare-TRL steps on a fresh model before both sides, so that neither pays the "
        "process's one-off costs (kernel set-up, lazy imports) inside its budget; 0 = none (default 1)",
    )
    parser.add_argument(
        "--runs_dir",
        default=str(REPO / "runs" / "bench_learning"),
        help="where the two training runs go (default: runs/bench_learning, git-ignored)",
    )
    return parser.parse_known_args(argv)


def build_recipe(args: argparse.Namespace, extra: list[str], side: str):
    from posttrain.config import load_recipe

    forced: dict[str, Any] = {
        "output_dir": str(Path(args.runs_dir) / side),
        "overwrite": True,
        "eval.before": True,
        "eval.after": True,
    }
    if args.model:
        forced["model.name_or_path"] = args.model
    if args.budget is not None:
        forced["run.time_budget"] = args.budget
    if args.steps is not None:
        forced["max_steps"] = args.steps
    if args.eval_size is not None:
        forced["data.eval_size"] = args.eval_size
    return load_recipe(args.recipe, recipe_overrides(extra, forced))


# Per-step values kept in the JSON for both sides (TRL's own logs, so they mean the same on each).
CURVE_KEYS = ("step_time", "reward", "rewards/accuracy/mean", "completions/mean_length")


def _curves(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    rows = [r for r in rows if "train_runtime" not in r]
    return {key: [r.get(key) for r in rows] for key in CURVE_KEYS}


def run_posttrain(recipe) -> dict[str, Any]:
    from posttrain.train import run

    summary = run(recipe)
    metrics = Path(summary["output_dir"]) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {
        "output_dir": summary["output_dir"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "before": summary["eval"].get("before"),
        "after": summary["eval"].get("after"),
        "per_step": _curves(rows),
    }


def _trl_trainer(recipe, args, model, tokenizer, train_ds, callbacks=None):
    """What a TRL user writes: a plain GRPOTrainer with the recipe's model, data, LoRA and the same reward."""
    from trl import GRPOTrainer

    return GRPOTrainer(
        model=model,
        reward_funcs=[accuracy],
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=recipe.peft.to_lora_config(),
        callbacks=callbacks,
    )


def warm_up(recipe, steps: int) -> None:
    """A few throwaway bare-TRL steps on a fresh model, outside both budgets (nothing is kept)."""
    from posttrain.data import load_datasets
    from posttrain.models import load_model

    args = recipe.grpo_config()
    args.max_steps, args.save_strategy, args.output_dir = (
        steps,
        "no",
        tempfile.mkdtemp(prefix="bench-warmup-"),
    )
    train_ds, _ = load_datasets(recipe.data)
    model, tokenizer = load_model(recipe.model)
    start = time.monotonic()
    trainer = _trl_trainer(recipe, args, model, tokenizer, train_ds)
    trainer.train()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    logger.info("Warm-up: %d step(s) in %.1f s", steps, time.monotonic() - start)
    del trainer, model
    gc.collect()


def _evaluate(recipe, args, model, tokenizer, eval_ds, name: str) -> dict[str, Any]:
    """The same held-out evaluation ``posttrain.train.run`` uses, so both sides are scored alike."""
    from posttrain.evaluation import held_out

    return held_out(recipe, model, tokenizer, eval_ds, args, name)


def run_trl(recipe) -> dict[str, Any]:
    """What a TRL user writes: load data and model, GRPOTrainer with a reward function and a budget."""
    from posttrain.config import parse_duration
    from posttrain.data import load_datasets
    from posttrain.models import load_model

    out = recipe.output_dir
    out.mkdir(parents=True, exist_ok=True)
    args = recipe.grpo_config()
    train_ds, eval_ds = load_datasets(recipe.data)
    model, tokenizer = load_model(recipe.model)
    before = _evaluate(recipe, args, model, tokenizer, eval_ds, "before")
    timer = StepTimer()
    callbacks = [timer]
    if recipe.run.time_budget is not None:
        callbacks.append(WallBudget(parse_duration(recipe.run.time_budget)))
    trainer = _trl_trainer(recipe, args, model, tokenizer, train_ds, callbacks)
    start = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - start
    after = _evaluate(recipe, args, trainer.model, tokenizer, eval_ds, "after")
    return {
        "output_dir": str(out),
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "before": before,
        "after": after,
        "per_step": _curves(timer.logs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    setup_logging()
    args, extra = parse_args(argv)

    from posttrain.config import parse_duration

    recipes = {side: build_recipe(args, extra, side) for side in ("posttrain", "trl")}
    recipe = recipes["posttrain"]
    budget = recipe.run.time_budget
    logger.info(
        "Budget per side: %s; held-out questions: %s; max_steps: %s",
        budget,
        recipe.data.eval_size,
        recipe.trainer.get("max_steps"),
    )

    if args.warmup_steps > 0:
        warm_up(recipes["trl"], args.warmup_steps)
    logger.info("posttrain side -> %s", recipe.output_dir)
    results = {"posttrain": run_posttrain(recipe)}
    logger.info("bare TRL side -> %s", recipes["trl"].output_dir)
    results["trl"] = run_trl(recipes["trl"])

    before_match = results["posttrain"]["before"] == results["trl"]["before"]
    payload = {
        "benchmark": "learning",
        "config": {
            "recipe_path": args.recipe,
            "recipe": recipe.to_dict(),
            "budget_seconds": parse_duration(budget) if budget is not None else None,
            "order": "posttrain, then trl",
            "warmup_steps": args.warmup_steps,
            "before_eval": "once per side (same model and decoding; compared in before_match)",
            "extra_flags": extra,
            **environment(),
        },
        **results,
        "before_match": before_match,
    }
    write_json(args.out, payload)

    for side in ("posttrain", "trl"):
        r = results[side]
        metrics = ", ".join(
            f"{k} {r['before'][k]:.3f} -> {r['after'][k]:.3f}"
            for k in r["before"]
            if k == GREEDY or k.startswith(("mean@", "maj@"))
        )
        print(f"{side}: {r['steps']} steps in {r['train_seconds']:.0f} s; {metrics}")
    print(
        headline(
            {
                "posttrain_before": results["posttrain"]["before"][GREEDY],
                "posttrain_after": results["posttrain"]["after"][GREEDY],
                "trl_before": results["trl"]["before"][GREEDY],
                "trl_after": results["trl"]["after"][GREEDY],
            }
        )
    )
    return payload


if __name__ == "__main__":
    main()
