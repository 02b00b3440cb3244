"""Framework overhead: the same GRPO steps through bare TRL and through posttrain, side by side.

    python -m bench.overhead                      # quickstart recipe, 6 steps x 3 rounds x 2 sides
    python -m bench.overhead --steps 4 --rounds 2 --model /tmp/tiny --out /tmp/overhead.json

Each round trains a fresh model for ``--steps`` steps with (a) ``trl.GRPOTrainer`` and a plain reward
function and (b) ``posttrain.trainer.PosttrainTrainer`` with the recipe's reward plugins, in that
order (A/B/A/B...), in this one process, with the same ``GRPOConfig`` (the recipe's, with no eval,
no time budget and no checkpoints), the same rows and the same seed. The bare reward calls
``rewards.math.score`` per row, i.e. it computes what posttrain's ``accuracy`` plugin computes, so
only the framework differs. Step time is ``on_step_begin`` -> ``on_step_end``; the first step of each
run is dropped as warm-up. Any extra ``--key value`` flags go to the recipe (e.g. ``--data.size 200``).

Writes ``bench/results/overhead.json`` (or ``--out``); the last printed line is
``overhead_ratio=<median posttrain step / median TRL step>`` (target <= 1.03).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runnable as `python bench/overhead.py`

from bench.common import (  # noqa: E402
    StepTimer,
    accuracy,
    add_common_args,
    environment,
    headline,
    median,
    recipe_overrides,
    setup_logging,
    write_json,
)

logger = logging.getLogger("bench.overhead")

TARGET_RATIO = 1.03
SIDES = ("trl", "posttrain")
# Per-step logged values that must agree when both sides did the same work.
MATCH_KEYS = ("reward", "reward_std", "completions/mean_length")
MATCH_TOL = 1e-5


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "overhead")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (>= 2; default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    args, extra = parser.parse_known_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2: the first step of each run is dropped as warm-up.")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1.")
    return args, extra


def build_recipe(args: argparse.Namespace, extra: list[str], output_dir: str):
    from posttrain.config import load_recipe

    forced: dict[str, Any] = {
        "max_steps": args.steps,
        "save_strategy": "no",
        "output_dir": output_dir,
        "run.time_budget": None,
        "eval.before": False,
        "eval.after": False,
    }
    if args.model:
        forced["model.name_or_path"] = args.model
    return load_recipe(args.recipe, recipe_overrides(extra, forced))


def train_once(side: str, recipe, train_ds, workdir: Path) -> dict[str, Any]:
    """One fresh model trained for ``max_steps`` steps by one side; its timings and logged values."""
    from trl import GRPOTrainer

    from posttrain.callbacks import MetricsJsonl
    from posttrain.models import load_model
    from posttrain.rewards import build_reward_plugins
    from posttrain.trainer import PosttrainTrainer

    model, tokenizer = load_model(recipe.model)
    args = recipe.grpo_config()  # a fresh GRPOConfig per run: PosttrainTrainer writes reward_weights into it
    timer = StepTimer()
    common = dict(
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=recipe.peft.to_lora_config(),
    )
    if side == "trl":
        trainer = GRPOTrainer(model=model, reward_funcs=[accuracy], callbacks=[timer], **common)
    else:
        # As posttrain.train.run builds it (the metrics file included), minus the time budget.
        metrics = workdir / f"metrics-{time.monotonic_ns()}.jsonl"
        trainer = PosttrainTrainer(
            model=model,
            reward_plugins=build_reward_plugins(recipe.rewards),
            callbacks=[timer, MetricsJsonl(metrics)],
            **common,
        )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    result = {
        "side": side,
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "step_seconds": timer.step_seconds,
        "cycle_seconds": timer.cycle_seconds,
        "logged": {key: timer.series(key) for key in (*MATCH_KEYS, "loss")},
    }
    if side == "posttrain":
        result["phase_seconds"] = {
            key: timer.series(key) for key in ("time/gen", "time/reward", "time/adv", "time/update")
        }
    del trainer, model
    gc.collect()
    return result


def compare_logged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Did every run log the same per-step rewards as the first TRL run (same seed, same work)?"""
    reference = runs[0]["logged"]
    worst: dict[str, float] = {}
    match = True
    for run in runs[1:]:
        for key in MATCH_KEYS:
            a, b = reference[key], run["logged"][key]
            if len(a) != len(b) or any((x is None) != (y is None) for x, y in zip(a, b)):
                match = False
                worst[key] = float("inf")
                continue
            diff = max((abs(x - y) for x, y in zip(a, b) if x is not None), default=0.0)
            worst[key] = max(worst.get(key, 0.0), diff)
            match = match and diff <= MATCH_TOL
    return {"match": match, "max_abs_diff": worst, "keys": list(MATCH_KEYS), "tolerance": MATCH_TOL}


def summarise(runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    # Pooled over runs: every step but each run's first (warm-up).
    steps = {side: [s for r in runs if r["side"] == side for s in r["step_seconds"][1:]] for side in SIDES}
    cycles = {side: [s for r in runs if r["side"] == side for s in r["cycle_seconds"][1:]] for side in SIDES}
    med = {side: median(steps[side]) for side in SIDES}
    per_round = []
    for i in range(rounds):
        trl, post = runs[2 * i], runs[2 * i + 1]
        per_round.append(median(post["step_seconds"][1:]) / median(trl["step_seconds"][1:]))
    return {
        "median_step_seconds": med,
        "median_cycle_seconds": {side: median(cycles[side]) for side in SIDES},
        "overhead_ratio": med["posttrain"] / med["trl"],
        "cycle_ratio": median(cycles["posttrain"]) / median(cycles["trl"]),
        "per_round_ratio": per_round,
        "target": TARGET_RATIO,
        "meets_target": med["posttrain"] / med["trl"] <= TARGET_RATIO,
        "timed_steps_per_side": len(steps["trl"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    setup_logging()
    args, extra = parse_args(argv)

    from posttrain.data import load_datasets

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        workdir = Path(tmp)
        recipe = build_recipe(args, extra, str(workdir / "run"))
        train_ds, _ = load_datasets(recipe.data)
        runs = []
        for i in range(args.rounds):
            for side in SIDES:
                logger.info("Round %d/%d: %s, %d steps", i + 1, args.rounds, side, args.steps)
                runs.append({"round": i, **train_once(side, recipe, train_ds, workdir)})
                logger.info(
                    "  %s step times: %s", side, ", ".join(f"{s:.2f}" for s in runs[-1]["step_seconds"])
                )

    summary = summarise(runs, args.rounds)
    logged = compare_logged(runs)
    payload = {
        "benchmark": "overhead",
        "config": {
            "recipe_path": args.recipe,
            "recipe": recipe.to_dict(),
            "steps": args.steps,
            "rounds": args.rounds,
            "order": "trl, posttrain per round",
            "warmup_steps_dropped": 1,
            "extra_flags": extra,
            **environment(),
        },
        **summary,
        "same_work": logged,
        "runs": runs,
    }
    write_json(args.out, payload)

    med = summary["median_step_seconds"]
    print(
        f"median step: trl {med['trl']:.3f} s, posttrain {med['posttrain']:.3f} s "
        f"({summary['timed_steps_per_side']} steps each); per-round ratios "
        f"{', '.join(f'{r:.3f}' for r in summary['per_round_ratio'])}; "
        f"same rewards per step: {'yes' if logged['match'] else 'NO'}"
    )
    print(headline({"overhead_ratio": summary["overhead_ratio"]}))
    return payload


if __name__ == "__main__":
    main()
