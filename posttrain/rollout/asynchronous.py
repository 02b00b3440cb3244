"""Asynchronous generation: the engine generates the next batches while the trainer updates on this one.

    rollout: {mode: server, async: {enabled: true, max_staleness: 1}}

With ``max_staleness: k`` the trainer keeps ``k`` generation batches in flight ahead of the one it
trains on (``k // S`` when one generation batch feeds ``S`` optimizer steps). One worker thread on the
main process sends the engine its jobs in order, so the weights each rollout is generated with are
known exactly::

    step t (main thread)                      worker thread (FIFO)             engine
    ─ snapshot weights v_t (collective) ─────▶ push v_t ──────────────────────▶ load v_t
    ─ compose batch t+k from the feed ───────▶ generate batch t+k ────────────▶ with v_t
    ─ wait for batch t (generated with v_t-k) ◀──────────────────────────────── rollouts, version
    ─ score, update ...                        (generates t+k meanwhile)

- **Versions.** A version is the optimizer step whose weights produced a rollout; the engine reports the
  version it holds (the server returns it with every answer). The policy lag of a batch is the trainer's
  step minus that version; a batch whose lag exceeds ``k`` (or whose version is unknown: a restarted
  server holds its start weights) is never trained on: it is generated again with the current weights
  and counted (``async/regenerated``). Logged: ``async/lag``, ``async/wait_s``, ``async/push_s``.
- **Importance correction.** Rollouts carry the engine's log-probabilities; the trainer's correction
  (TIS/MIS, ``trainer.vllm_importance_sampling_*``) weighs each token by pi_theta / pi_engine, which
  covers both the engine's numerics and the policy lag.
- **Data order.** Batches are composed from the prompt feed in the same order as a synchronous run; only
  the weights that generate them change. A checkpoint stores the feed position of the oldest batch not
  yet trained on, so ``--resume`` composes and generates the in-flight batches again: none is lost and
  none is trained twice.
- **Several processes.** Every process composes the same global batch (the feed is the same on each);
  the main process alone talks to the engine; the results are broadcast and each process takes its rows.
- ``max_staleness: 0`` is the synchronous trainer itself (nothing of this module is installed).

Engines: the server engine (``rollout.mode: server``, either backend) and, in the trainer's process, a
transformers engine on its own copy of the weights (``rollout.engine: hf``). vLLM colocated shares the
trainer's processes and devices and cannot generate while they train: refused at start.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from posttrain.errors import ConfigError, RolloutError
from posttrain.rollout.base import Rollouts, SamplingSettings, broadcast_outcome
from posttrain.rollout.weights import inference_weights

logger = logging.getLogger(__name__)


@dataclass
class AsyncRollout:
    """``rollout.async``: generation overlapped with training, with a bounded policy lag (module docstring)."""

    enabled: bool = False
    """Generate the next batches while the trainer updates."""
    max_staleness: int = 1
    """k: a batch is trained on at most k optimizer steps after the weights that generated it (0 = sync)."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"rollout.async.enabled must be true or false, got {self.enabled!r}.")
        k = self.max_staleness
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(
                "rollout.async.max_staleness must be an integer >= 0 (optimizer steps a rollout may lag behind "
                f"the weights it is trained with; 0 = synchronous), got {k!r}."
            )

    @property
    def active(self) -> bool:
        return self.enabled and self.max_staleness > 0

    @classmethod
    def from_value(cls, value: Any) -> AsyncRollout:
        """A mapping ``{enabled, max_staleness}``, a bare ``true``/``false``, or None (off)."""
        if value is None or isinstance(value, AsyncRollout):
            return value or cls()
        if isinstance(value, bool):
            return cls(enabled=value)
        if not isinstance(value, dict):
            raise ConfigError(
                f"rollout.async must be a mapping like {{enabled: true, max_staleness: 1}}, got {value!r}."
            )
        unknown = set(value) - {"enabled", "max_staleness"}
        if unknown:
            raise ConfigError(
                f"Unknown key(s) {sorted(unknown)} in rollout.async; it takes enabled and max_staleness."
            )
        return cls(**value)


# ------------------------------------------------------------------------------------------- pure rules
def policy_lag(step: int, version: int | None) -> int | None:
    """Optimizer steps between the weights that generated a rollout and the step training on it."""
    return None if version is None else step - version


def too_stale(step: int, version: int | None, max_staleness: int) -> bool:
    """A rollout is never trained on more than ``max_staleness`` steps after its weights, nor when its
    weights are unknown (an engine restarted with its start weights)."""
    lag = policy_lag(step, version)
    return lag is None or lag > max_staleness or lag < 0


