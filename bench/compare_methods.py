"""GRPO vs GCPO (or SPARK) at the same wall budget: held-out accuracy, behaviour share, curves.

    python bench/compare_methods.py                             # CPU: quickstart task, 10 min per arm
    python bench/compare_methods.py --budget 5m --eval_size 100
    python bench/compare_methods.py --model /tmp/tiny --steps 2 --eval_size 4 --out /tmp/gcpo.json

GCPO (GeometryZero, arXiv 2506.07160) is GRPO plus a group-contrastive reward for an optional
behaviour (``gcpo_contrastive``: +1 where, within the group, completions showing it were more often
right, -1 where less) and a length reward for correct completions. Each arm is
``posttrain.train.run(recipe)`` into ``<runs_dir>/<arm>`` with the same model, data, seed, trainer
settings and wall budget (``run.time_budget``); only ``method`` and ``rewards`` differ.

- CPU (the default without CUDA, or ``--device cpu``): ``recipes/quickstart.yaml`` (SmolLM2-135M on
  chain_sum). The behaviour is "writes out the computation" (:data:`DETECTOR`). GRPO: accuracy 1.0.
  GCPO: accuracy 1.0 + gcpo_contrastive 0.5 + length 0.5 (cap = half of max_completion_length,
  correct completions only).
  Neither arm gets a format reward: the 135M model never writes think/answer tags, so it would be
  a constant 0 in both.
- GPU (with CUDA, or ``--device gpu``): ``recipes/gcpo_geometry.yaml``. GCPO: the recipe as is.
  GRPO: its rewards without gcpo_contrastive and length (accuracy + format).

SPARK (``--methods grpo spark``): ``method: spark`` (accuracy on solve prompts + ``spark_judge`` on
the recycled judge/reflection tasks, KL 0.001, the recipe's other trainer settings). After training
every arm is also measured as a judge (``posttrain.methods.spark.selfcheck.judge_eval``: pointwise and pairwise
tasks from its own held-out samples) and with solve -> judge -> reflect (2 rounds, greedy). Writes
``bench/results/spark.json``; the last line is ``grpo_after=<x> spark_after=<x> grpo_judge=<x>
spark_judge=<x> spark_reflect=<x>``.

A throwaway bare-TRL step (``--warmup_steps 1``) runs first, so that the first arm does not pay the
process's one-off start-up inside its budget. The behaviour share is the detector applied to the
held-out predictions (greedy, and the eval samples when ``eval.num_samples`` > 1) before and after.
Writes ``bench/results/gcpo.json`` and ``gcpo.png`` (or ``--out``); the last line is
``grpo_before=<x> grpo_after=<x> gcpo_before=<x> gcpo_after=<x>`` (greedy accuracies).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python bench/compare_methods.py`

from bench.common import (  # noqa: E402
    REPO,
    RESULTS,
    environment,
    headline,
    median,
    recipe_overrides,
    setup_logging,
    write_json,
)

logger = logging.getLogger("bench.compare_methods")

GREEDY = "accuracy_greedy"
BASE_RECIPES = {"cpu": REPO / "recipes" / "quickstart.yaml", "gpu": REPO / "recipes" / "gcpo_geometry.yaml"}

# The CPU behaviour: the completion writes the computation out ("36 - 38 = -2", "23 + 16 equals 39").
# SmolLM2-135M answers chain_sum in two modes: that, or a stock sentence ("The final answer to the
# given arithmetic problem is 1."). On the quickstart's 200 held-out questions (runs of bench/learning,
# recipes/quickstart.yaml), greedy before training: 48% match, right 14.6% of the time, vs 1.0% for
# the rest; at T=1 (800 samples) 19% match, right 8.8% vs 0.0%. So the behaviour helps, and the mask
# should come out +1. After 20 min of plain GRPO the share is 100% greedy and ~98% sampled.
# "equals" catches the spelled-out variant (~1% of samples); the digit before the operator keeps
# "-2" or "The answer is 5." out.
DETECTOR = r"\d\s*[-+*/]\s*\d+\s*(?:=|equals\b)"
GCPO_ONLY = ("gcpo_contrastive", "length")


def _accuracy() -> dict[str, Any]:
    return {"name": "accuracy", "weight": 1.0}


def grpo_arm(base, setting: str) -> tuple[str, list[dict[str, Any]]]:
    """Plain GRPO: the task's rewards without GCPO's two."""
    if setting == "cpu":
        return "grpo", [_accuracy()]
    return "grpo", [dataclasses.asdict(r) for r in base.rewards if r.name not in GCPO_ONLY]


def gcpo_arm(base, setting: str) -> tuple[str, list[dict[str, Any]]]:
    """GCPO: accuracy + group-contrastive behaviour reward + length reward for correct completions."""
    if setting == "gpu":
        return "gcpo", [dataclasses.asdict(r) for r in base.rewards]
    # Half the completion budget: the length reward saturates before a completion is cut off.
    # With cap = the budget only truncated completions earned all of it, and since truncated
    # completions are masked from the loss (mask_truncated_completions) but still raise their group's
    # baseline, every finished completion got a negative advantage: measured, the arm collapsed to
    # 100% truncated 24-token completions (entropy 0) within 30 steps.
    cap = max(1, base.grpo_config().max_completion_length // 2)
    return "gcpo", [
        _accuracy(),
        # The 135M model writes no <answer> tags: correctness read as the accuracy reward reads it.
        {
            "name": "gcpo_contrastive",
            "weight": 0.5,
            "kwargs": {"detector": DETECTOR, "epsilon": 0.05, "extract": "lenient", "rel_tol": 0.0},
        },
        {"name": "length", "weight": 0.5, "kwargs": {"cap": cap, "correct_only": True}},
    ]


def spark_arm(base, setting: str) -> tuple[str, list[dict[str, Any]]]:
    """SPARK: the task's accuracy on solve prompts + spark_judge on the recycled judge/reflection tasks."""
    from posttrain.methods import get_method

    solve = [r for r in grpo_arm(base, setting)[1] if r["name"] != "accuracy"]  # e.g. format on GPU
    rewards = [copy.deepcopy(dict(r)) for r in get_method("spark").rewards]
    if setting == "cpu":  # every arm reads answers alike (SPARK's own reading is the first \boxed{})
        rewards[0]["kwargs"]["extract"] = _accuracy().get("kwargs", {}).get("extract", "lenient")
    return "spark", [*rewards, *solve]


