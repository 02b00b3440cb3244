"""Train a model from a YAML recipe.

    posttrain train recipes/quickstart.yaml --max_steps 2 --output_dir runs/smoke
    accelerate launch --config_file accelerate_configs/cpu.yaml -m posttrain.train recipes/quickstart.yaml

Writes to ``output_dir``: ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (every logged
step), checkpoints, the final model, ``eval_before.json`` / ``eval_after.json`` with their
predictions when the recipe asks for held-out evaluation, ``summary.json`` and
``training_curves.png``. An output folder that already holds a run is refused unless ``--overwrite``
(write into it; the old metrics file is kept under a new name) or ``--resume`` (continue from its
last checkpoint) is given.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from posttrain.checkpoints import resume_point
from posttrain.config import Recipe, load_recipe, parse_duration
from posttrain.distributed import relaunch, should_relaunch
from posttrain.errors import ConfigError, DataError, OutputDirError, RewardError, RolloutError
from posttrain.preempt import Preemption

logger = logging.getLogger(__name__)

# Files whose presence means a folder already holds a run. Not recipe.yaml: it is written before the
# inputs are checked, so a run that stopped on a bad input would otherwise block its own retry.
RUN_MARKERS = (
    "metrics.jsonl",
    "summary.json",
    "model.safetensors",
    "adapter_model.safetensors",
)


def check_output_dir(recipe: Recipe) -> str | None:
    """Refuse to clobber an earlier run; return the checkpoint to resume from, if any."""
    out = recipe.output_dir
    if recipe.run.resume:
        return resume_point(out)  # the newest complete checkpoint; newer broken ones are named
    if out.is_dir():
        found = [m for m in RUN_MARKERS if (out / m).exists()] + sorted(
            p.name for p in out.glob("checkpoint-*")
        )
        if found and not recipe.run.overwrite:
            raise OutputDirError(
                f"The output folder {out} already holds a run ({', '.join(found[:4])}). Pass --resume to continue "
                "it from its last checkpoint, --overwrite to write into it anyway, or choose another --output_dir."
            )
    return None


def _prepare_output_dir(recipe: Recipe, checkpoint: str | None) -> None:
    from posttrain.callbacks import roll_back_metrics

    out = recipe.output_dir
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    if checkpoint is not None:  # no step row twice: rows after the checkpoint are logged again
        roll_back_metrics(metrics, int(checkpoint.rsplit("-", 1)[-1]))
    if metrics.exists() and not recipe.run.resume:
        # --overwrite: keep the earlier run's metrics under a new name rather than destroying them.
        metrics.rename(out / f"metrics.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    recipe.save(out / "recipe.yaml")


def _check_zero3_eval(recipe: Recipe) -> None:
    """Held-out evaluation runs on the main process alone, which cannot use ZeRO-3's sharded weights."""
    import os

    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if zero3 and (recipe.eval.before or recipe.eval.after):
        raise ConfigError(
            "eval.before/eval.after are not supported under DeepSpeed ZeRO-3 (the weights are sharded "
            "across processes; evaluation runs on one). Pass --eval.before false --eval.after false and "
            "evaluate the saved model afterwards: `posttrain eval --model <output_dir> --data ...`, or "
            "train with accelerate_configs/zero2.yaml."
        )


