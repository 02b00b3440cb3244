"""The prompt feed: every training generation batch, composed from the data stream and the queue.

With a queue (SPARK's recycled judge and reflection tasks), a generation batch of ``n`` groups takes
``k`` groups from the queue (``GroupQueue.take_count``: all or none in ``phase`` mode, a share in
``interleave`` mode) and the other ``n - k`` from the data, in order::

    data stream   | d0 d1 d2 d3 | d4 d5 d6 d7 | d8 ...       (a pass: a permutation of the data set)
    queue                       | q0 q1 q2 q3 |
    batches       | d0 d1 d2 d3 | q0 q1 q2 q3 | d4 d5 d6 d7 | ...    (phase: a whole recycled batch)
                  | d0 d1 d2 q0 | d3 d4 d5 q1 | ...                 (interleave: a share of each)

Recycled groups come *in addition* to the data, as SPARK's auxiliary phase does: no data prompt is
skipped, every prompt is generated once per pass before any prompt of the next pass, and a batch may
straddle two passes. The data order is the feed's own: pass ``p`` is a permutation of the data set
drawn from ``(seed, p)`` (or the data set's order with ``shuffle=False``), the same on every process,
so each process builds the same global batch and takes its own slice; no rows are exchanged.

Because recycled batches take optimizer steps that an epoch count cannot foresee, a run with a feed
is bounded by ``max_steps`` (every optimizer step counts, recycled or not) or by a time budget. The
trainer logs the share of recycled groups per batch (``feed/recycled_share``) and the optimizer
steps spent on recycled tasks so far (``feed/recycled_steps``).

    feed = PromptFeed(train_dataset, queue, group_size=8, seed=0)
    rows = feed.next_batch(n_groups=16)         # 16 * 8 rows, each group's row repeated 8 times
"""

from __future__ import annotations

from typing import Any

import torch

from posttrain.errors import ConfigError
from posttrain.queue import GroupQueue


def check_feed(args, dataset) -> None:
    """A feed needs ``max_steps`` (recycled batches are steps an epoch count cannot foresee) and a map-style
    data set (its passes are permutations of the rows)."""
    if args.max_steps <= 0:
        raise ConfigError(
            "SPARK's recycled tasks and DAPO's dynamic sampling draw prompts at a pace an epoch count cannot "
            "foresee: set trainer.max_steps (every optimizer step counts); run.time_budget can stop the run "
            "earlier. (For DAPO without it: --method.dynamic_sampling.enabled false.)"
        )
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):
        raise ConfigError(
            "SPARK's recycled tasks and DAPO's dynamic sampling need a map-style training data set (one with a "
            "length), got an iterable one; load the data without streaming."
        )


class PromptFeed:
    """The data stream plus a queue, composed into generation batches of whole groups (module docstring)."""

    def __init__(self, dataset, queue: GroupQueue, group_size: int, seed: int = 0, shuffle: bool = True):
        if len(dataset) == 0:
            raise ValueError("The training data set is empty.")
        self.dataset = dataset
        self.queue = queue
        self.group_size = group_size
        self.seed = seed
        self.shuffle = shuffle
        self.pass_index = 0
        """Passes over the data set started so far, minus one (the current pass)."""
        self.position = 0
        """Data prompts of the current pass already generated."""
        self.batches = 0
        """Generation batches composed so far."""
        self.recycled_steps = 0.0
        """Optimizer steps spent on recycled groups so far (a mixed batch counts by its share)."""
        self._order = self._permutation(0)

    def _permutation(self, pass_index: int) -> list[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index)
        return torch.randperm(n, generator=generator).tolist()

    def _next_data_row(self) -> dict[str, Any]:
        if self.position == len(self._order):
            self.pass_index += 1
            self.position = 0
            self._order = self._permutation(self.pass_index)
        row = self.dataset[self._order[self.position]]
        self.position += 1
        return dict(row)

    def next_batch(self, n_groups: int, steps_per_batch: float = 1.0) -> tuple[list[dict[str, Any]], int]:
        """The next global generation batch: ``n_groups * group_size`` rows, and how many groups were
        recycled (the last ones of the batch). ``steps_per_batch``: optimizer steps this batch feeds."""
        k = self.queue.take_count(n_groups)  # the same on every process: each holds the same queue
        groups = [self._next_data_row() for _ in range(n_groups - k)] + self.queue.pop(k)
        keys: dict[str, None] = {}
        for row in groups:
            keys.update(dict.fromkeys(row))
        rows = [{key: row.get(key) for key in keys} for row in groups for _ in range(self.group_size)]
        self.batches += 1
        self.recycled_steps += steps_per_batch * k / n_groups
        return rows, k

    def local_batch(self, trainer) -> list[dict[str, Any]]:
        """The trainer's process's slice of the next global generation batch; logs the recycled share."""
        args = trainer.args
        n_groups = args.generation_batch_size // trainer.num_generations
        steps = args.steps_per_generation * trainer.num_iterations / args.gradient_accumulation_steps
        rows, recycled = self.next_batch(n_groups, steps)
        trainer.log_metric("feed/recycled_share", recycled / n_groups)
        trainer.log_metric("feed/recycled_steps", self.recycled_steps)
        trainer.log_metric("feed/data_passes", self.pass_index + self.position / len(self.dataset))
        n_local = len(rows) // trainer.accelerator.num_processes
        return rows[trainer.accelerator.process_index * n_local :][:n_local]

    def state_dict(self) -> dict[str, Any]:
        return {
            "pass_index": self.pass_index,
            "position": self.position,
            "batches": self.batches,
            "recycled_steps": self.recycled_steps,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state.get("seed", self.seed)
        self.shuffle = state.get("shuffle", self.shuffle)
        self.pass_index = state["pass_index"]
        self.position = state["position"]
        self.batches = state["batches"]
        self.recycled_steps = state["recycled_steps"]
        self._order = self._permutation(self.pass_index)


class PlaceholderLoader:
    """Stands in for the training dataloader when a :class:`PromptFeed` supplies the rows.

    The Trainer's loop still counts micro-batches from it (``len``), one placeholder per micro-batch;
    the trainer replaces the placeholder at every generation with the feed's rows.
    """

    def __init__(self, length: int, dataset, skip: int = 0):
        self.length = length
        self.dataset = dataset  # for the Trainer's count of examples
        self.skip = skip

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self.length - self.skip):
            yield []

    def set_epoch(self, epoch: int) -> None:
        """The feed keeps its own passes; the Trainer's epochs only count steps."""

    def skipping(self, n: int) -> PlaceholderLoader:
        return PlaceholderLoader(self.length, self.dataset, skip=n)


def epoch_seeded(sampler):
    """TRL's ``RepeatSampler`` made resumable across epochs: its shuffle becomes a function of (seed,
    epoch), set by transformers' ``set_epoch`` at each epoch start. TRL draws every epoch's order from
    one generator whose state no checkpoint holds, so a run resumed in a later epoch drew another order
    than the uninterrupted run. Epoch 0 draws exactly TRL's order."""
    from trl.trainer.grpo_trainer import RepeatSampler

    if type(sampler) is not RepeatSampler or not sampler.shuffle:
        return sampler

    class EpochSeededSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed((self.seed or 0) + epoch)

    sampler.__class__ = EpochSeededSampler  # same object and settings; one method more
    if sampler.seed is None:
        sampler.generator.manual_seed(0)
    return sampler
