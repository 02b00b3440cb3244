"""Refresh the tables of docs/results.md from bench/results/methods/<method>.json.

    python bench/results_doc.py            # rewrite every <!-- table:NAME --> ... <!-- /table:NAME --> block
    python bench/results_doc.py --check    # exit 1 if a table is out of date (the test suite runs this)

The prose around the tables (the setting, the probes, why an effect did not show) is written by hand;
the numbers inside the blocks come only from the JSON files that ``bench/methods.py`` writes, so the
document cannot quote a figure that no run produced.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "results.md"
RESULTS = REPO / "bench" / "results" / "methods"
BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- /table:\2 -->)", re.S)


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _is_effect(eff: dict[str, Any]) -> bool:
    return eff["ci_low"] > 0 or eff["ci_high"] < 0


def table(results: dict[str, Any], block: str | None = None) -> str:
    """One method's figures: mean over seeds, 95% interval, per-seed values; then the effect.

    ``block``: the block's (and so the JSON's and PNG's) name, when a variant run of a method is kept
    beside its main run (default: the method's).
    """
    block = block or results["method"]
    if not results.get("complete"):
        return f"_The run in `bench/results/methods/{block}.json` is incomplete._\n"
    lines = [
        f"Seeds {results['seeds']}, {results['budget_seconds'] / 60:g} min of training per arm, "
        f"{results['eval_size']} held-out questions; arms: {', '.join(results['arms'])}.",
        "",
        "| figure | mean | 95% interval | per seed |",
        "|---|---|---|---|",
    ]
    for name, fig in results["figures"].items():
        per_seed = ", ".join(_fmt(v) for v in fig.get("per_seed", []))
        lines.append(
            f"| {name} | {_fmt(fig['mean'])} | [{_fmt(fig['ci_low'])}, {_fmt(fig['ci_high'])}] | {per_seed} |"
        )
    for name, value in results.get("extra", {}).items():
        if isinstance(value, list) and name == "gain_by_minutes":  # GRPO: the gain at each budget
            for p in value:
                per_seed = ", ".join(_fmt(v) for v in p.get("per_seed", []))
                lines.append(
                    f"| gain after {p['minutes']:g} min | {_fmt(p['mean'])} | "
                    f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}] | {per_seed} |"
                )
        elif not isinstance(value, (dict, list)):
            lines.append(f"| {name} | {_fmt(value)} | | |")
    eff = results["effect"]
    verdict = "an effect (the interval excludes 0)" if _is_effect(eff) else "no effect"
    lines += [
        "",
        f"**Effect** `{eff['of']} - {eff['minus']}` = {_fmt(eff['mean'])} "
        f"[{_fmt(eff['ci_low'])}, {_fmt(eff['ci_high'])}]: {verdict}.",
        "",
        f"![{block}](../bench/results/methods/{block}.png)",
        "",
    ]
    return "\n".join(lines)


def summary(names: list[str]) -> str:
    """One line per run of the page (its other blocks, in order): seeds, budget, the effect and its call."""
    lines = ["| run | seeds x budget | effect | mean | 95% interval | call |", "|---|---|---|---|---|---|"]
    for name in names:
        path = RESULTS / f"{name}.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        if not results.get("complete"):
            lines.append(f"| {name} | | | | | not run or incomplete |")
            continue
        eff = results["effect"]
        lines.append(
            f"| {name} | {len(results['seeds'])} x {results['budget_seconds'] / 60:g} min | "
            f"`{eff['of']} - {eff['minus']}` | {_fmt(eff['mean'])} | "
            f"[{_fmt(eff['ci_low'])}, {_fmt(eff['ci_high'])}] | {'an effect' if _is_effect(eff) else 'no effect'} |"
        )
    return "\n".join(lines) + "\n"


def refresh(text: str) -> str:
    """Every table block rewritten from its JSON; the ``summary`` block from all the others."""
    names = [m.group(2) for m in BLOCK.finditer(text) if m.group(2) != "summary"]

    def block(match: re.Match) -> str:
        if match.group(2) == "summary":
            return match.group(1) + summary(names) + match.group(4)
        path = RESULTS / f"{match.group(2)}.json"
        body = table(json.loads(path.read_text()), match.group(2)) if path.exists() else "_Not run yet._\n"
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    new = refresh(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run `python bench/results_doc.py`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"Refreshed {len(BLOCK.findall(new))} tables in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