def run(
    recipe: Recipe,
    callbacks: list | None = None,
    *,
    train_dataset=None,
    evaluate: Callable[[Any, Any, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run one recipe end to end; returns the summary written to ``summary.json``.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (e.g. a benchmark's timer).
    ``train_dataset`` replaces the rows of ``recipe.data`` (already loaded and checked by the caller);
    ``evaluate(model, tokenizer, name) -> metrics`` replaces the held-out evaluation of ``eval.before``
    / ``eval.after`` (``posttrain adapt`` evaluates on the questions it adapts to).
    """
    from accelerate import PartialState

    from posttrain.callbacks import MetricsJsonl, TimeBudget, purge_tensorboard_after
    from posttrain.data import load_datasets
    from posttrain.methods import get_method
    from posttrain.methods.options import install_options
    from posttrain.models import describe_hardware, load_model, resolve_model_path
    from posttrain.plotting import plot_curves
    from posttrain.rewards import build_reward_plugins
    from posttrain.trainer import PosttrainTrainer

    if recipe.rollout.engine == "vllm" and recipe.rollout.mode == "colocate":
        from posttrain.rollout.vllm import require_vllm

        require_vllm()  # before any work: a missing vLLM is a setup error with an install command
    state = PartialState()
    _check_zero3_eval(recipe)
    checkpoint = check_output_dir(recipe)  # every process checks before any process writes
    args = recipe.grpo_config()  # a bad trainer value stops here, before anything is written
    state.wait_for_everyone()
    if state.is_main_process:
        _prepare_output_dir(recipe, checkpoint)
    out = recipe.output_dir
    logger.info("Hardware: %s", describe_hardware())

    method = get_method(recipe.method.name)
    plugins = build_reward_plugins(recipe.rewards)
    if train_dataset is not None:
        train_ds, eval_ds = train_dataset, None
    else:
        train_ds, eval_ds = load_datasets(recipe.data)
    if evaluate is None:
        if (recipe.eval.before or recipe.eval.after) and eval_ds is None:
            raise DataError(
                "The recipe asks for held-out evaluation (eval.before/after) but the data has no held-out "
                "split. Set data.eval_size (e.g. 200) or data.eval_path."
            )
        evaluate = method.evaluator(recipe, eval_ds, args)

    with state.main_process_first():  # the first process converts a GGUF; the others reuse the folder
        resolve_model_path(recipe.model.name_or_path, recipe.model.gguf_file, revision=recipe.model.revision)
    # Every process loads at once: under ZeRO-3 building the model is itself a collective.
    model, tokenizer = load_model(recipe.model)

    evals: dict[str, dict] = {}
    if recipe.eval.before and checkpoint is None and state.is_main_process:
        evals["before"] = evaluate(model, tokenizer, "before")
    elif (out / "eval_before.json").exists():
        evals["before"] = json.loads((out / "eval_before.json").read_text())

    preemption = Preemption()  # SIGTERM: finish the step, checkpoint, exit 0 (posttrain/preempt.py)
    callbacks = [MetricsJsonl(out / "metrics.jsonl"), preemption, *(callbacks or [])]
    if recipe.run.time_budget is not None:
        callbacks.append(TimeBudget(parse_duration(recipe.run.time_budget)))
    trainer = PosttrainTrainer(
        model=model,
        reward_plugins=plugins,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=recipe.peft.to_lora_config(),
        callbacks=callbacks,
        update=recipe.update,
        **method.constructor_kwargs(recipe),
    )
    method.install(trainer, recipe)
    trainer.guard.limit = recipe.run.max_nonfinite_steps
    if checkpoint is not None:
        purge_tensorboard_after(trainer, int(checkpoint.rsplit("-", 1)[-1]), out)
    install_options(
        trainer, recipe
    )  # GUI-G1's weights and constant, TTRL's vote/train split, the search tool
    if (
        recipe.rollout.async_.active
    ):  # generation overlapped with training (posttrain/rollout/asynchronous.py)
        from posttrain.rollout.factory import async_engine

        engine, backend = async_engine(recipe.rollout, trainer.model, tokenizer, trainer.accelerator)
        trainer.enable_async_generation(engine, backend, recipe.rollout.async_.max_staleness)
    elif recipe.rollout.engine != "hf" or recipe.rollout.mode == "server":
        from posttrain.rollout.factory import build_engine

        trainer.set_rollout_engine(
            build_engine(recipe.rollout, trainer.model, trainer.accelerator, args.seed)
        )
    start = time.monotonic()
    finished = checkpoint is not None and 0 < args.max_steps <= int(checkpoint.rsplit("-", 1)[-1])
    try:
        if finished:  # killed after its last checkpoint: nothing left to train
            logger.info("%s is at max_steps (%d): nothing left to train.", checkpoint, args.max_steps)
            trainer.load_finished(checkpoint)
        else:
            trainer.train(resume_from_checkpoint=checkpoint)
    except (RewardError, RolloutError) as exc:  # keep the steps already trained, then stop with the message
        raise type(exc)(f"{exc}\n{_save_before_stopping(trainer, recipe)}") from exc
    finally:
        trainer.generation.close()
    train_seconds = time.monotonic() - start
    if preemption.requested:
        return _preempted(recipe, trainer.state.global_step, train_seconds, evals)
    trainer.save_model(str(out))
    trainer.free_training_memory()  # the evaluation after training needs the weights only

    if state.is_main_process:
        if recipe.eval.after:
            evals["after"] = evaluate(trainer.model, tokenizer, "after")
        if recipe.run.plot:
            plot_curves(out / "metrics.jsonl", out / "training_curves.png", evals or None)
    summary = {
        "output_dir": str(out),
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "eval": evals,
    }
    if state.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _save_before_stopping(trainer, recipe: Recipe) -> str:
    """A checkpoint of the last finished step, unless one exists; says where and how to resume."""
    step = trainer.state.global_step
    out = recipe.output_dir
    if step == 0:
        return "No step had finished: nothing to keep."
    if not (out / f"checkpoint-{step}").is_dir():
        trainer._save_checkpoint(trainer.model, trial=None)
    return (
        f"The {step} finished steps are kept in {out / f'checkpoint-{step}'}; after fixing the cause, "
        f"continue with `posttrain train {out / 'recipe.yaml'} --resume` (the failed batch's prompts are "
        "not trained on; batches generated ahead are generated again)."
    )


def _preempted(recipe: Recipe, step: int, train_seconds: float, evals: dict) -> dict[str, Any]:
    out = recipe.output_dir
    command = f"posttrain train {out / 'recipe.yaml'} --resume"
    logger.warning(
        "Stopped by SIGTERM after step %d; checkpoint-%d written. Resume with:\n  %s", step, step, command
    )
    return {
        "output_dir": str(out),
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "eval": evals,
        "preempted": True,
        "resume": command,
    }


def format_summary(summary: dict[str, Any]) -> str:
    if summary.get("preempted"):
        return f"Stopped by SIGTERM after step {summary['steps']}. Resume with: {summary['resume']}"
    lines = [
        f"Trained {summary['steps']} steps in {summary['train_seconds']:.0f} s -> {summary['output_dir']}"
    ]
    evals = summary.get("eval") or {}
    if evals:
        names = [k for k in next(iter(evals.values())) if k.startswith(("accuracy", "mean@", "maj@"))]
        n = next(iter(evals.values())).get("n")
        lines.append(f"Held-out accuracy (n={n}):")
        for name in names:
            cells = "  ".join(f"{label} {m.get(name, float('nan')):.3f}" for label, m in evals.items())
            lines.append(f"  {name:<16} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return {}
    if not argv or argv[0].startswith("--"):
        from posttrain.errors import ConfigError

        raise ConfigError(
            "Usage: posttrain train RECIPE.yaml [--key value ...] (e.g. recipes/quickstart.yaml)."
        )
    recipe = load_recipe(argv[0], argv[1:])
    if should_relaunch(recipe.run):  # run.accelerate_config: start this run again under accelerate launch
        code = relaunch(argv[0], argv[1:], recipe.run)
        if code:
            raise SystemExit(code)  # the launch's own status (run_command turns only our errors into one)
        return {}
    summary = run(recipe)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    from posttrain.console import run_command

    sys.exit(run_command(lambda: main(sys.argv[1:])))
