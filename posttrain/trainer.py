"""The GRPO trainer: TRL's ``GRPOTrainer`` hosting the hooks posttrain's methods install (posttrain/methods/).

Where each hook sits in one of TRL's generation cycles::

    _prepare_inputs ─► feed: data + queue ─► _generate_single_turn: TRL's generation, or an engine's
      └─► _calculate_rewards: per-sample rewards on each process (TRL) ─► gather ─► group-level rewards
      └─► advantages (TRL) ─► gather ─► selections ─► advantage transforms ─► slice ─► loss masks
      └─► scored hooks (SPARK's recycler fills the queue) ─► importance correction (engine samples)
    training_step ─► _compute_loss (TRL's loss) ─► loss transforms ─► optimizer step, skipped without signal

- Group-level rewards (``@group_reward``) run on the batch gathered from every process, so a prompt's
  group is whole even when TRL spreads it over ranks. Hook signatures: :mod:`posttrain.batch`.
- With a queue, a :class:`~posttrain.feed.PromptFeed` composes every generation batch from the data and
  the queue. Generation is one object (:mod:`posttrain.rollout.generation`); an engine's samples are
  importance-corrected (:mod:`posttrain.rollout.importance`). A step without gradient signal is skipped
  (:mod:`posttrain.signal`). Stateful plugins, queue and feed are checkpointed (:mod:`posttrain.state`);
  evaluation never changes a stateful plugin. Phases are logged as ``time/gen``, ``time/reward``,
  ``time/adv``, ``time/update`` (+ ``time/sync``, ``time/recycle``).

Overrides of TRL internals (pinned by ``tests/test_trl_internals.py``): ``_calculate_rewards``,
``_generate_and_score_completions``, ``_generate``, ``_tokenize_prompts`` (prompts that prefill the
reply: posttrain/chat.py), ``_generate_single_turn``, ``_compute_loss``,
``_get_per_token_logps_and_entropies``, ``training_step``; ``_prepare_inputs``, ``get_train_dataloader``,
``_get_train_sampler`` and ``get_resumed_dataloader`` in :mod:`posttrain.trainer_feed` (with the
switches of dynamic sampling and asynchronous generation); ``_save_checkpoint`` and ``_load_optimizer_and_scheduler`` in
:mod:`posttrain.trainer_checkpoints`. DAPO's dynamic sampling wraps one generation batch's scoring in
rounds (:mod:`posttrain.dynamic`).
"""

from __future__ import annotations

import copy
import gc
import time
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from transformers.training_args import OptimizerNames
from trl import GRPOTrainer

from posttrain.batch import ScoredBatch, select_rows
from posttrain.chat import continues_reply, encode
from posttrain.guard import NonFiniteGuard
from posttrain.rewards import RewardPlugin, group_placeholder
from posttrain.rollout.generation import make_generation
from posttrain.signal import SignalGate
from posttrain.state import STATE_FILE  # noqa: F401  (re-exported: tests and tools read the file name)
from posttrain.timing import PhaseTimer
from posttrain.trainer_checkpoints import CheckpointMixin
from posttrain.trainer_feed import FeedMixin
from posttrain.update import FastUpdate, UpdateConfig

# Columns TRL handles itself; everything else in a row reaches reward plugins as a keyword argument.
_NOT_KWARGS = ("prompt", "completion", "completion_ids")


