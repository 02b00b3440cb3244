"""Build the engine a recipe's ``rollout`` section asks for."""

from __future__ import annotations

from typing import Any

from posttrain.rollout.base import RolloutEngine
from posttrain.rollout.config import RolloutConfig


def base_model_path(model: Any) -> str:
    """The folder the (possibly LoRA-wrapped) model was loaded from: what vLLM loads."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.config._name_or_path


def build_engine(
    cfg: RolloutConfig, model: Any, accelerator: Any = None, seed: int = 0
) -> RolloutEngine | None:
    """None for ``hf``: in training, TRL's own transformers generation is the HF engine."""
    if cfg.engine == "hf":
        return None
    if cfg.mode == "server":
        from posttrain.rollout.client import ServerEngine

        return ServerEngine(cfg, model_for_signature=model, accelerator=accelerator)
    return vllm_engine(cfg, base_model_path(model), seed)


def vllm_engine(cfg: RolloutConfig, model_path: str, seed: int = 0, external_launcher: bool = True):
    """A :class:`VLLMEngine` with the recipe's vLLM settings (the trainer's and ``vllm-serve``'s)."""
    from posttrain.rollout.vllm import VLLMEngine

    return VLLMEngine(
        model_path,
        dtype=cfg.dtype,
        enforce_eager=cfg.enforce_eager,
        max_model_len=cfg.max_model_len,
        seed=seed,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        enable_sleep_mode=cfg.enable_sleep_mode,
        tensor_parallel_size=cfg.tensor_parallel_size,
        weight_sync=cfg.weight_sync,
        cpu_kvcache_gib=cfg.cpu_kvcache_gib,
        external_launcher=external_launcher,
    )
