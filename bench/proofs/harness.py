"""The proof harness: a method and its baseline arm, several seeds, one wall budget, intervals.

``bench/methods.py`` is its command line; each ``bench/proofs/<method>.py`` is a :class:`Setting`. For
every seed the harness evaluates the starting weights once ("before", shared by the arms), then trains
each arm from those weights for the same wall budget and evaluates it ("after", plus any ``marks``
on the way); arms alternate their order from seed to seed, so a machine that slows down over the run
does not favour one arm. Evaluation time is not part of the budget (:class:`BudgetClock`).

A setting's evaluation returns :class:`Records`: per-question columns (one entry per held-out question,
the same questions in every arm and seed) and per-run scalars (e.g. a rate over training steps). A
:class:`Figure` is a statistic of one arm's records at one phase; every figure, and the effect (a
figure of the method arm minus one of the baseline), gets a bootstrap interval over seeds and questions
(:mod:`bench.stats`).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from bench.stats import bootstrap

logger = logging.getLogger("bench.methods")

BASE = "base"  # the arm name of the starting weights (evaluated once per seed, phase "before")


@dataclass
class Records:
    """One evaluation: per-question columns (equal lengths) and per-run scalars."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "scalars": self.scalars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Records:
        return cls(columns=d.get("columns", {}), scalars=d.get("scalars", {}))


@dataclass(frozen=True)
class Figure:
    """``stat(records, question_idx)`` of arm ``arm`` at ``phase``; ``per_question=False`` for a per-run
    scalar (bootstrapped over seeds only)."""

    name: str
    arm: str
    phase: str
    stat: Callable[[Records, np.ndarray], float]
    per_question: bool = True


@dataclass(frozen=True)
class Arm:
    name: str
    flags: dict[str, Any]
    """Recipe overrides of this arm on top of the setting's base flags."""


@dataclass
class Context:
    """What a setting needs from the command line and the harness."""

    model: str
    budget: float  # seconds of training per arm
    marks: list[float]  # seconds at which to evaluate on the way (below the budget)
    eval_size: int
    runs_dir: Path
    extra: dict[str, Any]  # --key value recipe overrides from the command line (smoke tests shrink with them)
    max_steps: int | None = None  # a hard cap on steps (smoke tests)
    state: dict[str, Any] = field(default_factory=dict)  # whatever the setting's prepare() keeps


