"""What the trainer adds to TRL's checkpoints: the state of its plugins, hooks, queue and feed, written
atomically (staged, sealed with a manifest, then renamed: posttrain/checkpoints.py) and read back on
resume (posttrain/state.py), and taking a checkpoint saved at ``max_steps`` as finished."""

from __future__ import annotations

import os

from posttrain import state as checkpoint_state
from posttrain.checkpoints import save_atomically


class CheckpointMixin:
    """Mixed into :class:`posttrain.trainer.PosttrainTrainer` before ``GRPOTrainer``."""

    def _save_checkpoint(self, model, trial):
        def write(folder: str) -> None:
            super(CheckpointMixin, self)._save_checkpoint(model, trial)
            if self.args.should_save:
                hooks = [*self.scored_hooks, self.gate, self.guard]
                # An asynchronous generation has composed batches ahead: resume before the untrained ones.
                feed = self.generation.checkpoint_state(self.feed) if self.feed is not None else None
                checkpoint_state.save(folder, self.reward_plugins, self.queue, feed, self._generations, hooks)

        save_atomically(self, trial, write)  # staged, sealed with a manifest, then renamed

    def load_finished(self, checkpoint: str) -> None:
        """Take the weights and state of a checkpoint at ``max_steps`` (transformers would train one more
        step on resuming from it)."""
        from transformers import TrainerState

        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            hooks = [*self.scored_hooks, self.gate, self.guard]
            restored = checkpoint_state.load(checkpoint, self.reward_plugins, self.queue, self.feed, hooks)
            self.generation.reset()  # batches generated ahead of the restored position come again
            self._generations = (restored or {}).get("generations", 0)
