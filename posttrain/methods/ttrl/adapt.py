"""Test-time RL: adapt a model to unlabeled questions with rewards from its agreement with itself.

    posttrain adapt --model embedded --data questions.jsonl --steps 20 --output_dir runs/adapt
    posttrain adapt --model Qwen/Qwen2.5-Math-1.5B --data aime.jsonl --recipe recipes/ttrl_math.yaml \\
        --time_budget 2h --output_dir runs/aime

Every step samples ``n_votes`` completions per question; the group's majority answer (TTRL,
``ttrl_majority``) or each answer's share minus an entropy term (TTRV, ``ttrv_frequency``) is the
reward, and ``n_train`` of the samples are trained on (``method.train_samples``). Labels are never
used for training; when the data has them they are used for diagnostics only (``ttrl/label_accuracy``,
``ttrl/reward_accuracy``) and for accuracy before/after adaptation (greedy and maj@k).

The flags map onto a recipe (``ADAPT_DEFAULTS``, CPU-sized; or ``--recipe`` such as
recipes/ttrl_math.yaml): ``--model`` model.name_or_path, ``--data`` data.path, ``--reward`` method.name,
``--n_votes`` trainer.num_generations, ``--n_train`` method.train_samples, ``--steps`` trainer.max_steps,
``--time_budget`` run.time_budget, ``--lora/--full`` peft.enabled, ``--output_dir`` trainer.output_dir;
any other ``--section.key value`` flag sets that recipe key.

Writes to the output folder, besides what ``posttrain train`` writes (recipe.yaml, metrics.jsonl,
checkpoints): the adapted model (a LoRA adapter by default, ``merged/`` with ``--merge``),
``predictions.jsonl`` (per question: the majority answer of ``k`` samples after adaptation and its
vote share; the greedy answer), ``metrics.json`` (before/after: majority share, and accuracy when
labelled), ``eval_before.json``/``eval_after.json`` with their predictions, and ``majority_ratio.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from posttrain.config import Recipe, load_recipe, parse_flags, read_yaml
from posttrain.errors import DataError, PosttrainError

logger = logging.getLogger(__name__)

# A CPU-sized run of the embedded model: LoRA, 16 votes / 8 trained, one question per step.
# TTRL's GPU settings (64 votes / 32 trained, lr 5e-7 full fine-tuning) are in recipes/ttrl_math.yaml.
ADAPT_DEFAULTS: dict[str, Any] = {
    "model": {"name_or_path": "embedded"},
    "peft": {"enabled": True, "r": 16, "lora_alpha": 32},
    "method": {"name": "ttrl", "train_samples": 8},
    "trainer": {
        "output_dir": "runs/adapt",
        "num_generations": 16,
        "per_device_train_batch_size": 16,
        "max_completion_length": 256,
        "temperature": 1.0,
        "learning_rate": 1.0e-4,
        "lr_scheduler_type": "constant",
        "beta": 0.0,
        "max_steps": 20,
        "save_steps": 10,
        "seed": 0,
    },
    "eval": {"before": True, "after": True, "num_samples": 16, "temperature": 1.0},
}

# Flag of `posttrain adapt` -> recipe key.
FLAG_KEYS = {
    "model": "model.name_or_path",
    "data": "data.path",
    "reward": "method.name",
    "n_votes": "trainer.num_generations",
    "n_train": "method.train_samples",
    "steps": "trainer.max_steps",
    "time_budget": "run.time_budget",
    "output_dir": "trainer.output_dir",
    "k": "eval.num_samples",
    "extract": "extract",  # the test-time reward's answer reading (build_recipe sets its kwarg)
}
REWARDS = ("ttrl", "ttrv")
VOTE_REWARDS = ("ttrl_majority", "ttrv_frequency")


class AdaptationError(PosttrainError):
    """Adaptation cannot usefully go on (e.g. the model never gives a parseable answer)."""


def build_recipe(recipe_path: str | None, flags: dict[str, Any]) -> Recipe:
    """ADAPT_DEFAULTS (or the YAML at ``recipe_path``) < ``flags`` (dotted recipe keys or FLAG_KEYS names).

    ``--n_votes`` without ``--n_train`` trains on half the votes (TTRL's ratio); ``--n_votes`` also sets
    the per-step batch to one question's votes unless the batch size is given.
    """
    sections = read_yaml(recipe_path) if recipe_path else copy.deepcopy(ADAPT_DEFAULTS)
    flags = {FLAG_KEYS.get(k, k): v for k, v in flags.items() if v is not None}
    extract = flags.pop("extract", None)
    method = flags.get("method.name", (sections.get("method") or {}).get("name", "ttrl"))
    if method not in REWARDS:
        raise AdaptationError(
            f"--reward {method!r} is not a test-time reward; use one of {list(REWARDS)} (TTRL majority vote, "
            "TTRV frequency + entropy)."
        )
    votes = flags.get("trainer.num_generations")
    if votes is not None:
        flags.setdefault("method.train_samples", max(2, int(votes) // 2))
        flags.setdefault("eval.num_samples", votes)
        if "trainer.per_device_train_batch_size" not in flags and "per_device_train_batch_size" not in flags:
            flags["trainer.per_device_train_batch_size"] = votes
    recipe = load_recipe(recipe_path or "the adapt defaults", flags, sections=sections)
    if extract is not None:
        from posttrain.verify.math import get_extractor

        get_extractor(extract, "--extract")  # an unknown policy is named before any work
        for spec in recipe.rewards:
            if spec.name in VOTE_REWARDS:
                spec.kwargs["extract"] = extract
    return recipe


def answer_policy(recipe: Recipe) -> str:
    """How the test-time reward reads answers (its ``extract`` kwarg, else the reward's own default), so that
    the before/after votes are read the same way."""
    import inspect

    from posttrain.rewards import load_reward

    for spec in recipe.rewards:
        if spec.name in VOTE_REWARDS:
            if "extract" in spec.kwargs:
                return spec.kwargs["extract"]
            fn = load_reward(spec.name)
            return inspect.signature(fn).parameters["extract"].default
    return "lenient"


def resolve_labels(recipe: Recipe) -> Recipe:
    """Labels are optional: without the answer column, the run is unlabeled (diagnostics off)."""
    import dataclasses

    from posttrain.data_sources import load_table

    data = recipe.data
    if data.path is None or data.answer_field is None:
        return recipe
    table = load_table(data.path, data.name, data.split, "data.path")
    if data.answer_field not in table.columns:
        logger.info(
            "No %r column in %s: unlabeled questions, no accuracy diagnostics.", data.answer_field, data.path
        )
        recipe.data = dataclasses.replace(data, answer_field=None)
    return recipe


def check_prompt_lengths(
    rows: list[dict], tokenizer, context: int, completion: int, skip_long: bool
) -> list[dict]:
    """Questions whose prompt + ``completion`` tokens exceed the model's ``context``: refused or left out."""
    limit = context - completion
    lengths = [
        len(
            tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)[
                "input_ids"
            ]
        )
        for r in rows
    ]
    long = [(r["id"], n) for r, n in zip(rows, lengths) if n > limit]
    if not long:
        return rows
    if not skip_long:
        shown = ", ".join(f"{i} ({n} tokens)" for i, n in long[:5])
        raise DataError(
            f"{len(long)} of {len(rows)} questions do not fit the model's context of {context} tokens with "
            f"{completion} tokens left to answer: {shown}. Shorten them, lower --max_new_tokens, or pass "
            "--skip_long to leave them out."
        )
    logger.warning(
        "Leaving out %d of %d questions longer than %d prompt tokens.", len(long), len(rows), limit
    )
    ids = {i for i, _ in long}
    kept = [r for r in rows if r["id"] not in ids]
    if not kept:
        raise DataError(f"Every question is longer than {limit} prompt tokens; nothing is left to adapt on.")
    return kept


def check_batch_fits(recipe: Recipe, n_questions: int) -> None:
    """A generation batch needs that many questions; with fewer, TRL's sampler yields no batch at all."""
    import os

    t = recipe.trainer
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    steps = t.get("steps_per_generation") or t.get("gradient_accumulation_steps", 1)  # TRL's default
    rows = t.get("per_device_train_batch_size", 8) * steps
    needed = rows * processes // max(t.get("num_generations", 8), 1)
    if n_questions < needed:
        raise AdaptationError(
            f"Each generation batch samples {needed} questions, but there are only {n_questions}. Lower "
            "--trainer.steps_per_generation or --trainer.per_device_train_batch_size (they count voting "
            "samples), or give more questions."
        )


def model_context(model_path: str) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
    config = getattr(config, "text_config", config)
    return getattr(config, "max_position_embeddings", None)


def vote_metrics(predictions: list[dict], labelled: bool, k: int) -> dict[str, Any]:
    """Majority share and answer rate always; greedy / mean@k / maj@k accuracy only with labels."""
    n = max(len(predictions), 1)
    out: dict[str, Any] = {
        "n": len(predictions),
        "k": k,
        "majority_share": sum(p.get("majority_share", 0.0) for p in predictions) / n,
        "answered": sum(p.get("majority") is not None for p in predictions) / n,
        "greedy_answered": sum(p.get("extracted") is not None for p in predictions) / n,
    }
    if labelled:
        out["accuracy_greedy"] = sum(p["correct"] for p in predictions) / n
        if k > 1:
            out[f"mean@{k}"] = sum(sum(p["samples_correct"]) / k for p in predictions) / n
            out[f"maj@{k}"] = sum(p["majority_correct"] for p in predictions) / n
    return out


def no_answer_message(n_questions: int, k: int, example: str) -> str:
    return (
        f"The model gave no parseable final answer in any of the {k} samples of each of {n_questions} "
        "questions, so every test-time reward would be 0 and adaptation would learn nothing; stopped. "
        f"A sample: {example[:160]!r}. Tell the model how to answer (e.g. --data.instruction 'Put your final "
        "answer in \\boxed{}.'), raise --trainer.max_completion_length, or adapt a model that follows the format."
    )


class Evaluator:
    """``run``'s evaluate hook: greedy + k samples on the adaptation questions themselves."""

    def __init__(self, recipe: Recipe, rows: list[dict], labelled: bool):
        self.recipe, self.rows, self.labelled = recipe, rows, labelled
        self.results: dict[str, Any] = {}

    def __call__(self, model, tokenizer, name: str) -> dict[str, Any]:
        from posttrain.evaluation import EvalResult, evaluate

        e, trainer = self.recipe.eval, self.recipe.trainer
        k = max(e.num_samples, 2)
        result = evaluate(
            model,
            tokenizer,
            self.rows,
            max_new_tokens=e.max_new_tokens or trainer.get("max_completion_length", 256),
            num_samples=k,
            temperature=e.temperature,
            batch_size=e.batch_size,
            seed=trainer.get("seed", 0),
            desc=f"vote {name}",
            extract=answer_policy(self.recipe),
        )
        metrics = vote_metrics(result.predictions, self.labelled, k)
        preds = [_prediction(p, self.labelled) for p in result.predictions]
        EvalResult(metrics, preds).save(self.recipe.output_dir, f"eval_{name}")
        self.results[name] = (metrics, preds)
        logger.info("%s adaptation: %s", name.capitalize(), metrics)
        if name == "before" and metrics["answered"] == 0 and metrics["greedy_answered"] == 0:
            example = result.predictions[0]["completion"] if result.predictions else ""
            raise AdaptationError(no_answer_message(len(preds), k, example))
        return metrics


def _prediction(p: dict[str, Any], labelled: bool) -> dict[str, Any]:
    out = {
        "id": p["id"],
        "question": p["question"],
        "prediction": p.get("majority"),
        "vote_share": p.get("majority_share", 0.0),
        "greedy": p.get("extracted"),
        "samples": p.get("samples"),
    }
    if labelled:
        out.update(answer=p["answer"], correct=p.get("majority_correct"), greedy_correct=p["correct"])
    return out


class NoAnswerStop(TrainerCallback):
    """Stops adaptation after ``patience`` logged steps in which no group had a parseable answer."""

    def __init__(self, patience: int = 3):
        self.patience = patience
        self.streak = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        value = (logs or {}).get("ttrl/no_answer_groups")
        if value is None:
            return
        self.streak = self.streak + 1 if value >= 1.0 else 0
        if self.streak >= self.patience:
            raise AdaptationError(
                f"No question had a parseable answer among its votes for {self.streak} steps in a row (up to step "
                f"{state.global_step}): every reward was 0, so adaptation stopped. The last checkpoint and "
                "metrics.jsonl are kept. Check the model's completions in eval_before_predictions.jsonl, give it "
                "an answer format (--data.instruction), or lower the learning rate."
            )


def plot_majority_ratio(metrics_path: Path, out_path: Path) -> Path | None:
    """The votes' majority share per step (and the pseudo-label accuracy when labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posttrain.plotting import read_metrics

    rows = [r for r in read_metrics(metrics_path) if r.get("ttrl/majority_ratio") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["ttrl/majority_ratio"] for r in rows], marker=".", label="majority ratio")
    labels = [(r["step"], r["ttrl/label_accuracy"]) for r in rows if r.get("ttrl/label_accuracy") is not None]
    if labels:
        ax.plot(*zip(*labels), marker=".", label="label accuracy (pseudo-label = truth)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("step")
    ax.set_title("test-time votes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _keep_earlier(out: Path, names: tuple[str, ...]) -> None:
    """--overwrite never destroys an earlier run's outputs: they are renamed with a timestamp."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in names:
        path = out / name
        if path.exists():
            path.rename(out / f"{path.stem}.{stamp}{path.suffix}")


def merge_adapter(out: Path, recipe: Recipe) -> Path:
    """Base model + the saved LoRA adapter, merged and saved to ``out/merged``."""
    from peft import PeftModel

    from posttrain.models import load_model

    base, tokenizer = load_model(recipe.model)
    merged = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
    target = out / "merged"
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def adapt(recipe: Recipe, skip_long: bool = False, merge: bool = False) -> dict[str, Any]:
    """Check the questions, vote before, adapt, vote after; write predictions and metrics (module doc)."""
    from posttrain.data import load_datasets
    from posttrain.models import load_tokenizer, resolve_model_path
    from posttrain.train import check_output_dir, run

    if merge and not recipe.peft.enabled:
        raise AdaptationError(
            "--merge merges a LoRA adapter into its base model; it needs --lora (the default)."
        )
    check_output_dir(recipe)  # before any work: a folder in use is refused
    recipe = resolve_labels(recipe)
    train_ds, _ = load_datasets(recipe.data)
    rows = [dict(r) for r in train_ds]
    labelled = recipe.data.answer_field is not None and all(r["answer"] is not None for r in rows)
    path = resolve_model_path(
        recipe.model.name_or_path, recipe.model.gguf_file, revision=recipe.model.revision
    )
    tokenizer = load_tokenizer(recipe.model.name_or_path, recipe.model)
    context = model_context(path)
    completion = recipe.eval.max_new_tokens or recipe.trainer.get("max_completion_length", 256)
    if context is not None:
        rows = check_prompt_lengths(rows, tokenizer, context, completion, skip_long)
    check_batch_fits(recipe, len(rows))
    out = recipe.output_dir
    if not recipe.run.resume:
        out.mkdir(parents=True, exist_ok=True)
        _keep_earlier(out, ("predictions.jsonl", "metrics.json", "majority_ratio.png"))
    import datasets

    dataset = datasets.Dataset.from_list(rows) if len(rows) != len(train_ds) else train_ds
    evaluator = Evaluator(recipe, rows, labelled)
    summary = run(recipe, callbacks=[NoAnswerStop()], train_dataset=dataset, evaluate=evaluator)
    metrics: dict[str, Any] = {
        "reward": recipe.method.name,
        "n_votes": recipe.trainer.get("num_generations"),
        "n_train": recipe.method.train_samples,
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "labelled": labelled,
        **{name: m for name, m in summary["eval"].items()},
    }
    metrics.update(_training_diagnostics(out / "metrics.jsonl"))
    if "after" in evaluator.results:
        with open(out / "predictions.jsonl", "w") as f:
            for p in evaluator.results["after"][1]:
                f.write(json.dumps({k: v for k, v in p.items() if k != "samples"}) + "\n")
    plot_majority_ratio(out / "metrics.jsonl", out / "majority_ratio.png")
    if merge:
        metrics["merged"] = str(merge_adapter(out, recipe))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _training_diagnostics(metrics_path: Path) -> dict[str, Any]:
    """Mean of TTRL's per-step diagnostics over the run, and their last values."""
    from posttrain.plotting import read_metrics

    rows = read_metrics(metrics_path)
    out: dict[str, Any] = {}
    for key in (
        "ttrl/majority_ratio",
        "ttrl/label_accuracy",
        "ttrl/reward_accuracy",
        "ttrl/no_answer_groups",
    ):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        if values:
            name = key.split("/")[1]
            out[f"train/{name}_mean"] = sum(values) / len(values)
            out[f"train/{name}_last"] = values[-1]
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    lines = [f"Adapted {metrics['steps']} steps ({metrics['reward']}) in {metrics['train_seconds']:.0f} s"]
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    names = [k for k in after if k.startswith(("accuracy", "mean@", "maj@", "majority_share", "answered"))]
    for name in names:
        lines.append(f"  {name:<16} before {before.get(name, float('nan')):.3f}  after {after[name]:.3f}")
    if "train/label_accuracy_mean" in metrics:
        lines.append(f"  label_accuracy   {metrics['train/label_accuracy_mean']:.3f} (mean over steps)")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``posttrain adapt``."""
    parser = argparse.ArgumentParser(
        prog="posttrain adapt",
        description="Adapt a model to unlabeled questions with test-time RL (TTRL majority vote or TTRV "
        "frequency + entropy), then answer them by majority vote. Extra `--section.key value` flags set any "
        "recipe key (e.g. --trainer.learning_rate 5e-5 --data.instruction 'Answer with a number.').",
    )
    parser.add_argument("--model", help="hub id, local folder, .gguf file or 'embedded' (the default)")
    parser.add_argument("--data", required=True, help="questions: JSONL/JSON/parquet file or HF dataset name")
    parser.add_argument("--recipe", help="a YAML recipe to start from (e.g. recipes/ttrl_math.yaml)")
    parser.add_argument("--reward", choices=REWARDS, help="ttrl (majority vote, default) or ttrv")
    parser.add_argument("--n_votes", type=int, help="samples per question that vote (TTRL: 64; default 16)")
    parser.add_argument("--n_train", type=int, help="of those, trained on (TTRL: 32; default n_votes / 2)")
    parser.add_argument(
        "--k", type=int, help="samples per question for the before/after vote (default n_votes)"
    )
    parser.add_argument(
        "--extract",
        help="how answers are read, in the votes and the before/after evaluation: boxed (TTRL's default: the "
        "last \\boxed{}), qwen_math (TTRV's), lenient (also a bare number), tagged, first_boxed",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps (default 20)")
    budget.add_argument("--time_budget", help="stop after this wall time, e.g. 10m")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument(
        "--lora", dest="lora", action="store_true", default=None, help="train a LoRA adapter (default)"
    )
    lora.add_argument("--full", dest="lora", action="store_false", help="fine-tune all weights instead")
    parser.add_argument(
        "--merge", action="store_true", help="also save the base model with the adapter merged"
    )
    parser.add_argument("--question_field", help="the column holding the questions (default: question)")
    parser.add_argument("--answer_field", help="the column holding labels, if any (default: answer)")
    parser.add_argument(
        "--skip_long", action="store_true", help="leave out questions too long for the context"
    )
    parser.add_argument("--output_dir", help="where everything goes (default runs/adapt)")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that holds a run")
    args, rest = parser.parse_known_args(argv)
    for name in ("n_votes", "n_train", "k", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise PosttrainError(f"--{name} must be a positive integer, got {value}.")
    flags = {name: getattr(args, name) for name in FLAG_KEYS if name != "data"}
    flags["data"] = args.data
    if args.steps is None and args.time_budget is not None:
        flags["trainer.max_steps"] = 10**9  # the budget ends the run
    if args.lora is not None:
        flags["peft.enabled"] = args.lora
    for name in ("question_field", "answer_field"):
        if getattr(args, name) is not None:
            flags[f"data.{name}"] = getattr(args, name)
    if args.resume:
        flags["run.resume"] = True
    if args.overwrite:
        flags["run.overwrite"] = True
    flags.update(parse_flags(rest))
    recipe = build_recipe(args.recipe, flags)
    metrics = adapt(recipe, skip_long=args.skip_long, merge=args.merge)
    print(format_metrics(metrics))
    print(f"predictions: {recipe.output_dir / 'predictions.jsonl'}")