class Setting:
    """One method's proof. Subclasses set the class attributes and implement :meth:`recipe` and
    :meth:`evaluate`; :meth:`prepare`, :meth:`run_arm` and :meth:`train_scalars` have defaults."""

    name: str = ""
    description: str = ""
    arms: list[Arm] = []
    figures: list[Figure] = []
    effect: tuple[str, str] = ("", "")  # (figure of the method, figure it is compared with)
    headline: list[str] = []  # figures printed on the last line after the effect
    default_budget: str = "10m"
    default_marks: tuple[str, ...] = ()

    def prepare(self, ctx: Context) -> None:
        """Once per harness run, before any seed (build data, warm start, ...)."""

    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        raise NotImplementedError

    def harness_flags(self, seed: int, ctx: Context, output_dir: Path) -> dict[str, Any]:
        """Recipe flags every setting's runs share: the harness evaluates and times (its clock excludes
        evaluation), so the run itself evaluates nothing, has no budget, no plot and no checkpoints."""
        return {
            "output_dir": str(output_dir),
            "seed": seed,
            "eval.before": False,
            "eval.after": False,
            "run.time_budget": None,
            "run.plot": False,
            "save_strategy": "no",
            "max_steps": ctx.max_steps or 10**6,
        }

    def starting_model(self, ctx: Context) -> str:
        return ctx.state.get("start_model", ctx.model)

    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        raise NotImplementedError

    def extra_figures(self, results: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Figures that are not a statistic of one phase (e.g. GRPO's minutes to 90% of its gain);
        numbers here may appear in :attr:`headline`."""
        return {}

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        """Per-run scalars read from a finished run's ``metrics.jsonl`` (default: none)."""
        return {}

    def warm_up(self, ctx: Context) -> None:
        """One throwaway step of the first arm, so that no arm pays the process's one-off start-up
        (first backward, kernel selection) inside its budget."""
        from posttrain.train import run

        out = ctx.runs_dir / "warm_up"
        recipe = self.recipe(self.arms[0], 0, ctx, out)
        recipe.trainer["max_steps"] = 1
        run(recipe)
        shutil.rmtree(out, ignore_errors=True)

    def run_base(self, seed: int, ctx: Context) -> Records:
        """Evaluate the starting weights (phase "before" of every arm of this seed)."""
        from posttrain.models import ModelConfig, load_model

        model, tokenizer = load_model(ModelConfig(name_or_path=self.starting_model(ctx)))
        records = self.evaluate(model, tokenizer, seed, ctx)
        del model
        gc.collect()
        return records

    def run_arm(self, arm: Arm, seed: int, ctx: Context) -> dict[str, Any]:
        """Train ``arm`` from the starting weights for the budget; evaluate at the marks and at the end.

        Returns ``{"phases": {phase: Records}, "steps": n, "train_seconds": s, "curve": [...]}``."""
        from posttrain.train import run

        out = ctx.runs_dir / f"seed{seed}" / arm.name
        if out.exists():
            shutil.rmtree(out)  # the harness's own scratch folder
        recipe = self.recipe(arm, seed, ctx, out)
        clock = BudgetClock(ctx.budget, ctx.marks, lambda model, tok: self.evaluate(model, tok, seed, ctx))
        summary = run(recipe, callbacks=[clock])
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        curve = [
            {"step": m["step"], "reward": m["reward"], "seconds": m.get("step_time")}
            for m in metrics
            if "reward" in m and m.get("reward") is not None
        ]
        phases = dict(clock.records)
        for records in phases.values():
            records.scalars.update(self.train_scalars(out))
        gc.collect()
        return {
            "phases": phases,
            "steps": summary["steps"],
            "train_seconds": clock.trained,
            "curve": curve,
        }


class BudgetClock(TrainerCallback):
    """Stops training after ``budget`` seconds of training (evaluation excluded); evaluates at each mark
    and once at the end, on the trainer's own model, into :attr:`records` (``"5m"``, ..., ``"after"``)."""

    def __init__(self, budget: float, marks: list[float], evaluate: Callable[[Any, Any], Records]):
        self.budget, self.marks, self.evaluate = budget, sorted(m for m in marks if m < budget), evaluate
        self.records: dict[str, Records] = {}
        self.start = 0.0
        self.paused = 0.0
        self.trained = 0.0  # seconds of training when it stopped

    def elapsed(self) -> float:
        return time.monotonic() - self.start - self.paused

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.paused = time.monotonic(), 0.0

    def _evaluate(self, name: str, kwargs: dict[str, Any]) -> None:
        began = time.monotonic()
        model, tokenizer = kwargs["model"], kwargs["processing_class"]
        self.records[name] = self.evaluate(model, tokenizer)
        model.train()
        self.paused += time.monotonic() - began
        logger.info("Evaluated at %s in %.0f s", name, time.monotonic() - began)

    def on_step_end(self, args, state, control, **kwargs):
        while self.marks and self.elapsed() >= self.marks[0]:
            self._evaluate(mark_name(self.marks.pop(0)), kwargs)
        if self.elapsed() >= self.budget:
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.trained = self.elapsed()
        self._evaluate("after", kwargs)


def mark_name(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g}m"


# --------------------------------------------------------------------------------------------------
# Figures and the report
# --------------------------------------------------------------------------------------------------


def _records(results: dict[str, Any], arm: str, phase: str, seed_index: int) -> Records:
    run = results["runs"][seed_index]
    if arm == BASE:
        return run[BASE]
    return run["arms"][arm]["phases"][phase]


def _n_questions(results: dict[str, Any]) -> int:
    run = results["runs"][0]
    candidates = [run[BASE]] + [r for arm in run["arms"].values() for r in arm["phases"].values()]
    for records in candidates:
        if records.columns:
            return len(next(iter(records.columns.values())))
    return 0


def figure_interval(results: dict[str, Any], figure: Figure, minus: Figure | None = None) -> dict[str, Any]:
    """The figure (or ``figure - minus``, paired by seed and question) with its interval and per-seed values."""
    n_seeds = len(results["runs"])
    per_q = figure.per_question or (minus is not None and minus.per_question)

    def one(fig: Figure, s: int, q: np.ndarray) -> float:
        try:
            return float(fig.stat(_records(results, fig.arm, fig.phase, s), q))
        except KeyError:
            return math.nan  # a phase this run did not reach (a mark beyond a short run)

    def value(s: int, q: np.ndarray) -> float:
        v = one(figure, s, q)
        return v - one(minus, s, q) if minus is not None else v

    def estimate(seeds: np.ndarray, questions: np.ndarray) -> float:
        values = [value(int(s), questions) for s in seeds]
        values = [v for v in values if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    n_q = _n_questions(results) if per_q else 0
    ci = bootstrap(estimate, n_seeds, n_q)
    all_q = np.arange(_n_questions(results))
    return {**ci.as_dict(), "per_seed": [value(s, all_q) for s in range(n_seeds)]}


def report(setting: Setting, results: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Every figure with its interval, the effect, the setting's extra figures and the headline pairs."""
    by_name = {f.name: f for f in setting.figures}
    figures = {f.name: figure_interval(results, f) for f in setting.figures}
    extra = setting.extra_figures(results, ctx)
    a, b = setting.effect
    effect = figure_interval(results, by_name[a], by_name[b])
    name = setting.name
    head = {
        f"{name}_effect": effect["mean"],
        f"{name}_ci_low": effect["ci_low"],
        f"{name}_ci_high": effect["ci_high"],
    }
    head.update({k: figures[k]["mean"] if k in figures else extra[k] for k in setting.headline})
    return {"figures": figures, "extra": extra, "effect": {"of": a, "minus": b, **effect}, "headline": head}


def plot(setting: Setting, results: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """Left: training reward per arm (each seed thin, the mean over seeds thick). Right: the figures
    with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, arm in enumerate(setting.arms):
        curves = [run["arms"][arm.name]["curve"] for run in results["runs"] if arm.name in run["arms"]]
        for curve in curves:
            left.plot([c["step"] for c in curve], [c["reward"] for c in curve], color=f"C{i}", alpha=0.25)
        length = min((len(c) for c in curves), default=0)
        if length:
            mean = [np.mean([c[j]["reward"] for c in curves]) for j in range(length)]
            window = 5
            smooth = [np.mean(mean[max(0, j - window + 1) : j + 1]) for j in range(length)]
            left.plot(
                [curves[0][j]["step"] for j in range(length)], smooth, color=f"C{i}", lw=2, label=arm.name
            )
    left.set_xlabel("step")
    left.set_ylabel("training reward")
    left.set_title(f"{setting.name}: training reward ({len(results['runs'])} seeds; thick: mean, smoothed)")
    left.legend()
    names = list(summary["figures"])
    means = [summary["figures"][n]["mean"] for n in names]
    lows = [summary["figures"][n]["ci_low"] for n in names]
    highs = [summary["figures"][n]["ci_high"] for n in names]
    ys = np.arange(len(names))
    err = np.array(
        [[m - lo if math.isfinite(lo) else 0 for m, lo in zip(means, lows)],
         [hi - m if math.isfinite(hi) else 0 for m, hi in zip(means, highs)]]
    )  # fmt: skip
    right.errorbar(means, ys, xerr=err, fmt="o", capsize=3)
    right.set_yticks(ys, names, fontsize=8)
    right.invert_yaxis()
    eff = summary["effect"]
    right.set_title(
        f"figures, mean over seeds and 95% interval\n"
        f"effect {eff['of']} - {eff['minus']} = {eff['mean']:.3f} [{eff['ci_low']:.3f}, {eff['ci_high']:.3f}]",
        fontsize=9,
    )
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
