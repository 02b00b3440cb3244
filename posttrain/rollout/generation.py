"""Where a trainer's completions come from: TRL's own generation, or a rollout engine (vLLM, a server).

The trainer calls :meth:`single_turn` where TRL would generate, whatever the backend::

    TRLGeneration      TRL's transformers generation on the trainer's model (the default)
    EngineGeneration   an engine of :mod:`posttrain.rollout` (``generate`` / ``sync_weights`` / ``sleep``):
                       the weights are synced into it once per optimizer step, and its sampling log-probs
                       drive the importance-sampling correction (``corrects``)
    AsyncGeneration    an engine generating the next batches while the trainer updates
                       (:mod:`posttrain.rollout.asynchronous`, ``rollout.async``)

With a prompt feed, the trainer takes each batch's rows from :meth:`next_rows` and checkpoints the feed
position :meth:`checkpoint_state` gives (an asynchronous generation has composed batches ahead).

Multi-turn rollout functions (the search tool loop) call :meth:`sync` before using :attr:`engine`.
"""

from __future__ import annotations

from typing import Any

from posttrain.rollout.base import RolloutEngine, SamplingSettings


class _Synchronous:
    """Batches are generated when the trainer asks for them: the feed's next batch is the one trained on."""

    def next_rows(self, trainer, feed) -> list:
        """This process's rows of the next generation batch."""
        return feed.local_batch(trainer)

    def checkpoint_state(self, feed) -> dict:
        """The feed position a checkpoint stores."""
        return feed.state_dict()

    def reset(self) -> None:
        """Nothing is generated ahead."""


class TRLGeneration(_Synchronous):
    """TRL's own generation (``GRPOTrainer._generate_single_turn``) on the trainer's model."""

    engine = None
    corrects = False

    def __init__(self, generate):
        self._generate = generate  # the trainer's base-class method, bound

    def single_turn(self, trainer, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        return self._generate(prompt_ids, images, multimodal_fields, num_generations, **kwargs)

    def sync(self, trainer) -> None:
        """Nothing to sync: TRL generates with the weights being trained."""

    def close(self) -> None:
        """Nothing to release."""


class EngineGeneration(_Synchronous):
    """Generation by a rollout engine with its own copy of the weights."""

    def __init__(self, engine: RolloutEngine, correction: bool, step: int | None):
        self.engine = engine
        self.corrects = correction
        self._step = step  # the optimizer step whose weights the engine holds (None: unknown, push first)

    def single_turn(self, trainer, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        if images is not None and any(img is not None for img in images):
            raise ValueError(
                "The posttrain rollout engines generate text only; images need rollout.engine: hf."
            )
        self.sync(trainer)
        # TRL repeats each prompt once per generation already, so one sample per row.
        rollouts = self.engine.generate(prompt_ids, 1, sampling_settings(trainer.args))
        self.engine.sleep()
        return rollouts.completion_ids, rollouts.logprobs

    def sync(self, trainer) -> None:
        """Copy the trainer's weights into the engine once per optimizer step (every process: ZeRO-3
        gathers are collective)."""
        if trainer.state.global_step == self._step:
            return
        with trainer.timer("sync"):
            self.engine.sync_weights(trainer.model_wrapped)
        self._step = trainer.state.global_step

    def close(self) -> None:
        self.engine.close()


def sampling_settings(args: Any) -> SamplingSettings:
    """The engine's sampling settings from a GRPOConfig (``min_tokens`` from ``generation_kwargs``)."""
    settings = SamplingSettings.from_args(args)
    extra = args.generation_kwargs or {}
    settings.min_tokens = int(extra.get("min_tokens", extra.get("min_new_tokens", 0)) or 0)
    return settings


def importance_correction(trainer):
    """The importance correction of an engine's samples (TIS/MIS on ``trainer.vllm_importance_sampling_*``),
    or None when the recipe turns it off. Built from the trainer's settings alone, so that every process
    weighs the same samples whether or not it holds the engine."""
    from posttrain.errors import ConfigError
    from posttrain.rollout.importance import ImportanceCorrection

    args = trainer.args
    if not args.vllm_importance_sampling_correction:
        return None
    if trainer.loss_type == "vespo":
        raise ConfigError(
            "loss_type vespo consumes the sampler's importance ratio inside its own loss (TRL), which the "
            "posttrain rollout engines' correction (advantages x weight) cannot reproduce. Use another loss "
            "type, or set trainer.vllm_importance_sampling_correction: false to train without a correction."
        )
    limits = (args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max)
    return ImportanceCorrection(
        args.vllm_importance_sampling_mode, *limits, trainer.log_metric, trainer.accelerator.gather
    )


def refuse_two_engines(trainer) -> None:
    """A posttrain rollout engine replaces TRL's own vLLM; both at once is a recipe error."""
    if trainer.use_vllm:
        raise ValueError(
            "Both TRL's own vLLM (trainer.use_vllm: true) and a posttrain rollout engine were given; "
            "use `rollout.engine: vllm` and leave trainer.use_vllm unset."
        )


def make_generation(trainer, engine: RolloutEngine | None, trl_generate):
    """(generation, importance correction or None) for a trainer: TRL's own generation without ``engine``."""
    if engine is None:
        return TRLGeneration(trl_generate), None
    refuse_two_engines(trainer)
    correction = importance_correction(trainer)
    # A server outlives runs: it may hold another run's weights, so the first generation pushes ours.
    first = None if getattr(engine, "name", "") == "server" else trainer.state.global_step
    return EngineGeneration(engine, correction is not None, first), correction