def prefetch_depth(max_staleness: int, steps_per_batch: int) -> int:
    """Generation batches to keep in flight: each one trained ``depth * steps_per_batch`` steps after the
    weights that generated it, which must stay within ``max_staleness``."""
    depth = max_staleness // steps_per_batch
    if depth < 1:
        raise ConfigError(
            f"rollout.async.max_staleness is {max_staleness} but one generation batch feeds {steps_per_batch} "
            "optimizer steps (steps_per_generation x num_iterations / gradient_accumulation_steps), so a batch "
            f"generated ahead would always lag more: set rollout.async.max_staleness >= {steps_per_batch}."
        )
    return depth


# ------------------------------------------------------------------------------------------- backends
class ServerBackend:
    """The server engine seen from the worker thread (main process only, no collectives)."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        return self.engine.generate_on_main(prompt_ids, n, sampling)

    def load(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        self.engine.push_on_main(tensors, version)


class LocalBackend:
    """A transformers engine in the trainer's process, on its own copy of the weights."""

    def __init__(self, engine):
        self.engine = engine
        self.version: int | None = None

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        out = self.engine.generate(prompt_ids, n, sampling)
        out.info["weights_version"] = self.version
        return out

    def load(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        self.engine.load_weights(list(tensors.items()))
        self.version = version


class RolloutWorker:
    """One thread that sends the engine its jobs (weight pushes, generations) in submission order."""

    def __init__(self, backend):
        self.backend = backend
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posttrain-rollout")

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> Future:
        return self.pool.submit(self.backend.generate, prompt_ids, 1, sampling)

    def push(self, tensors: dict[str, torch.Tensor], version: int) -> Future:
        return self.pool.submit(self.backend.load, tensors, version)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- the pipeline
@dataclass
class _Batch:
    """A generation batch composed ahead: the feed position before it, its global rows, its rollouts."""

    feed_state: dict[str, Any]
    rows: list[dict[str, Any]]
    recycled: int
    prompt_ids: list[list[int]] | None = None  # main process
    future: Future | None = None  # main process
    info: dict[str, Any] = field(default_factory=dict)


class AsyncGeneration:
    """The trainer's generation when ``rollout.async`` is on (module docstring). Same interface as
    :mod:`posttrain.rollout.generation`'s classes, plus :meth:`next_rows` for the feed."""

    def __init__(self, engine, backend, trainer, max_staleness: int, corrects: bool):
        from posttrain.rollout.generation import sampling_settings

        args = trainer.args
        steps = args.steps_per_generation * trainer.num_iterations // args.gradient_accumulation_steps
        self.depth = prefetch_depth(max_staleness, max(1, steps))
        self.engine = engine
        self.corrects = corrects
        self.max_staleness = max_staleness
        self.sampling = sampling_settings(args)
        acc = trainer.accelerator
        self.num_processes, self.process = acc.num_processes, acc.process_index
        self.is_main = acc.is_main_process
        self.worker = RolloutWorker(backend) if self.is_main else None
        self.pushed: int | None = None  # the step whose weights were last pushed (None: none yet)
        self.ahead: deque[_Batch] = deque()  # composed, not yet trained on; [0] is the next to train
        self._pushes: list[Future] = []  # weight pushes whose outcome nobody has looked at yet
        self.regenerated = 0

    # ----------------------------------------------------------------------------- the feed's side
    def next_rows(self, trainer, feed) -> list[dict[str, Any]]:
        """This process's rows of the next batch to train on; keeps ``depth`` batches in flight after it."""
        self._push(trainer)
        n_groups = trainer.args.generation_batch_size // trainer.num_generations
        while len(self.ahead) < self.depth + 1:
            self.ahead.append(self._compose(trainer, feed, n_groups))
        head = self.ahead[0]
        trainer.log_metric("feed/recycled_share", head.recycled / n_groups)
        n_local = len(head.rows) // self.num_processes
        return head.rows[self.process * n_local :][:n_local]

    def checkpoint_state(self, feed) -> dict[str, Any]:
        """The feed position to resume from: before the oldest batch not yet trained on."""
        return dict(self.ahead[0].feed_state) if self.ahead else feed.state_dict()

    def reset(self) -> None:
        """Forget the batches in flight (a checkpoint's feed position was restored: they come again)."""
        for batch in self.ahead:
            if batch.future is not None:
                batch.future.cancel()
        self.ahead.clear()

    def _compose(self, trainer, feed, n_groups: int) -> _Batch:
        state = feed.state_dict()
        args = trainer.args
        steps = args.steps_per_generation * trainer.num_iterations / args.gradient_accumulation_steps
        rows, recycled = feed.next_batch(n_groups, steps)
        batch = _Batch(state, rows, recycled)
        if self.is_main:
            batch.prompt_ids = trainer._tokenize_prompts([row["prompt"] for row in rows])[0]
            batch.future = self.worker.generate(batch.prompt_ids, self.sampling)
        return batch

    def _push(self, trainer) -> None:
        """Queue the current weights for the engine once per optimizer step. The snapshot is collective
        (ZeRO-3 gathers each weight); the push itself runs on the worker, after the jobs before it."""
        step = trainer.state.global_step
        if self.pushed == step:
            return
        start = time.perf_counter()
        snapshot = {}
        for name, tensor in inference_weights(trainer.model_wrapped):
            if self.is_main:  # a copy: the trainer updates its weights in place while the push waits
                snapshot[name] = tensor.detach().to("cpu", copy=True).contiguous()
        if self.is_main:
            self._pushes.append(self.worker.push(snapshot, step))
        self.pushed = step
        trainer.log_metric("async/push_s", time.perf_counter() - start)

    # ----------------------------------------------------------------------------- the trainer's side
    def single_turn(self, trainer, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        if images is not None and any(img is not None for img in images):
            raise ValueError("Asynchronous generation is text-only; images need rollout.async.enabled false.")
        if not trainer.model.training:  # held-out evaluation: now, with the current weights
            return self._generate_now(trainer, prompt_ids)
        if not self.ahead:
            raise RuntimeError("Asynchronous generation: a batch was scored that the feed never composed.")
        batch = self.ahead[0]
        start = time.perf_counter()  # (inside the trainer's time/gen: the wait is what generation costs now)
        out = self._settle(batch.future.result if self.is_main else None, with_prompts=batch.prompt_ids)
        trainer.log_metric("async/wait_s", time.perf_counter() - start)
        step = trainer.state.global_step
        if too_stale(step, out["version"], self.max_staleness):
            logger.info(
                "Rollouts of weights version %s are too old for step %d (max_staleness %d): generating them again.",
                out["version"],
                step,
                self.max_staleness,
            )
            self.regenerated += 1
            self._push(trainer)
            future = self.worker.generate(batch.prompt_ids, self.sampling) if self.is_main else None
            out = self._settle(future.result if future is not None else None, with_prompts=batch.prompt_ids)
            if too_stale(step, out["version"], self.max_staleness):
                raise RolloutError(
                    f"The rollout engine generated with weights version {out['version']} right after step {step}'s "
                    "weights were pushed to it; is another trainer pushing to the same server?"
                )
        self.ahead.popleft()
        trainer.log_metric("async/lag", float(policy_lag(step, out["version"])))
        trainer.log_metric("async/regenerated", float(self.regenerated))
        n_local = len(out["completion_ids"]) // self.num_processes
        lo, hi = self.process * n_local, (self.process + 1) * n_local
        expected = out["prompt_ids"][lo:hi]
        if [list(p) for p in prompt_ids] != [list(p) for p in expected]:
            raise RuntimeError(
                "Asynchronous generation: the prompts being scored differ from the ones generated ahead "
                "(a hook changed the rows after the feed composed them?); turn it off with "
                "--rollout.async.enabled false."
            )
        logprobs = out["logprobs"][lo:hi] if out["logprobs"] is not None else None
        return out["completion_ids"][lo:hi], logprobs

    def _generate_now(self, trainer, prompt_ids):
        """Every process's prompts generated on the main process with the current weights, rows returned."""
        from accelerate.utils import gather_object

        self._push(trainer)
        per_process = gather_object([list(prompt_ids)]) if self.num_processes > 1 else [list(prompt_ids)]
        everything = [p for prompts in per_process for p in prompts]
        future = self.worker.generate(everything, self.sampling) if self.is_main else None
        out = self._settle(future.result if future is not None else None)
        start = sum(len(p) for p in per_process[: self.process])
        stop = start + len(prompt_ids)
        logprobs = out["logprobs"][start:stop] if out["logprobs"] is not None else None
        return out["completion_ids"][start:stop], logprobs

    def _settle(self, wait, with_prompts=None) -> dict[str, Any]:
        """Wait (main) for a generation; every process gets its rollouts, or the same error."""
        result, error = None, None
        if wait is not None:
            try:
                rollouts: Rollouts = wait()
                self._check_pushes()
                result = {
                    "completion_ids": rollouts.completion_ids,
                    "logprobs": rollouts.logprobs,
                    "version": rollouts.info.get("weights_version"),
                    "prompt_ids": with_prompts,
                }
            except Exception as exc:  # the worker's error, raised on every process below
                error = (
                    exc
                    if isinstance(exc, RolloutError)
                    else RolloutError(
                        f"The rollout engine failed while generating ahead: {type(exc).__name__}: {exc}"
                    )
                )
        return broadcast_outcome(result, error, self.num_processes > 1)

    def _check_pushes(self) -> None:
        """Raise the error of a weight push that failed (the worker ran it after the generations before it)."""
        done = [f for f in self._pushes if f.done()]
        self._pushes = [f for f in self._pushes if not f.done()]
        for future in done:
            future.result()

    def sync(self, trainer) -> None:
        raise ConfigError(
            "Asynchronous generation sends the engine its work from one worker thread; multi-turn rollout "
            "functions (the search tool loop) drive the engine themselves: set rollout.async.enabled false."
        )

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.engine is not None:  # None on the processes that do not generate (in-process engine)
            self.engine.close()