class PosttrainTrainer(FeedMixin, CheckpointMixin, GRPOTrainer):
    """``GRPOTrainer`` with group-level rewards, hooks, a prompt queue and a rollout engine (module docstring)."""

    def __init__(
        self,
        model,
        reward_plugins: list[RewardPlugin],
        args,
        *,
        queue=None,
        rollout_engine=None,
        selections=(),
        advantage_transforms=(),
        loss_mask_hooks=(),
        scored_hooks=(),
        loss_transforms=(),
        update: UpdateConfig | None = None,
        **kwargs,
    ):
        if not reward_plugins:
            raise ValueError("PosttrainTrainer needs at least one reward plugin.")
        self.reward_plugins = list(reward_plugins)
        # The hooks (posttrain/batch.py); methods append to these lists.
        self.selections, self.advantage_transforms = list(selections), list(advantage_transforms)
        self.loss_mask_hooks, self.scored_hooks = list(loss_mask_hooks), list(scored_hooks)
        self.loss_transforms = list(loss_transforms)
        self.queue, self.feed = queue, None
        self.recycles = queue is not None  # a method's queue (SPARK) fills from the batches just trained
        self._generations = 0  # training generation batches so far (seeds SPARK's draws)
        self.timer = PhaseTimer()
        self.guard = NonFiniteGuard()  # a NaN/inf loss skips the step (posttrain/guard.py)
        self._scored: ScoredBatch | None = None
        self.dynamic = None  # DAPO's dynamic sampling (posttrain/dynamic.py): enable_dynamic_sampling
        self._prepare_seconds = 0.0
        self.fast = FastUpdate(update or UpdateConfig())  # the update's fast paths (posttrain/update.py)
        args = copy.copy(args)  # weights live on the reward entries; TRL reads them from the config
        args.reward_weights = [p.weight for p in self.reward_plugins]
        funcs = [group_placeholder(p.name) if p.is_group else p for p in self.reward_plugins]
        super().__init__(model=model, reward_funcs=funcs, args=args, **kwargs)
        self.set_rollout_engine(rollout_engine)
        device = self.accelerator.device
        self.gate = SignalGate(
            lambda t: self.accelerator.reduce(t.to(device), reduction="sum"), self.log_metric
        )
        if queue is not None and self.train_dataset is not None:
            self.start_feed()

    def free_training_memory(self) -> None:
        """Drop gradients and optimizer moments (three times the weights with AdamW) once training is over."""
        self.model.zero_grad(set_to_none=True)
        if self.optimizer is not None and not self.is_deepspeed_enabled:
            self.optimizer.state.clear()
        gc.collect()

    def set_rollout_engine(self, engine) -> None:
        """Generate with ``engine`` from now on (None: TRL's transformers generation)."""
        self.generation, self.correction = make_generation(self, engine, super()._generate_single_turn)

    @property
    def rollout_engine(self):
        """The engine that generates (None: TRL's own generation)."""
        return self.generation.engine

    def sync_engine(self) -> None:
        """Bring the engine's weights up to date (multi-turn rollout functions call this before generating)."""
        self.generation.sync(self)

    # ----------------------------------------------------------------------------- the hooks
    def log_metric(self, name: str, value: float) -> None:
        """Log a scalar with this step's metrics (averaged over the logging interval), e.g. from a hook."""
        self._metrics["train" if self.model.training else "eval"][name].append(float(value))

    @property
    def group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    # ----------------------------------------------------------------------------- generation and scoring
    def _generate(self, prompts: list):
        with self.timer("gen"):
            return super()._generate(prompts)

    def _tokenize_prompts(self, prompts: list):
        # A prompt ending in an assistant message prefills the reply (posttrain/chat.py: SPARK's verdict
        # prefix); TRL would open a new assistant turn after it.
        if self._is_vlm or not any(continues_reply(p) for p in prompts):
            return super()._tokenize_prompts(prompts)
        kwargs = {"chat_template": self.chat_template, **self.chat_template_kwargs}
        return [encode(self.processing_class, p, **kwargs) for p in prompts], None, {}

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        return self.generation.single_turn(
            self, prompt_ids, images, multimodal_fields, num_generations, **kwargs
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Scoring held-out rows must not teach a stateful plugin (pay-per-search's history, ...).
        saved = (
            {}
            if self.model.training
            else {p.name: copy.deepcopy(p.state_dict()) for p in self.reward_plugins}
        )
        try:
            with self.timer("reward"):
                rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
                self._scored = None
                if (
                    self.selections
                    or self.advantage_transforms
                    or self.loss_mask_hooks
                    or self.scored_hooks
                    or any(p.is_group for p in self.reward_plugins)
                ):  # else plain GRPO: no cross-process gather of rows and texts
                    self._scored = batch = self._gather_batch(
                        inputs, prompts, completions, completion_ids_list, rewards
                    )
                    for col, plugin in enumerate(self.reward_plugins):
                        if plugin.is_group:
                            rewards[:, col] = self._run_group_plugin(plugin, batch)
            return rewards
        finally:
            for plugin in self.reward_plugins:
                if plugin.name in saved and plugin.is_stateful:
                    plugin.load_state_dict(saved[plugin.name])

    def _gather_batch(self, inputs, prompts, completions, completion_ids, rewards_per_func) -> ScoredBatch:
        n_local, index = len(prompts), self.accelerator.process_index
        return ScoredBatch(
            rows=gather_object(list(inputs)),
            prompts=gather_object(list(prompts)),
            completions=gather_object(list(completions)),
            completion_ids=gather_object([list(ids) for ids in completion_ids]),
            rewards_per_func=rewards_per_func,
            reward_names=list(self.reward_func_names),
            group_size=self.group_size,
            process_slice=slice(index * n_local, (index + 1) * n_local),
            mode="train" if self.model.training else "eval",
            extra={"global_step": self.state.global_step, "generation_index": self._generations},
        )

    def _run_group_plugin(self, plugin: RewardPlugin, batch: ScoredBatch) -> torch.Tensor:
        """Every process runs the plugin on the same gathered rows, so all get the same column."""
        columns = {k: batch.column(k) for k in batch.rows[0] if k not in _NOT_KWARGS}
        values = plugin(
            prompts=batch.prompts,
            completions=batch.completions,
            completion_ids=batch.completion_ids,
            group_size=batch.group_size,
            trainer_state=self.state,
            log_metric=self._log_metric,
            **columns,
        )
        out = [torch.nan if v is None else float(v) for v in values]
        return torch.tensor(out, dtype=torch.float32, device=batch.rewards_per_func.device)

    def _generate_and_score_completions(self, inputs):
        if self.dynamic is not None and self.model.training:
            return self.dynamic.sample(self, inputs, self._score_round, self.next_rows)
        return self._score_round(inputs)

    def _score_round(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        batch = self._scored
        with self.timer("adv"):  # timed even when there is nothing to do: every run logs the same phases
            if batch is not None:  # None: plain GRPO, nothing to apply
                advantages = gather(output["advantages"])  # (N,) global, in batch order
                if batch.mode == "train":
                    for select in self.selections:
                        chosen = select(batch, advantages)
                        if chosen is not None:
                            output, batch = select_rows(output, batch, chosen, self.accelerator.process_index)
                            advantages, self._scored = chosen.advantages, batch
                for transform in self.advantage_transforms:
                    advantages = transform(advantages, batch)
                batch.advantages = advantages
                output["advantages"] = advantages[batch.process_slice].to(output["advantages"].device)
                if self.loss_mask_hooks:
                    self._apply_loss_masks(output, batch)
        correction = self.correction
        if correction is not None and correction.applies(output) and "old_per_token_logps" in output:
            correction.apply(output, output["old_per_token_logps"])  # a reused batch: pi_old is there already
        if batch is not None and batch.mode == "train":
            for hook in self.scored_hooks:
                with self.timer("recycle"):
                    hook(batch)
        if self.model.training:
            self._generations += 1
        return output

    def _apply_loss_masks(self, output: dict[str, Any], batch: ScoredBatch) -> None:
        mask = output.get("tool_mask")
        mask = torch.ones_like(output["completion_mask"]) if mask is None else mask
        for hook in self.loss_mask_hooks:
            extra = hook(output, batch)
            if extra is not None:
                mask = mask * extra.to(mask.dtype)
        output["tool_mask"] = mask
        # dapo/bnpo/cispo normalise by the number of trained tokens across processes: recount it.
        output["num_items_in_batch"] = gather((output["completion_mask"] * mask).sum()).sum()

    # ----------------------------------------------------------------------------- the loss
    def _compute_loss(self, model, inputs):
        correction = self.correction
        if correction is not None and correction.applies(inputs) and "old_per_token_logps" not in inputs:
            inputs = correction.expect(inputs)  # weighted from the loss's own first forward pass
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            if correction is not None:
                correction.done()
        # Read after the loss: `inputs["advantages"]` now holds the importance-weighted ones when weighted.
        self.gate.observe(inputs, self.beta, getattr(self, "_entropy_bonus_enabled", False))
        for transform in self.loss_transforms:
            loss = transform(loss)
        return loss

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = self.fast.per_token_logps(self, super()._get_per_token_logps_and_entropies, *args, **kwargs)
        if self.correction is not None:
            self.correction.observe(out[0])
        return out

    def create_optimizer(self, model=None):
        fused = self.fast.config.fused_optimizer and not self.is_deepspeed_enabled
        if fused and self.args.optim == OptimizerNames.ADAMW_TORCH:
            self.args.optim = OptimizerNames.ADAMW_TORCH_FUSED  # the same AdamW, one kernel for all tensors
        optimizer = super().create_optimizer(model)
        if self.is_deepspeed_enabled:  # DeepSpeed drives its own optimizer step; left as it is
            return optimizer
        return self.gate.wrap(optimizer)

    # ----------------------------------------------------------------------------- timing
    def training_step(self, model, inputs, num_items_in_batch):
        start = time.perf_counter()
        self._prepare_seconds = 0.0
        output = super().training_step(model, inputs, num_items_in_batch)
        if not self.guard.after_backward(output, model, can_skip=not self.is_deepspeed_enabled):
            self._metrics["train"]["skipped/nonfinite"].append(float(self.guard.skipped))
        self.timer.add("update", time.perf_counter() - start - self._prepare_seconds)
        if self._step % self.current_gradient_accumulation_steps == 0:
            for key, seconds in self.timer.pop().items():
                self._metrics["train"][key].append(seconds)
        return output
