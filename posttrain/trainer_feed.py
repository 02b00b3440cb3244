"""Where the trainer's generation batches come from: TRL's dataloader, or posttrain's prompt feed
(posttrain/feed.py) when a method's queue (SPARK), DAPO's dynamic sampling (posttrain/dynamic.py) or
asynchronous generation (posttrain/rollout/asynchronous.py) needs to compose batches itself. The feed is
seeded and checkpointed, so every pass over the data is reproducible and a resume continues it exactly."""

from __future__ import annotations

import time

from posttrain.dynamic import DynamicSampler
from posttrain.errors import ConfigError
from posttrain.feed import PlaceholderLoader, PromptFeed, check_feed, epoch_seeded
from posttrain.queue import GroupQueue


class FeedMixin:
    """Mixed into :class:`posttrain.trainer.PosttrainTrainer` before ``GRPOTrainer``."""

    def start_feed(self) -> None:
        """Compose generation batches from the data and the queue (an empty one if no method has one)."""
        check_feed(self.args, self.train_dataset)
        if self.queue is None:
            self.queue = GroupQueue()  # empty: the feed serves the data stream alone
        self.feed = PromptFeed(
            self.train_dataset, self.queue, self.num_generations, self.args.seed, self.shuffle_dataset
        )

    def enable_dynamic_sampling(self, max_rounds: int) -> None:
        """Replace groups without reward variance by new ones, up to ``max_rounds`` rounds per batch
        (DAPO; posttrain/dynamic.py). Extra prompts come from the prompt feed, started here if needed."""
        n_groups = self.args.generation_batch_size // self.num_generations
        acc = self.accelerator
        self.dynamic = DynamicSampler(
            max_rounds, self.num_generations, n_groups, acc.num_processes, acc.process_index
        )
        if self.feed is None:
            self.start_feed()

    def enable_async_generation(self, engine, backend, max_staleness: int) -> None:
        """Generate the next batches while updating, at most ``max_staleness`` optimizer steps behind
        (``rollout.async``; posttrain/rollout/asynchronous.py). The prompt feed composes the batches ahead."""
        from posttrain.rollout.asynchronous import AsyncGeneration
        from posttrain.rollout.generation import importance_correction, refuse_two_engines

        if self.recycles:
            raise ConfigError(
                "rollout.async composes batches ahead of training, but this method's recycled tasks (SPARK) are "
                "built from the batch just trained; set rollout.async.enabled false."
            )
        if self.rollout_func is not None or self.tools:
            raise ConfigError(
                "rollout.async generates single-turn completions ahead; a multi-turn rollout function or tool "
                "loop (pay-per-search) drives the engine itself: set rollout.async.enabled false."
            )
        if self._is_vlm:
            raise ConfigError(
                "rollout.async generates text only; for a vision model set rollout.async.enabled false."
            )
        if self.generation.engine is not None:
            self.generation.close()
        if engine is not None:  # the main process's engine
            refuse_two_engines(self)
        # Only the main process holds the engine, but every process weighs the samples it broadcasts.
        self.correction = importance_correction(self)
        self.generation = AsyncGeneration(engine, backend, self, max_staleness, self.correction is not None)
        if self.feed is None:
            self.start_feed()

    def next_rows(self, trainer=None):  # `trainer`: the dynamic sampler passes it
        """This process's rows of the next generation batch (composed ahead under asynchronous generation)."""
        return self.generation.next_rows(self, self.feed)

    def _prepare_inputs(self, generation_batch):
        start = time.perf_counter()
        try:
            generate_every = self.args.steps_per_generation * self.num_iterations
            starts = self._step % generate_every == 0 or self._buffered_inputs is None  # TRL's condition
            if self.feed is not None and self.model.training and starts:
                generation_batch = self.next_rows()
            return super()._prepare_inputs(generation_batch)
        finally:
            self._prepare_seconds += time.perf_counter() - start

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self.feed is None:
            return loader
        return PlaceholderLoader(len(loader), self.train_dataset)  # the Trainer counts steps from it

    def _get_train_sampler(self, dataset=None):
        return epoch_seeded(super()._get_train_sampler(dataset))  # resumable in any epoch

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        if isinstance(dataloader, PlaceholderLoader):
            return dataloader.skipping(num_batches)  # the feed restores its own position
        return super().get_resumed_dataloader(dataloader, num_batches)
