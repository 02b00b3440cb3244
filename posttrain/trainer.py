"""The GRPO trainer: TRL's ``GRPOTrainer`` plus the hooks every posttrain method hangs on.

One training step, and where each hook sits::

    data + queue ──► feed (whole groups) ──► generate ──► per-sample rewards (each process, TRL)
                                                     └─► gather ─► group-level rewards (all rows)
          advantages (TRL) ──► advantage transforms ──► loss-mask hooks ──► scored hooks ──► update

- **Group-level rewards** (``@group_reward`` plugins) run once per step on the batch gathered from
  all processes, so a prompt's group is whole even when TRL spreads it over ranks.
- **Advantage transforms** ``fn(advantages (N,), batch) -> (N,)`` edit the global advantages.
- **Loss-mask hooks** ``fn(output, batch) -> (B_local, T) mask | None`` drop tokens from the loss.
- **Scored hooks** ``fn(batch)`` see every scored batch (e.g. SPARK's recycler) and may fill
  :attr:`queue` with new prompts. With a queue, a :class:`~posttrain.feed.PromptFeed` composes every
  generation batch from the data stream and the queue: recycled groups come in addition to the data,
  no data prompt is skipped, and the run is bounded by ``max_steps``.
- Stateful reward plugins, the queue and the feed are saved in every checkpoint and restored on
  resume; evaluation never changes a stateful plugin (its state is put back after an eval batch).
- ``loss_constant``: the sequence-sum loss divided by a constant (GUI-G1), from TRL's ``dr_grpo``
  loss rescaled (:mod:`posttrain.advantages`).
- ``train_samples``: vote on all ``num_generations`` samples of a prompt, train on ``train_samples`` of
  them (TTRL's 64 votes / 32 trained): group rewards see the whole group, then the batch is cut to the
  subset and its advantages are recomputed over the trained samples alone.
- **Steps without signal are skipped**: when every advantage of an optimizer step is 0 (all groups
  unanimous, e.g. a sparse reward that nobody earned) and there is no KL or entropy term, the gradient
  is exactly 0, yet AdamW would still move every weight on its momentum for many steps. The optimizer
  step is skipped instead (decided together on all processes) and counted as ``train/skipped_steps``.
  Measured (bench/search.py): without it, one rewarded step followed by 20 zero-reward steps drifted a
  warm-started policy out of its answer format.
- Phases are timed and logged as ``time/gen``, ``time/reward``, ``time/adv``, ``time/update``
  (+ ``time/sync`` with a rollout engine).
- A **rollout engine** (:mod:`posttrain.rollout`; vLLM colocated or behind a server) replaces TRL's
  transformers generation when given: weights are synced to it once per optimizer step, and its
  sampling log-probs drive the importance-sampling correction, computed from the update's own
  forward pass instead of an extra one (:mod:`posttrain.rollout.importance`).

Overrides of TRL internals (pinned by ``tests/test_trl_internals.py``): ``_calculate_rewards``,
``_generate_and_score_completions``, ``_generate``, ``_generate_single_turn``, ``_compute_loss``,
``_get_per_token_logps_and_entropies``, ``_prepare_inputs``, ``training_step``, ``_save_checkpoint``,
``_load_optimizer_and_scheduler``, ``get_train_dataloader``, ``get_resumed_dataloader``.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer

from posttrain.advantages import combined_rewards, constant_loss_scale, group_advantages, vote_subset
from posttrain.errors import ConfigError
from posttrain.feed import PlaceholderLoader, PromptFeed
from posttrain.queue import GroupQueue
from posttrain.rewards import RewardPlugin
from posttrain.rollout.base import RolloutEngine, SamplingSettings
from posttrain.rollout.importance import importance_weights, masked_sum, token_advantages
from posttrain.timing import PhaseTimer

logger = logging.getLogger(__name__)

STATE_FILE = "posttrain_state.pt"
# Columns TRL handles itself; everything else in a row reaches reward plugins as a keyword argument.
_NOT_KWARGS = ("prompt", "completion", "completion_ids")


@dataclass
class ScoredBatch:
    """One generation batch after scoring, gathered from all processes (N rows in total)."""

    rows: list[dict[str, Any]]
    """Dataset rows, ``group_size`` consecutive rows per prompt."""
    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[list[int]]
    rewards_per_func: torch.Tensor
    """(N, F) rewards, NaN where a plugin returned None."""
    reward_names: list[str]
    group_size: int
    process_slice: slice
    """This process's rows within the N."""
    mode: str = "train"
    advantages: torch.Tensor | None = None
    """(N,) final advantages, set after the advantage transforms."""
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]


