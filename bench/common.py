"""Shared pieces of the benchmarks: recipe loading, the bare-TRL reward, timing and budget callbacks.

Nothing here runs on its own; see ``bench/overhead.py`` and ``bench/learning.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from posttrain.verify.math import score

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "quickstart.yaml"
RESULTS = REPO / "bench" / "results"

logger = logging.getLogger("bench")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Options both benchmarks take; anything unknown is passed to the recipe as ``--key value`` flags."""
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="YAML recipe (default: quickstart)")
    parser.add_argument(
        "--model", default=None, help="override model.name_or_path (e.g. a tiny model folder for tests)"
    )
    parser.add_argument("--out", default=str(RESULTS / f"{name}.json"), help="where the JSON result goes")
    parser.epilog = (
        "Any other --key value flag overrides the recipe, as with `posttrain train` (e.g. --data.size 200)."
    )


def recipe_overrides(extra: list[str], forced: dict[str, Any]) -> dict[str, Any]:
    """The user's extra ``--key value`` flags, then ``forced`` (which wins), as ``load_recipe`` overrides.

    ``forced`` is passed as Python values, not re-parsed from text: YAML would read ``no`` as False.
    """
    from posttrain.config import parse_flags

    return {**parse_flags(extra), **forced}


def accuracy(completions, answer=None, verifier=None, **kwargs) -> list[float | None]:
    """The bare-TRL reward: :func:`rewards.math.score` per row, exactly what posttrain's ``accuracy`` scores.

    Written as a TRL user would, without posttrain's plugin wrapper (no output validation, no row-level
    error reports). Named ``accuracy`` so TRL logs it as ``rewards/accuracy/mean`` like posttrain does.
    """
    n = len(completions)
    answers = answer if answer is not None else [None] * n
    verifiers = verifier if verifier is not None else [None] * n
    out = []
    for completion, gold, spec in zip(completions, answers, verifiers):
        if gold is None and not spec:
            out.append(None)  # posttrain's accuracy: not applicable to this row
            continue
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        out.append(score(text, gold, spec))
    return out


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (``on_step_begin`` -> ``on_step_end``) and every logged dict.

    ``step_seconds`` covers generation, scoring, forward/backward and the optimizer step.
    ``cycle_seconds`` is end-to-end between consecutive ``on_step_end`` calls, so it also covers what
    happens between steps (logging, callbacks such as the metrics file, fetching the next batch).
    """

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.cycle_seconds: list[float] = []
        self.logs: list[dict[str, Any]] = []
        self._begin: float | None = None
        self._last_end: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._begin is not None:
            self.step_seconds.append(now - self._begin)
        if self._last_end is not None:
            self.cycle_seconds.append(now - self._last_end)
        self._last_end = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logs.append({"step": state.global_step, **logs})

    def series(self, key: str) -> list[float | None]:
        """One logged value per training step (None where the key is missing)."""
        rows = [row for row in self.logs if "train_runtime" not in row]
        return [_finite(row.get(key)) for row in rows]


class WallBudget(TrainerCallback):
    """Stop training once the wall time since ``on_train_begin`` reaches ``seconds``.

    The same rule as ``posttrain.callbacks.TimeBudget`` (checked after each optimizer step), written out
    here so that the bare-TRL side uses nothing from posttrain's trainer stack.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start >= self.seconds:
            control.should_training_stop = True
        return control


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    logger.info("Wrote %s", path)
    return path


def headline(pairs: dict[str, float]) -> str:
    """The last printed line: ``name=value`` pairs separated by spaces, 3 decimals."""
    return " ".join(f"{name}={value:.3f}" for name, value in pairs.items())


def parse_headline(line: str) -> dict[str, float]:
    """Inverse of :func:`headline` (used by the smoke test and by anyone scraping the output)."""
    out = {}
    for item in line.split():
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"not a name=value pair: {item!r}")
        out[name] = float(value)
    return out


def environment() -> dict[str, Any]:
    """Hardware and library versions, recorded with every benchmark result."""
    import platform

    import torch
    import transformers
    import trl

    from posttrain.models import describe_hardware

    return {
        "hardware": describe_hardware(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }
