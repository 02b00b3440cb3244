"""Test-time RL measured: adapt the embedded model to unlabeled questions, accuracy before and after.

    python bench/testtime.py                              # CPU: 60 one-digit sums, 40 steps (~25 min)
    python bench/testtime.py --reward ttrv --steps 20
    python bench/testtime.py --model /tmp/tiny --questions 4 --n_votes 4 --k 4 --steps 1 --out /tmp/t.json

The task is reasoning-gym ``chain_sum`` with two one-digit terms ("Answer with just the number."),
where SmolLM2-135M's majority vote over 16 samples beats its greedy answer (probe, n = 60, temperature
0.7: greedy 0.50, maj@16 0.55, mean@16 0.27). The run is ``posttrain adapt`` itself
(:func:`posttrain.methods.ttrl.adapt.adapt`): the questions' labels are never trained on; they give the
accuracy before/after (greedy, maj@k, mean@k on the same questions) and TTRL's diagnostics
(``ttrl/label_accuracy``: how often the majority pseudo-label is the true answer). A fixed number of
steps, not a wall budget, so a busy machine changes the time and not the result.

Answers are read with ``extract: lenient`` (the bare number the prompt asks for), not TTRL's box-only
reading. Votes and evaluation samples use temperature 0.7: at 1.0 the 135M model's samples are mostly wrong
(mean@16 falls well below the majority's accuracy), so the pseudo-labels would be noise.

Writes ``bench/results/testtime.json`` and ``testtime.png`` (the run's majority-ratio plot); the last
line is ``greedy_before=<x> greedy_after=<x> maj_before=<x> maj_after=<x> label_accuracy=<x>``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python bench/testtime.py`

from bench.common import REPO, RESULTS, environment, headline, setup_logging, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--reward", default="ttrl", choices=["ttrl", "ttrv"])
    parser.add_argument("--questions", type=int, default=60, help="unlabeled questions to adapt to")
    parser.add_argument("--n_votes", type=int, default=16)
    parser.add_argument("--n_train", type=int, default=8)
    parser.add_argument("--k", type=int, default=16, help="samples per question for maj@k before/after")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--questions_per_step", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.7, help="of the votes and the eval samples")
    parser.add_argument("--max_tokens", type=int, default=24)
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "bench_testtime"))
    parser.add_argument("--out", default=str(RESULTS / "testtime.json"))
    args = parser.parse_args(argv)
    setup_logging()

    from posttrain.methods.ttrl.adapt import adapt, build_recipe

    runs = Path(args.runs_dir)
    if runs.exists():
        shutil.rmtree(runs)  # the bench's own scratch folder, recreated every run
    flags = {
        "model": args.model,
        "reward": args.reward,
        "n_votes": args.n_votes,
        "n_train": args.n_train,
        "k": args.k,
        "steps": args.steps,
        "output_dir": str(runs),
        "data.path": None,
        "data.generator": "chain_sum",
        "data.generator_kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        "data.size": args.questions,
        "data.seed": 1,
        "data.instruction": "Answer with just the number.",
        # The task asks for the bare number (the probe above measured the vote with it), so votes read it
        # with the lenient policy; TTRL's own reading is the last \boxed{} only (`extract: boxed`).
        "extract": "lenient",
        "trainer.per_device_train_batch_size": args.n_votes * args.questions_per_step,
        "trainer.learning_rate": args.learning_rate,
        "trainer.temperature": args.temperature,
        "trainer.max_completion_length": args.max_tokens,
        "trainer.save_steps": 10**6,
        "eval.temperature": args.temperature,
    }
    recipe = build_recipe(None, {k: v for k, v in flags.items() if k != "data.path"})
    metrics = adapt(recipe)
    before, after = metrics["before"], metrics["after"]
    k = before["k"]
    figures = {
        "greedy_before": before["accuracy_greedy"],
        "greedy_after": after["accuracy_greedy"],
        "maj_before": before[f"maj@{k}"],
        "maj_after": after[f"maj@{k}"],
        "label_accuracy": metrics.get("train/label_accuracy_mean", float("nan")),
    }
    out = Path(args.out)
    plot = runs / "majority_ratio.png"
    if plot.exists():
        shutil.copy(plot, out.with_suffix(".png"))
    write_json(
        out,
        {
            "task": "reasoning-gym chain_sum, 2 one-digit terms, seed 1",
            "settings": vars(args),
            "headline": figures,
            "metrics": metrics,
            "environment": environment(),
        },
    )
    print(headline(figures))
    return figures


if __name__ == "__main__":
    main()