AdvantageTransform = Callable[[torch.Tensor, ScoredBatch], torch.Tensor]
LossMaskHook = Callable[[dict[str, Any], ScoredBatch], "torch.Tensor | None"]
ScoredHook = Callable[[ScoredBatch], None]


def _placeholder(name: str) -> Callable[..., list[float]]:
    """Stands in for a group-level plugin in TRL's per-process loop; the real column is filled later."""

    def placeholder(completions, **kwargs):
        return [0.0] * len(completions)

    placeholder.__name__ = name
    return placeholder


class PosttrainTrainer(GRPOTrainer):
    """``GRPOTrainer`` with group-level rewards, advantage/loss-mask/scored hooks and a prompt queue."""

    def __init__(
        self,
        model,
        reward_plugins: list[RewardPlugin],
        args,
        *,
        advantage_transforms: list[AdvantageTransform] | None = None,
        loss_mask_hooks: list[LossMaskHook] | None = None,
        scored_hooks: list[ScoredHook] | None = None,
        queue: GroupQueue | None = None,
        rollout_engine: RolloutEngine | None = None,
        loss_constant: float | None = None,
        train_samples: int | None = None,
        **kwargs,
    ):
        if not reward_plugins:
            raise ValueError("PosttrainTrainer needs at least one reward plugin.")
        self.reward_plugins = list(reward_plugins)
        self.advantage_transforms = list(advantage_transforms or [])
        self.loss_mask_hooks = list(loss_mask_hooks or [])
        self.scored_hooks = list(scored_hooks or [])
        self.queue = queue
        self.feed: PromptFeed | None = None
        self._generations = 0  # training generation batches so far (seeds the recycler's draws)
        self._step_has_signal = False  # any micro-batch of the current optimizer step with a gradient
        self.skipped_steps = 0
        self.timer = PhaseTimer()
        self._scored: ScoredBatch | None = None
        self._prepare_seconds = 0.0
        self.rollout_engine: RolloutEngine | None = None
        self._engine_step = 0  # the optimizer step whose weights the engine holds
        self._pending_is: dict[str, Any] | None = None
        # Weights live on the reward entries; TRL reads them from the config, so give it a copy.
        args = copy.copy(args)
        args.reward_weights = [p.weight for p in self.reward_plugins]
        funcs = [_placeholder(p.name) if p.is_group else p for p in self.reward_plugins]
        super().__init__(model=model, reward_funcs=funcs, args=args, **kwargs)
        if self.use_vllm and rollout_engine is not None:
            raise ValueError(
                "Both TRL's own vLLM (trainer.use_vllm: true) and a posttrain rollout engine were given; "
                "use `rollout.engine: vllm` and leave trainer.use_vllm unset."
            )
        if rollout_engine is not None:
            self.set_rollout_engine(rollout_engine)
        if queue is not None and self.train_dataset is not None:
            self._check_feed_settings()
            self.feed = PromptFeed(
                self.train_dataset, queue, self.num_generations, args.seed, self.shuffle_dataset
            )
        self.train_samples = train_samples
        if train_samples is not None:
            self._check_train_samples(train_samples)
        self.loss_constant = loss_constant
        if loss_constant is not None:
            if self.loss_type != "dr_grpo":
                raise ValueError(
                    f"loss_constant rescales the dr_grpo loss, but loss_type is {self.loss_type!r}; set "
                    "loss_type='dr_grpo' (the recipe's method.loss_constant does this itself)."
                )
            if getattr(self, "_entropy_bonus_enabled", False):
                raise ValueError(
                    "loss_constant cannot be combined with TRL's entropy bonus (entropy_coef): the rescaling "
                    "would scale the bonus too. Unset one of them."
                )

    def _check_train_samples(self, k: int) -> None:
        g = self.num_generations
        if not 2 <= k <= g or g % k:
            raise ConfigError(
                f"method.train_samples ({k}) must be between 2 and num_generations ({g}) and divide it: every "
                f"prompt votes with {g} samples and trains on {k} of them (TTRL: 64 and 32)."
            )
        stride = g // k
        if self.args.per_device_train_batch_size % stride:
            raise ConfigError(
                f"per_device_train_batch_size ({self.args.per_device_train_batch_size}) counts voting samples and "
                f"must be a multiple of num_generations / train_samples ({stride}), so that every step trains on "
                f"whole samples; e.g. per_device_train_batch_size {g}."
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ConfigError(
                "method.train_samples recomputes the advantages of the trained samples with "
                "multi_objective_aggregation: sum_then_normalize (the default); remove the other setting."
            )

    def _check_feed_settings(self) -> None:
        if self.args.max_steps <= 0:
            raise ConfigError(
                "A prompt queue (SPARK's recycled tasks) adds optimizer steps that an epoch count cannot foresee: "
                "set trainer.max_steps (every optimizer step counts, recycled or not); run.time_budget can stop "
                "the run earlier."
            )
        from datasets import IterableDataset

        if isinstance(self.train_dataset, IterableDataset):
            raise ConfigError(
                "A prompt queue (SPARK's recycled tasks) needs a map-style training data set (one with a length), "
                "got an iterable one; load the data without streaming."
            )

    def set_rollout_engine(self, engine: RolloutEngine | None) -> None:
        """Generate with ``engine`` from now on (None: TRL's transformers generation)."""
        if engine is not None and self.args.vllm_importance_sampling_correction and self.loss_type == "vespo":
            raise ConfigError(
                "loss_type vespo consumes the sampler's importance ratio inside its own loss (TRL), which the "
                "posttrain rollout engines' correction (advantages x weight) cannot reproduce. Use another loss "
                "type, or set trainer.vllm_importance_sampling_correction: false to train without a correction."
            )
        self.rollout_engine = engine
        self._engine_step = self.state.global_step

    # ----------------------------------------------------------------------------- hook registration
    def add_advantage_transform(self, fn: AdvantageTransform) -> None:
        self.advantage_transforms.append(fn)

    def add_loss_mask_hook(self, fn: LossMaskHook) -> None:
        self.loss_mask_hooks.append(fn)

    def add_scored_hook(self, fn: ScoredHook) -> None:
        self.scored_hooks.append(fn)

    def log_metric(self, name: str, value: float) -> None:
        """Log a scalar with this step's metrics (averaged over the logging interval), e.g. from a hook."""
        self._metrics["train" if self.model.training else "eval"][name].append(float(value))

    @property
    def group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    # ----------------------------------------------------------------------------- rollout + scoring
    def _generate(self, prompts: list):
        with self.timer("gen"):
            return super()._generate(prompts)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        engine = self.rollout_engine
        if engine is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, **kwargs
            )
        if images is not None and any(img is not None for img in images):
            raise ValueError(
                "The posttrain rollout engines generate text only; images need rollout.engine: hf."
            )
        self._sync_engine_if_stale()
        # TRL repeats each prompt once per generation already, so one sample per row.
        rollouts = engine.generate(prompt_ids, 1, self._sampling_settings())
        engine.sleep()
        return rollouts.completion_ids, rollouts.logprobs

    def _sync_engine_if_stale(self) -> None:
        """Copy the current weights into the rollout engine once per optimizer step (also called by
        multi-turn rollout functions, which TRL runs instead of ``_generate_single_turn``)."""
        if self.rollout_engine is None or self.state.global_step == self._engine_step:
            return
        with self.timer("sync"):
            self.rollout_engine.sync_weights(
                self.model_wrapped
            )  # every process: ZeRO-3 gathers are collective
        self._engine_step = self.state.global_step

    def _sampling_settings(self) -> SamplingSettings:
        settings = SamplingSettings.from_args(self.args)
        extra = self.args.generation_kwargs or {}
        settings.min_tokens = int(extra.get("min_tokens", extra.get("min_new_tokens", 0)) or 0)
        return settings

    @property
    def _engine_is_correction(self) -> bool:
        return (
            self.rollout_engine is not None
            and self.args.vllm_importance_sampling_correction  # never vespo: refused in set_rollout_engine
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self.model.training:
            return self._score(inputs, prompts, completions, completion_ids_list)
        # Scoring held-out rows must not teach a stateful plugin (pay-per-search's history, ...).
        saved = {p.name: copy.deepcopy(p.state_dict()) for p in self.reward_plugins if p.is_stateful}
        try:
            return self._score(inputs, prompts, completions, completion_ids_list)
        finally:
            for plugin in self.reward_plugins:
                if plugin.name in saved:
                    plugin.load_state_dict(saved[plugin.name])

    def _score(self, inputs, prompts, completions, completion_ids_list):
        with self.timer("reward"):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._scored = None
            if not self._needs_gathered_batch():
                return rewards_per_func  # plain GRPO: no cross-process gather of rows and texts
            batch = self._gather_batch(inputs, prompts, completions, completion_ids_list, rewards_per_func)
            for col, plugin in enumerate(self.reward_plugins):
                if plugin.is_group:
                    rewards_per_func[:, col] = self._run_group_plugin(plugin, batch)
            self._scored = batch
        return rewards_per_func

    def _needs_gathered_batch(self) -> bool:
        hooks = self.advantage_transforms or self.loss_mask_hooks or self.scored_hooks or self.train_samples
        return bool(hooks) or any(p.is_group for p in self.reward_plugins)

    def _gather_batch(self, inputs, prompts, completions, completion_ids, rewards_per_func) -> ScoredBatch:
        n_local = len(prompts)
        index = self.accelerator.process_index
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
        output = super()._generate_and_score_completions(inputs)
        batch = self._scored
        if batch is not None and batch.mode == "train" and self.train_samples is not None:
            output, batch = self._keep_train_subset(output, batch)
        # Timed even when there is nothing to do, so every run logs the same phases.
        with self.timer("adv"):
            if batch is not None:  # None: plain GRPO, no transform or mask to apply
                advantages = gather(output["advantages"])  # (N,) global, in batch order
                for transform in self.advantage_transforms:
                    advantages = transform(advantages, batch)
                batch.advantages = advantages
                output["advantages"] = advantages[batch.process_slice]
                if self.loss_mask_hooks:
                    self._apply_loss_masks(output, batch)
        if self._engine_is_correction and "sampling_per_token_logps" in output:
            old = output.get("old_per_token_logps")
            if old is not None:  # generation batch reused over several steps: TRL computed pi_old already
                self._apply_importance_weights(output, old)
            # else: applied in _compute_loss from the update's own forward pass (no extra pass)
        if batch is not None and batch.mode == "train":
            for hook in self.scored_hooks:
                with self.timer("recycle"):
                    hook(batch)
        if self.model.training:
            self._generations += 1
        return output

    def _keep_train_subset(self, output: dict[str, Any], batch: ScoredBatch) -> tuple[dict, ScoredBatch]:
        """Cut a voted batch (group_size rows per prompt) to the ``train_samples`` rows trained on."""
        k, n = self.train_samples, len(batch.rows)
        keep = vote_subset(n, batch.group_size, k)
        stride = batch.group_size // k
        rewards = combined_rewards(batch.rewards_per_func, self.reward_weights)
        advantages = group_advantages(rewards[keep], k, self.scale_rewards)
        start, stop = batch.process_slice.start, batch.process_slice.stop
        local = torch.arange(0, stop - start, stride)  # start is a multiple of the stride (checked at init)
        n_local = stop - start
        out = {}
        for key, value in output.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n_local:
                out[key] = value[local.to(value.device)]
            elif isinstance(value, list) and len(value) == n_local:
                out[key] = [value[i] for i in local.tolist()]
            else:
                out[key] = value
        new_slice = slice(start // stride, stop // stride)
        out["advantages"] = advantages[new_slice].to(output["advantages"].device)
        mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        out["num_items_in_batch"] = gather(mask.sum()).sum()  # dapo/bnpo normalise by trained tokens
        subset = ScoredBatch(
            rows=[batch.rows[i] for i in keep.tolist()],
            prompts=[batch.prompts[i] for i in keep.tolist()],
            completions=[batch.completions[i] for i in keep.tolist()],
            completion_ids=[batch.completion_ids[i] for i in keep.tolist()],
            rewards_per_func=batch.rewards_per_func[keep.to(batch.rewards_per_func.device)],
            reward_names=batch.reward_names,
            group_size=k,
            process_slice=new_slice,
            mode=batch.mode,
            extra={**batch.extra, "votes": batch},
        )
        self._scored = subset
        return out, subset

    def _apply_loss_masks(self, output: dict[str, Any], batch: ScoredBatch) -> None:
        mask = output.get("tool_mask")
        if mask is None:
            mask = torch.ones_like(output["completion_mask"])
        for hook in self.loss_mask_hooks:
            extra = hook(output, batch)
            if extra is not None:
                mask = mask * extra.to(mask.dtype)
        output["tool_mask"] = mask
        # dapo/bnpo/cispo normalise by the number of trained tokens across processes: recount it.
        output["num_items_in_batch"] = gather((output["completion_mask"] * mask).sum()).sum()

    # ----------------------------------------------------------------------------- importance sampling
    def _apply_importance_weights(self, inputs: dict[str, Any], trainer_logps: torch.Tensor) -> None:
        """Advantages -> per-token ``A * w``, ``w`` = pi_train / pi_engine, truncated or masked."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        sampler = inputs["sampling_per_token_logps"]
        args = self.args
        weights = importance_weights(
            trainer_logps,
            sampler,
            mask,
            args.vllm_importance_sampling_mode,
            args.vllm_importance_sampling_clip_min,
            args.vllm_importance_sampling_clip_max,
        )
        inputs["advantages"] = token_advantages(inputs["advantages"], weights)
        mode = "train" if self.model.training else "eval"
        gap = (trainer_logps - sampler).abs()
        scored = mask * ~torch.isnan(gap)  # tokens the sampler could not score take no part, as in TRL
        totals = torch.stack([*masked_sum(torch.nan_to_num(gap), scored), *masked_sum(weights.float(), mask)])
        gap_sum, tokens, weight_sum, counted = self.accelerator.gather(totals).view(-1, 4).sum(0).tolist()
        self._metrics[mode]["rollout/logp_gap"].append(gap_sum / max(tokens, 1.0))
        self._metrics[mode]["rollout/is_weight_mean"].append(weight_sum / max(counted, 1.0))

    def _compute_loss(self, model, inputs):
        if self._engine_is_correction and "sampling_per_token_logps" in inputs:
            if "old_per_token_logps" not in inputs:
                # The loss's first forward pass gives pi_train; see _get_per_token_logps_and_entropies.
                inputs = dict(inputs)  # the buffered batch stays as generated
                self._pending_is = inputs
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._pending_is = None
        # Read after the loss: `inputs["advantages"]` now holds the importance-weighted ones when weighted.
        self._step_has_signal = self._step_has_signal or self._has_signal(inputs)
        if self.loss_constant is not None:  # sum / (B * max_completion_length) -> sum / (B * constant)
            loss = loss * constant_loss_scale(self.max_completion_length, self.loss_constant)
        return loss

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        pending, self._pending_is = self._pending_is, None
        if pending is not None:
            # TRL's _compute_loss reads inputs["advantages"] after this forward (pinned by a test):
            # the weights from these log-probs are in place before the loss uses them.
            self._apply_importance_weights(pending, out[0].detach())
        return out

    # ----------------------------------------------------------------------------- timing
    def _prepare_inputs(self, generation_batch):
        start = time.perf_counter()
        try:
            if self.feed is not None and self.model.training and self._starts_generation():
                generation_batch = self._feed_batch()
            return super()._prepare_inputs(generation_batch)
        finally:
            self._prepare_seconds += time.perf_counter() - start

    # ----------------------------------------------------------------------------- the prompt feed
    def _starts_generation(self) -> bool:
        """Whether TRL's ``_prepare_inputs`` generates at this micro-step (its own condition)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self._step % generate_every == 0 or self._buffered_inputs is None

    def _feed_batch(self) -> list[dict[str, Any]]:
        """This process's slice of the feed's next global generation batch."""
        n_groups = self.args.generation_batch_size // self.num_generations
        steps = self.args.steps_per_generation * self.num_iterations / self.args.gradient_accumulation_steps
        rows, recycled = self.feed.next_batch(n_groups, steps)
        self.log_metric("feed/recycled_share", recycled / n_groups)
        self.log_metric("feed/recycled_steps", self.feed.recycled_steps)
        self.log_metric(
            "feed/data_passes", self.feed.pass_index + self.feed.position / len(self.feed.dataset)
        )
        n_local = len(rows) // self.accelerator.num_processes
        start = self.accelerator.process_index * n_local
        return rows[start : start + n_local]

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self.feed is None:
            return loader
        return PlaceholderLoader(len(loader), self.train_dataset)  # the Trainer counts steps from it

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        if isinstance(dataloader, PlaceholderLoader):
            return dataloader.skipping(num_batches)  # the feed restores its own position
        return super().get_resumed_dataloader(dataloader, num_batches)

    def training_step(self, model, inputs, num_items_in_batch):
        start = time.perf_counter()
        self._prepare_seconds = 0.0
        output = super().training_step(model, inputs, num_items_in_batch)
        self.timer.add("update", time.perf_counter() - start - self._prepare_seconds)
        if self._step % self.current_gradient_accumulation_steps == 0:
            for key, seconds in self.timer.pop().items():
                self._metrics["train"][key].append(seconds)
        return output

    # ----------------------------------------------------------------------------- empty steps
    def _has_signal(self, inputs: dict[str, Any]) -> bool:
        """Whether this micro-batch can produce a non-zero gradient: some token that enters the loss has a
        non-zero (importance-weighted) advantage, or a KL or entropy term acts on its own."""
        if self.beta != 0.0 or getattr(self, "_entropy_bonus_enabled", False):
            return True
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        return bool(((advantages != 0) & (mask != 0)).any())

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.is_deepspeed_enabled:  # DeepSpeed drives its own optimizer step; left as it is
            return optimizer
        step = optimizer.step

        def step_if_signal(*args, **kwargs):
            signal = torch.tensor(float(self._step_has_signal), device=self.accelerator.device)
            self._step_has_signal = False
            if self.accelerator.reduce(signal, reduction="sum").item() == 0:  # no process has a gradient
                self.skipped_steps += 1
                self._metrics["train"]["train/skipped_steps"].append(float(self.skipped_steps))
                return None
            return step(*args, **kwargs)

        optimizer.step = step_if_signal
        return optimizer

    # ----------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        state = {
            "rewards": {p.name: p.state_dict() for p in self.reward_plugins if p.is_stateful},
            "queue": self.queue.state_dict() if self.queue is not None else None,
            "feed": self.feed.state_dict() if self.feed is not None else None,
            "generations": self._generations,
        }
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        torch.save(state, os.path.join(folder, STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            return
        state = torch.load(path, weights_only=False)  # our own file, written by _save_checkpoint
        for plugin in self.reward_plugins:
            if plugin.is_stateful and plugin.name in state["rewards"]:
                plugin.load_state_dict(state["rewards"][plugin.name])
        if self.queue is not None and state.get("queue") is not None:
            self.queue.load_state_dict(state["queue"])
        if self.feed is not None and state.get("feed") is not None:
            self.feed.load_state_dict(state["feed"])
        self._generations = state.get("generations", 0)
        logger.info("Restored reward-plugin state, the prompt queue and the feed from %s", path)
