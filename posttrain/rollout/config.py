"""The ``rollout`` section of a recipe: which engine generates the completions, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from posttrain.errors import ConfigError
from posttrain.rollout.asynchronous import AsyncRollout

ENGINES = ("hf", "vllm")
MODES = ("colocate", "server")
WEIGHT_SYNC = ("auto", "reload", "load")


@dataclass
class RolloutConfig:
    """``rollout: {engine: vllm, mode: colocate}``; every field has a working default."""

    engine: str = "hf"
    """``hf`` (transformers generate, runs anywhere) or ``vllm`` (needs vLLM: ``make test-vllm`` env)."""
    mode: str = "colocate"
    """``colocate`` (in the trainer's processes) or ``server`` (a ``posttrain vllm-serve`` process, whose own
    ``--engine`` is vllm or hf)."""
    server_url: str = "http://127.0.0.1:8000"
    """Server mode: where ``posttrain vllm-serve`` listens."""
    server_timeout: float = 240.0
    """Server mode: seconds to wait for the server to come up at start."""
    request_timeout: float = 600.0
    """Server mode: seconds one generate or weight push may take."""
    retries: int = 4
    """Server mode: retries of a failed request (back-off 1, 2, 4, ... s) before the run stops."""
    dtype: str = "auto"
    """vLLM weights dtype; ``auto`` = bf16/fp16 for an fp32 checkpoint (vLLM's rule)."""
    enforce_eager: bool = False
    """vLLM: skip torch.compile/CUDA graphs (start-up 17 s instead of ~85 s on CPU, ~14% slower)."""
    max_model_len: int | None = None
    """vLLM context length; None = the model's. Prompt + completion must fit."""
    gpu_memory_utilization: float = 0.3
    """vLLM colocate on GPU: share of GPU memory for weights + KV cache (the trainer needs the rest)."""
    tensor_parallel_size: int = 1
    """vLLM: GPUs per engine (server mode; colocate supports 1)."""
    enable_sleep_mode: bool = False
    """vLLM colocate on GPU: free the KV cache and weights while the trainer updates (level 2 sleep)."""
    cpu_kvcache_gib: int = 2
    """vLLM on CPU: KV-cache size (``VLLM_CPU_KVCACHE_SPACE``) unless that variable is already set."""
    weight_sync: str = "auto"
    """``reload`` (``collective_rpc("reload_weights")``, works on vLLM's CPU backend), ``load``
    (per-parameter ``load_weights``, TRL's GPU path) or ``auto`` (reload on CPU, load on GPU)."""

    async_: Any = None
    """``rollout.async: {enabled, max_staleness}``: generate the next batches while the trainer updates, with
    a bounded policy lag (:mod:`posttrain.rollout.asynchronous`)."""

    def __post_init__(self) -> None:
        self.async_ = AsyncRollout.from_value(self.async_)
        if self.engine not in ENGINES:
            raise ConfigError(f"rollout.engine must be one of {', '.join(ENGINES)}, got {self.engine!r}.")
        if self.mode not in MODES:
            raise ConfigError(f"rollout.mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.weight_sync not in WEIGHT_SYNC:
            raise ConfigError(
                f"rollout.weight_sync must be one of {', '.join(WEIGHT_SYNC)}, got {self.weight_sync!r}."
            )
        if self.retries < 0:
            raise ConfigError(f"rollout.retries must be >= 0, got {self.retries}.")
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"rollout.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}.")
        if self.engine == "vllm" and self.mode == "colocate" and self.tensor_parallel_size > 1:
            raise ConfigError(
                "rollout.tensor_parallel_size > 1 needs rollout.mode: server (`posttrain vllm-serve "
                "--tensor_parallel_size N`); a colocated engine uses one device per training process."
            )
        if self.async_.active and self.engine == "vllm" and self.mode == "colocate":
            raise ConfigError(
                "rollout.async needs an engine that generates while the trainer updates: a colocated vLLM engine "
                "shares the trainer's processes and devices. Serve it on its own GPUs (`posttrain vllm-serve`, "
                "rollout.mode: server), use rollout.engine: hf (a copy of the weights in the trainer's process), "
                "or set rollout.async.enabled false."
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}."
            )
