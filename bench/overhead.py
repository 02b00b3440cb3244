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

Both sides run the same ``GRPOConfig``; posttrain's own update paths (the recipe's ``update:`` section,
posttrain/update.py: compact LM head, trimmed padding, shared prompts, fused AdamW) are what differs,
so ``same_work`` compares the first step's logged rewards and entropy (the same completions, the same
log-probabilities up to rounding); later steps start from weights that differ by rounding and may
sample differently. Then, on one generation batch of the recipe (``bench/update_profile.py``):
``update_share_padding``, the share of the positions posttrain's update runs that are padding, and
``update_over_ceiling``, its update time over the FLOP ceiling of the batch (every row's prompt counted,
as TRL computes it, over the GEMM peak measured here). ``peak_rss_gb``: ``/usr/bin/time -v`` of
``posttrain train RECIPE --max_steps 3`` with held-out evaluation after training (the demo's recipe
unless ``--recipe``), and the same with every ``update:`` switch off for comparison (``--no_rss``
skips both).

Writes ``bench/results/overhead.json`` (or ``--out``); the last printed line is
``overhead_ratio=<x> update_share_padding=<x> update_over_ceiling=<x> peak_rss_gb=<x>``
(``overhead_ratio`` = median posttrain step / median TRL step; targets <= 0.90, <= 1.5, <= 4).
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
import subprocess
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

TARGET_RATIO = 0.90
SIDES = ("trl", "posttrain")
# Per-step logged values that must agree when both sides did the same work.
MATCH_KEYS = ("reward", "reward_std", "completions/mean_length", "entropy")
MATCH_TOL = 1e-5  # fp32; in bf16 the entropy is compared to BF16_TOL (bf16 keeps 8 bits of mantissa)
BF16_TOL = 2e-2
# Every switch of the recipe's update: section off: what the update computes through TRL's own paths.
UPDATE_OFF = {
    "update.compact_logprobs": False, "update.trim_padding": False, "update.share_prompts": False,
    "update.fused_optimizer": False,
}  # fmt: skip


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "overhead")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (>= 2; default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--no_rss", action="store_true", help="skip the two peak-RSS runs of the recipe")
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
            update=recipe.update,
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
        "bf16": bool(args.bf16),
    }
    if side == "posttrain":
        result["phase_seconds"] = {
            key: timer.series(key) for key in ("time/gen", "time/reward", "time/adv", "time/update")
        }
    del trainer, model
    gc.collect()
    return result


def compare_logged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Did every run log, at its first step, what the first TRL run logged (same seed, same work)?

    The first step's completions come from the same weights on both sides, so rewards must be equal and
    the entropy (from the update's log-probabilities) equal to rounding; later steps are reported only.
    """
    reference = runs[0]["logged"]
    first: dict[str, float] = {}
    later: dict[str, float] = {}
    match = True
    for run in runs[1:]:
        for key in MATCH_KEYS:
            a, b = reference[key], run["logged"][key]
            pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
            if not pairs or len(a) != len(b):
                match = False
                first[key] = float("inf")
                continue
            tol = BF16_TOL if key == "entropy" and run["bf16"] else MATCH_TOL
            first[key] = max(first.get(key, 0.0), abs(pairs[0][0] - pairs[0][1]))
            later[key] = max([later.get(key, 0.0), *(abs(x - y) for x, y in pairs[1:])])
            match = match and first[key] <= tol
    return {
        "match": match,
        "max_abs_diff_first_step": first,
        "max_abs_diff_later_steps": later,
        "keys": list(MATCH_KEYS),
        "tolerance": MATCH_TOL,
        "entropy_tolerance_bf16": BF16_TOL,
    }


def peak_rss_gb(
    recipe_path: str, extra: list[str], model: str | None, flags: dict[str, Any], workdir: Path
) -> float:
    """Peak resident memory of ``posttrain train`` (3 steps, evaluation after training), from /usr/bin/time -v."""
    out = workdir / f"rss-{time.monotonic_ns()}"
    command = [
        "/usr/bin/time", "-v", str(Path(sys.executable).with_name("posttrain")), "train", recipe_path, *extra,
        "--max_steps", "3", "--output_dir", str(out), "--run.time_budget", "null", "--eval.before", "false",
        "--save_strategy", "no", "--run.plot", "false",
    ]  # fmt: skip
    if model:
        command += ["--model.name_or_path", model]
    for key, value in flags.items():
        command += [f"--{key}", str(value).lower()]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"peak-RSS run failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return int(kb.group(1)) / 2**20


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

        # The update on one generation batch: padding and the FLOP ceiling (bench/update_profile.py).
        from bench import update_profile

        batch = update_profile.generate_batch(recipe, train_ds)
        peak, dtype = update_profile.peak_for(recipe)
        update = update_profile.against_ceiling(
            update_profile.measure(recipe, train_ds, batch, repeats=2, only=["posttrain"]), peak
        )
        rss = {}
        if not args.no_rss:
            for name, flags in (("posttrain", {}), ("update_off", UPDATE_OFF)):
                rss[name] = peak_rss_gb(args.recipe, extra, args.model, flags, workdir)
                logger.info("Peak RSS (%s): %.2f GB", name, rss[name])

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
        "update": {**update, "peak_flops": peak, "dtype": str(dtype)},
        "peak_rss_gb": rss,
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
    head = {
        "overhead_ratio": summary["overhead_ratio"],
        "update_share_padding": update["padding_share_posttrain"],
        "update_over_ceiling": update["over_ceiling"]["posttrain"],
    }
    if rss:
        head["peak_rss_gb"] = rss["posttrain"]
    print(headline(head))
    return payload


if __name__ == "__main__":
    main()
