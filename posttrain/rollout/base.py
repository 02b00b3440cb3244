"""The rollout-engine interface: what the trainer needs from whatever generates its completions.

Four methods. ``generate`` samples ``n`` completions for each tokenised prompt and returns their token
ids with the sampler's per-token log-probabilities; ``sync_weights`` copies the trainer's current
weights into the engine; ``sleep``/``wake_up`` free and restore the engine's memory between phases
where the backend supports it (vLLM on GPU), and are no-ops elsewhere; ``close`` releases it.

Implementations: :class:`posttrain.rollout.hf.HFEngine` (transformers ``generate``, runs anywhere),
:class:`posttrain.rollout.vllm.VLLMEngine` (vLLM in the trainer's processes, "colocate") and
:class:`posttrain.rollout.client.ServerEngine` (a ``posttrain vllm-serve`` process on its own GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from posttrain.errors import RolloutError


@dataclass
class SamplingSettings:
    """How completions are sampled; the same fields mean the same thing in every engine."""

    max_tokens: int = 256
    """Most new tokens per completion (TRL's ``max_completion_length``)."""
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k cut."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    """Forbid end-of-sequence before this many tokens (benchmarks use it to force a length)."""
    seed: int | None = None
    """Seed for this call's sampling; None = the engine's running generator."""
    logprobs: bool = True
    """Return the sampled tokens' log-probabilities (after temperature, as the sampler saw them)."""
    stop: list[str] | None = None
    """Stop a completion right after the first occurrence of any of these strings, which is kept in the
    output (its last token too, with any text that token carries past the string). None = no stop strings.
    The multi-turn tool loop (``posttrain.rollout.tools``) stops each turn at ``</search>``/``</answer>``."""

    @classmethod
    def from_args(cls, args: Any) -> SamplingSettings:
        """From a TRL ``GRPOConfig``: the trainer's own sampling settings."""
        return cls(
            max_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or 0,
            min_p=args.min_p or 0.0,
            repetition_penalty=args.repetition_penalty,
        )


@dataclass
class Rollouts:
    """``n`` completions per prompt, prompt-major: completions of prompt i at ``i*n .. i*n+n-1``."""

    completion_ids: list[list[int]]
    """Token ids of each completion, up to and including its end-of-sequence token if it produced one."""
    logprobs: list[list[float]] | None = None
    """Per-token log-probabilities of the sampled tokens, aligned with ``completion_ids``."""
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer calls. See the module docstring."""

    name: str

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts: ...

    def sync_weights(self, model: Any) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...

    def close(self) -> None: ...


def broadcast_outcome(result: Any, error: RolloutError | None, distributed: bool) -> Any:
    """The main process's result, or its error, on every process: returned, or raised everywhere alike."""
    if distributed:
        from accelerate.utils import broadcast_object_list

        box = [result, str(error) if error is not None else None]
        broadcast_object_list(box)
        result, message = box
        if message is not None and error is None:
            error = RolloutError(message)
    if error is not None:
        raise error
    return result