# Arm name -> (base recipe, "cpu" | "gpu") -> (method name, reward entries). The rest of the recipe is shared.
ARMS: dict[str, Callable[[Any, str], tuple[str, list[dict[str, Any]]]]] = {
    "grpo": grpo_arm,
    "gcpo": gcpo_arm,
    "spark": spark_arm,
}
# metrics.jsonl keys (substrings) kept as curves for an arm, besides the common ones below.
ARM_METRICS: dict[str, tuple[str, ...]] = {"gcpo": ("gcpo/",), "spark": ("tasks/", "recycle/")}
# With a spark arm, every arm is also measured as a judge and with self-reflection after training.
SELFCHECK_ROUNDS = 2
JUDGE_SAMPLES = 4
CURVE_KEYS = ("reward", "rewards/accuracy/mean", "completions/mean_length", "step_time")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "gcpo"], choices=list(ARMS))
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="cpu or gpu setting (auto: gpu if CUDA is available)",
    )
    parser.add_argument("--recipe", default=None, help="base recipe (default: quickstart / gcpo_geometry)")
    parser.add_argument("--model", default=None, help="override model.name_or_path (e.g. a tiny model)")
    parser.add_argument(
        "--budget", default=None, help="wall budget per arm (default: 10m on CPU, the recipe's on GPU)"
    )
    parser.add_argument("--steps", type=int, default=None, help="cap on steps (default: the recipe's)")
    parser.add_argument(
        "--eval_size", type=int, default=None, help="held-out questions (CPU default 200; GPU: the recipe's)"
    )
    parser.add_argument("--warmup_steps", type=int, default=1, help="throwaway TRL steps first (0 = none)")
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "bench_methods"), help="where arms run")
    parser.add_argument("--out", default=None, help="JSON result (default: bench/results/<last arm>.json)")
    parser.epilog = "Any other --key value flag overrides the recipe of every arm (e.g. --data.size 500)."
    return parser.parse_known_args(argv)


def build_recipes(args: argparse.Namespace, extra: list[str], setting: str) -> dict[str, Any]:
    """One recipe per arm: the base recipe with the shared overrides, then the arm's method and rewards."""
    from posttrain.config import load_recipe
    from posttrain.rewards import RewardSpec

    forced: dict[str, Any] = {"overwrite": True, "eval.before": True, "eval.after": True}
    if setting == "cpu" or args.eval_size is not None:  # the GPU recipe has its own held-out file
        forced["data.eval_size"] = args.eval_size or 200
    budget = args.budget or ("10m" if setting == "cpu" else None)  # GPU: the recipe's own by default
    if budget is not None:
        forced["run.time_budget"] = budget
    if args.model:
        forced["model.name_or_path"] = args.model
    if args.steps is not None:
        forced["max_steps"] = args.steps
    base = load_recipe(args.recipe or BASE_RECIPES[setting], recipe_overrides(extra, forced))
    recipes = {}
    for arm in args.methods:
        method, rewards = ARMS[arm](base, setting)
        recipes[arm] = dataclasses.replace(
            copy.deepcopy(base),
            method=dataclasses.replace(base.method, name=method),  # keeps its other fields
            rewards=[RewardSpec.from_dict(r) for r in rewards],
            trainer={**base.trainer, "output_dir": str(Path(args.runs_dir) / arm)},
        )
    return recipes


