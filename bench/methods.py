"""Proof of each method: the method and its baseline arm, over seeds, at equal wall budget, with intervals.

    python bench/methods.py --method grpo                 # 3 seeds, the setting's budget, 200 held-out
    python bench/methods.py --method spark --seeds 3 --budget 10m
    python bench/methods.py --method gcpo --seeds 0 1 2 --resume     # finish an interrupted run
    python bench/methods.py --method grpo --model /tmp/tiny --seeds 1 --max_steps 2 --eval_size 8 \\
        --out /tmp/grpo.json --data.size 64                        # smoke run (tests/test_bench.py)

Methods: grpo, spark, mash, gcpo, ttrl, ttrv, memory_r_plus; each setting is ``bench/proofs/<method>.py`` (its docstring
says what the setting is and why). For every seed the starting weights are evaluated once, then each
arm trains from them for the budget (evaluation excluded) and is evaluated after, on the same held-out
questions (:mod:`bench.proofs.harness`). Every figure is the mean over seeds with a 95% bootstrap
interval over seeds and questions (:mod:`bench.stats`); the effect is the method's primary figure minus
its baseline's (grpo, ttrl, ttrv: after minus before), and is called an effect only when its interval
excludes zero.

Writes ``bench/results/methods/<method>.json`` (every figure with its interval and per-seed values, the
seeds, the effect, each run's steps and curve) and ``<method>.png``; the JSON is rewritten after every
arm, so ``--resume`` continues where a killed run stopped. The last line is
``<method>_effect=<x> <method>_ci_low=<x> <method>_ci_high=<x>`` and the method's own figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python bench/methods.py`

from bench.common import REPO, RESULTS, environment, headline, recipe_overrides, setup_logging  # noqa: E402
from bench.proofs.harness import BASE, Context, Records, Setting, plot, report  # noqa: E402

logger = logging.getLogger("bench.methods")

SETTINGS = {
    "grpo": "bench.proofs.grpo:GRPOProof",
    "spark": "bench.proofs.spark:SparkProof",
    "mash": "bench.proofs.mash:MashProof",
    "gcpo": "bench.proofs.gcpo:GCPOProof",
    "ttrl": "bench.proofs.testtime:TTRLProof",
    "ttrv": "bench.proofs.testtime:TTRVProof",
    "memory_r_plus": "bench.proofs.memory:MemoryProof",
    "dynamic_demo": "bench.proofs.dynamic:DynamicDemoProof",  # run by bench/pipeline.py
    "dynamic_ttrl": "bench.proofs.dynamic:DynamicTTRLProof",
    "async_server": "bench.proofs.asynchronous:AsyncProof",  # run by bench/pipeline.py
    "async_latency": "bench.proofs.asynchronous:AsyncLatencyProof",
}


def load_setting(name: str) -> Setting:
    module, _, attr = SETTINGS[name].partition(":")
    return getattr(importlib.import_module(module), attr)()


def parse_duration(text: str) -> float:
    from posttrain.config import parse_duration as parse

    return parse(text)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[3], help="a count (3 -> 0 1 2) or a list")
    parser.add_argument("--budget", help="training wall time per arm (default: the setting's)")
    parser.add_argument("--marks", nargs="*", help="also evaluate at these times (e.g. 5m 10m)")
    parser.add_argument("--eval_size", type=int, default=200, help="held-out questions")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max_steps", type=int, help="cap the steps too (smoke runs)")
    parser.add_argument("--runs_dir", help="scratch folder (default runs/bench_methods/<method>)")
    parser.add_argument("--out", help="JSON path (default bench/results/methods/<method>.json)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    parser.epilog = "Any other --key value flag overrides the setting's recipe (e.g. --data.size 64)."
    return parser.parse_known_args(argv)


def seed_list(values: list[int]) -> list[int]:
    """``--seeds 3`` is a count (seeds 0 1 2); two or more values are the seeds themselves."""
    if len(values) == 1 and values[0] < 1:
        raise SystemExit(
            f"--seeds {values[0]}: one value is a count of seeds and must be at least 1; "
            "to run only seed 0 pass --seeds 1, for chosen seeds list them (--seeds 3 4)"
        )
    return list(range(values[0])) if len(values) == 1 else values


def _load_partial(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    runs = json.loads(path.read_text()).get("runs", [])
    for run in runs:
        run[BASE] = Records.from_dict(run[BASE])
        for arm in run["arms"].values():
            arm["phases"] = {k: Records.from_dict(v) for k, v in arm["phases"].items()}
    return runs


def _serialise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        arms = {
            name: {**arm, "phases": {k: v.to_dict() for k, v in arm["phases"].items()}}
            for name, arm in run["arms"].items()
        }
        out.append({"seed": run["seed"], BASE: run[BASE].to_dict(), "arms": arms})
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    args, extra = parse_args(argv)
    setup_logging()
    setting = load_setting(args.method)
    seeds = seed_list(args.seeds)
    budget = parse_duration(args.budget or setting.default_budget)
    marks = [parse_duration(m) for m in (args.marks if args.marks is not None else setting.default_marks)]
    out = Path(args.out or RESULTS / "methods" / f"{args.method}.json")
    runs_dir = Path(args.runs_dir or REPO / "runs" / "bench_methods" / args.method)
    if not args.resume and runs_dir.exists():
        shutil.rmtree(runs_dir)  # the harness's own scratch folder
    runs_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        model=args.model,
        budget=budget,
        marks=marks,
        eval_size=args.eval_size,
        runs_dir=runs_dir,
        extra=recipe_overrides(extra, {}),
        max_steps=args.max_steps,
    )
    runs = _load_partial(out) if args.resume else []
    done = {(r["seed"], a) for r in runs for a in r["arms"]}
    setting.prepare(ctx)
    if any((seed, arm.name) not in done for seed in seeds for arm in setting.arms):
        setting.warm_up(ctx)
    meta = {
        "method": args.method,
        "setting": setting.description,
        "arms": {arm.name: arm.flags for arm in setting.arms},
        "seeds": seeds,
        "budget_seconds": budget,
        "marks_seconds": marks,
        "eval_size": args.eval_size,
        "model": args.model,
        "extra_flags": extra,
        "environment": environment(),
    }

    def save(complete: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {**meta, "complete": complete, "runs": _serialise(runs)}
        if complete:
            results = {"runs": runs}
            summary = report(setting, results, ctx)
            payload.update(summary["headline"])
            payload.update(
                figures=summary["figures"],
                extra=summary["extra"],
                effect=summary["effect"],
                headline=summary["headline"],
            )
            payload["prepare"] = ctx.state.get("report", {})
            plot(setting, results, summary, out.with_suffix(".png"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        return payload

    for i, seed in enumerate(seeds):
        run = next((r for r in runs if r["seed"] == seed), None)
        if run is None:
            logger.info("Seed %d: evaluating the starting weights", seed)
            run = {"seed": seed, BASE: setting.run_base(seed, ctx), "arms": {}}
            runs.append(run)
            save(False)
        order = setting.arms if i % 2 == 0 else list(reversed(setting.arms))
        for arm in order:
            if (seed, arm.name) in done:
                continue
            logger.info("Seed %d: training arm %s for %.0f s", seed, arm.name, budget)
            run["arms"][arm.name] = setting.run_arm(arm, seed, ctx)
            save(False)
    payload = save(True)
    for name, fig in payload["figures"].items():
        logger.info("%-28s %.3f  [%.3f, %.3f]", name, fig["mean"], fig["ci_low"], fig["ci_high"])
    print(headline(payload["headline"]))
    return payload["headline"]


if __name__ == "__main__":
    main()
