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
    """The server engine in ``server`` mode (whatever backend the server runs); None for ``hf`` colocated:
    in training, TRL's own transformers generation is the HF engine."""
    if cfg.mode == "server":
        from posttrain.rollout.client import ServerEngine

        return ServerEngine(cfg, model_for_signature=model, accelerator=accelerator)
    if cfg.engine == "hf":
        return None
    return vllm_engine(cfg, base_model_path(model), seed)


def async_engine(cfg: RolloutConfig, model: Any, tokenizer: Any, accelerator: Any = None):
    """(engine, backend) for asynchronous generation (:mod:`posttrain.rollout.asynchronous`): the server
    engine, or a transformers engine on its own copy of the weights in the main process (the others get
    None: only the main process generates)."""
    from posttrain.rollout.asynchronous import LocalBackend, ServerBackend

    if cfg.mode == "server":
        engine = build_engine(cfg, model, accelerator)
        return engine, ServerBackend(engine)
    if cfg.engine != "hf":  # RolloutConfig refuses vLLM colocated with async already
        raise ValueError(f"No asynchronous backend for rollout.engine {cfg.engine!r} in {cfg.mode} mode.")
    if accelerator is not None and not accelerator.is_main_process:
        return None, None
    from transformers import AutoModelForCausalLM

    from posttrain.rollout.hf import HFEngine

    # Loaded from the checkpoint folder, not copied from the trainer's model (a ZeRO-3 shard is empty);
    # the first weight push makes it the trainer's weights whatever it loaded.
    from posttrain.rollout.weights import unwrap

    dtype = next(unwrap(model).parameters()).dtype
    copy = AutoModelForCausalLM.from_pretrained(base_model_path(model), dtype=dtype)
    device = getattr(accelerator, "device", None)
    copy = copy.to(device).eval() if device is not None else copy.eval()
    engine = HFEngine(copy, tokenizer)
    return engine, LocalBackend(engine)


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