def behaviour_detector(recipes: dict[str, Any], setting: str) -> str | None:
    """The detector of a ``gcpo_contrastive`` reward if an arm has one, so that the share means the same."""
    for recipe in recipes.values():
        for reward in recipe.rewards:
            if reward.name == "gcpo_contrastive":
                return reward.kwargs.get("detector")
    return DETECTOR if setting == "cpu" else None  # None: the default <auxiliary> tag


def behaviour_share(path: Path, detector: Callable[[str], bool]) -> dict[str, float | None]:
    """Share of held-out completions showing the behaviour: greedy, and over the eval samples if any."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    greedy = [detector(r["completion"]) for r in rows]
    samples = [detector(t) for r in rows for t in r.get("samples", [])]
    return {
        "greedy": sum(greedy) / len(greedy) if greedy else None,
        "samples": sum(samples) / len(samples) if samples else None,
    }


def selfcheck(recipe, out: Path) -> dict[str, Any]:
    """The trained model as a judge (pointwise/pairwise on its own held-out samples) and with
    solve -> judge -> reflect (greedy, SPARK's test-time loop), on the held-out split."""
    import random

    import torch

    from posttrain.data import load_datasets
    from posttrain.methods.spark.selfcheck import (
        hf_generator,
        hf_sampler,
        judge_eval,
        reflect_metrics,
        solve_judge_reflect,
    )
    from posttrain.models import load_model

    _, eval_ds = load_datasets(recipe.data)
    rows = [dict(r) for r in eval_ds]
    model, tokenizer = load_model(dataclasses.replace(recipe.model, name_or_path=str(out)))
    tokens = recipe.eval.max_new_tokens or recipe.grpo_config().max_completion_length
    generate = hf_generator(model, tokenizer, tokens, recipe.eval.batch_size, desc="selfcheck")
    torch.manual_seed(recipe.trainer.get("seed", 0))
    sampler = hf_sampler(model, tokenizer, tokens, 1.0, recipe.eval.batch_size)
    judge, _ = judge_eval(generate, rows, JUDGE_SAMPLES, sampler, random.Random(0))
    reflect = reflect_metrics(solve_judge_reflect(generate, rows, SELFCHECK_ROUNDS))
    return {"judge": judge, "reflect": reflect}


def run_arm(
    recipe, arm: str, detector: Callable[[str], bool], with_selfcheck: bool = False
) -> dict[str, Any]:
    from posttrain.train import run

    summary = run(recipe)
    out = Path(summary["output_dir"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "train_runtime" not in r]  # the end-of-training summary row
    extra = ARM_METRICS.get(arm, ())
    keys = [*CURVE_KEYS, *sorted({k for r in rows for k in r if any(p in k for p in extra)})]
    keys += sorted(
        {k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")} - set(keys)
    )
    result = {
        "method": recipe.method.name,
        "rewards": [dataclasses.asdict(r) for r in recipe.rewards],
        "output_dir": str(out),
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "median_step_seconds": median([r["step_time"] for r in rows if r.get("step_time") is not None]),
        "before": summary["eval"]["before"],
        "after": summary["eval"]["after"],
        "behaviour": {
            w: behaviour_share(out / f"eval_{w}_predictions.jsonl", detector) for w in ("before", "after")
        },
        "curves": {"step": [r["step"] for r in rows], **{k: [r.get(k) for r in rows] for k in keys}},
    }
    if with_selfcheck:
        result["selfcheck"] = selfcheck(recipe, out)
    return result


def plot(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Greedy accuracy and behaviour share before/after per arm, and the accuracy reward per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = [
        (axes[0], "held-out greedy accuracy", lambda r, w: r[w][GREEDY]),
        (axes[1], "behaviour share (greedy)", lambda r, w: r["behaviour"][w]["greedy"] or 0.0),
    ]
    for ax, title, value in panels:
        for i, when in enumerate(("before", "after")):
            xs = [a + (i - 0.5) * 0.38 for a in range(len(arms))]
            bars = ax.bar(xs, [value(results[a], when) for a in arms], width=0.38, label=when)
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend()
    ax = axes[2]
    for arm in arms:
        curves = results[arm]["curves"]
        pairs = [(s, v) for s, v in zip(curves["step"], curves["rewards/accuracy/mean"]) if v is not None]
        if pairs:
            steps, values = zip(*pairs)
            smooth = [
                sum(values[max(0, i - 4) : i + 1]) / len(values[max(0, i - 4) : i + 1])
                for i in range(len(values))
            ]
            (line,) = ax.plot(steps, values, alpha=0.3)
            ax.plot(steps, smooth, color=line.get_color(), label=f"{arm} (mean of 5)")
    ax.set_xlabel("step")
    ax.set_title("training reward: accuracy component")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("Wrote %s", path)
    return path


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'arm':<6} {'steps':>5} {'s/step':>6}  {'metric':<20} {'before':>6} -> {'after':<6}")
    for arm, r in results.items():
        names = [k for k in r["before"] if k == GREEDY or k.startswith(("mean@", "maj@"))]
        lines = [(name, r["before"].get(name), r["after"].get(name)) for name in names]
        for kind in ("greedy", "samples"):
            if r["behaviour"]["before"][kind] is not None:
                lines.append(
                    (f"behaviour ({kind})", r["behaviour"]["before"][kind], r["behaviour"]["after"][kind])
                )
        for i, (name, before, after) in enumerate(lines):
            lead = f"{arm:<6} {r['steps']:>5} {r['median_step_seconds']:>6.1f}" if i == 0 else " " * 19
            print(f"{lead}  {name:<20} {_fmt(before):>6} -> {_fmt(after):<6}")
        if "selfcheck" in r:
            judge, reflect = r["selfcheck"]["judge"], r["selfcheck"]["reflect"]
            print(
                f"{'':<19}  after: judge accuracy {judge_accuracy(judge):.3f} (pointwise "
                f"{_fmt(judge.get('pointwise_accuracy'))}, pairwise {_fmt(judge.get('pairwise_accuracy'))}, "
                f"unparsed {_fmt(judge.get('unparsed'))}); greedy {_fmt(reflect.get('accuracy_initial'))} -> "
                f"with reflection {_fmt(reflect.get('accuracy_reflect'))}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    setup_logging()
    args, extra = parse_args(argv)

    import torch

    from posttrain.config import parse_duration
    from rewards.gcpo import make_detector

    setting = args.device if args.device != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    recipes = build_recipes(args, extra, setting)
    detector_spec = behaviour_detector(recipes, setting)
    detector = make_detector(detector_spec)
    first = recipes[args.methods[0]]
    budget = first.run.time_budget
    logger.info(
        "Setting %s; arms %s; budget per arm %s; held-out %s", setting, args.methods, budget, args.eval_size
    )

    if args.warmup_steps > 0:
        from bench.learning import warm_up

        warm_up(first, args.warmup_steps)
    results = {}
    for arm, recipe in recipes.items():
        logger.info("%s arm -> %s", arm, recipe.output_dir)
        results[arm] = run_arm(recipe, arm, detector, with_selfcheck="spark" in args.methods)

    out = Path(args.out) if args.out else RESULTS / f"{args.methods[-1]}.json"
    payload = {
        "benchmark": "compare_methods",
        "config": {
            "setting": setting,
            "recipe_path": str(args.recipe or BASE_RECIPES[setting]),
            "methods": args.methods,
            "order": ", then ".join(args.methods),
            "budget_seconds": parse_duration(budget) if budget is not None else None,
            "eval_size": args.eval_size,
            "detector": detector_spec,
            "warmup_steps": args.warmup_steps,
            "extra_flags": extra,
            "recipe": first.to_dict(),  # the shared settings; each arm's method and rewards are below
            **environment(),
        },
        **results,
        "before_match": len({json.dumps(r["before"], sort_keys=True) for r in results.values()}) == 1,
    }
    write_json(out, payload)
    plot(results, out.with_suffix(".png"))

    print_table(results)
    print(headline(headline_figures(results)))
    return payload


def headline_figures(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """GCPO comparison: before/after greedy accuracy per arm. With a spark arm: after-accuracy, judge
    accuracy (pointwise and pairwise tasks together) per arm, and SPARK's accuracy with reflection."""
    if "spark" not in results:
        return {
            f"{arm}_{when}": results[arm][when][GREEDY] for arm in results for when in ("before", "after")
        }
    figures = {f"{arm}_after": results[arm]["after"][GREEDY] for arm in results}
    for arm, r in results.items():
        figures[f"{arm}_judge"] = judge_accuracy(r["selfcheck"]["judge"])
    figures["spark_reflect"] = results["spark"]["selfcheck"]["reflect"]["accuracy_reflect"] or 0.0
    return figures


def judge_accuracy(judge: dict[str, Any]) -> float:
    """Accuracy over all judge tasks (pointwise and pairwise), 0 when there were none."""
    n_point, n_pair = judge.get("n_pointwise") or 0, judge.get("n_pairwise") or 0
    total = (judge.get("pointwise_accuracy") or 0.0) * n_point + (
        judge.get("pairwise_accuracy") or 0.0
    ) * n_pair
    return total / (n_point + n_pair) if n_point + n_pair else 0.0


if __name__ == "__main__":
    main()
