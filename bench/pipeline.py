"""The rollout pipeline, measured side by side: DAPO's dynamic sampling against the same run without it.

Runs the proof harness (bench/methods.py) on two settings of ``bench/proofs/dynamic.py``, each arm from
the same weights at equal wall budget, over seeds, with 95% intervals:

- ``dynamic_demo``: the demo's task (recipes/quickstart.yaml), method dapo with and without dynamic
  sampling;
- ``dynamic_ttrl``: TTRL's proof setting, the same switch.

    python bench/pipeline.py                              # 2 seeds, 5 min per arm (demo), 4 min (TTRL)
    python bench/pipeline.py --seeds 3 --budget 10m --only dynamic_demo
    python bench/pipeline.py --reuse                      # the figures of finished runs, running the rest
    python bench/pipeline.py --model /tmp/tiny --seeds 1 --max_steps 2 --eval_size 8 --methods_dir /tmp/m --out /tmp/p.json

Writes ``bench/results/pipeline.json`` (each setting's headline, the figures are in
``bench/results/methods/dynamic_*.json``). Asynchronous generation (issue 19, part 2) is not built yet,
so its figures are absent. Last line: ``signal_steps_dynamic=<x> signal_steps_plain=<x>
signal_groups_dynamic=<x> signal_groups_plain=<x> dynamic_acc=<x> plain_acc=<x>`` (the demo task),
then the same for the TTRL task with a ``ttrl_`` prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import methods  # noqa: E402
from bench.common import RESULTS, environment, headline, write_json  # noqa: E402

SETTINGS = ("dynamic_demo", "dynamic_ttrl")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="2", help="a count (2 -> 0 1) or a comma-separated list")
    parser.add_argument("--budget", help="training wall time per arm (default: each setting's)")
    parser.add_argument("--only", choices=SETTINGS, help="run one setting")
    parser.add_argument("--out", default=str(RESULTS / "pipeline.json"))
    parser.add_argument(
        "--methods_dir", default=str(RESULTS / "methods"), help="where each setting's JSON goes"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a setting's figures from its finished JSON instead of running it",
    )
    args, extra = parser.parse_known_args(argv)
    seeds = args.seeds.split(",")
    figures: dict[str, float] = {}
    per_setting = {}
    for name in [args.only] if args.only else SETTINGS:
        out = Path(args.methods_dir) / f"{name}.json"
        done = json.loads(out.read_text()) if args.reuse and out.exists() else {}
        if done.get("complete"):
            head = done["headline"]
        else:
            flags = ["--method", name, "--seeds", *seeds, *extra, "--out", str(out)]
            if args.budget:
                flags += ["--budget", args.budget]
            head = methods.main(flags)
        per_setting[name] = head
        prefix = "" if name == "dynamic_demo" else "ttrl_"
        figures.update(
            {
                f"{prefix}signal_steps_dynamic": head["signal_steps"],
                f"{prefix}signal_steps_plain": head["plain_signal_steps"],
                f"{prefix}signal_groups_dynamic": head["signal_groups"],
                f"{prefix}signal_groups_plain": head["plain_signal_groups"],
                f"{prefix}dynamic_acc": head["acc_after"],
                f"{prefix}plain_acc": head["plain_acc_after"],
            }
        )
    write_json(
        args.out, {"settings": per_setting, **figures, "async": "not built", "environment": environment()}
    )
    print(headline(figures))
    return figures


if __name__ == "__main__":
    main()
