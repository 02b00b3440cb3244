"""The trainer's weights as an inference engine wants them: full tensors under checkpoint names.

Handles the three ways a training model hides its weights: wrapped by DDP/DeepSpeed (unwrapped),
sharded by DeepSpeed ZeRO-3 (gathered one parameter at a time; a collective, so every process must
iterate) and LoRA through peft (adapters merged into the base weights for the duration of the walk,
names stripped back to the base model's, then unmerged).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _gathered(params: list[torch.nn.Parameter]):
    """ZeRO-3 keeps a shard of each parameter per process; gather the full tensors while inside."""
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def unwrap(model: Any) -> Any:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module  # DDP / DeepSpeed engine
    return model


def checkpoint_name(name: str) -> str:
    """``base_model.model.model.layers.0.q_proj.base_layer.weight`` -> ``model.layers.0.q_proj.weight``."""
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    name = name.replace("modules_to_save.default.", "").replace("_checkpoint_wrapped_module.", "")
    return name


def inference_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for every weight the inference copy needs (tied weights once)."""
    model = unwrap(model)
    peft_prefix = getattr(model, "prefix", None) if hasattr(model, "peft_config") else None
    if peft_prefix is not None:
        params = list(model.parameters())
        with _gathered(params):
            model.merge_adapter()
            try:
                for name, param in model.named_parameters():
                    if peft_prefix in name or "original_module" in name:
                        continue  # adapter weights are merged; the frozen original of a saved module is stale
                    yield checkpoint_name(name), param.data
                yield from _tied_head(model.get_base_model())
            finally:
                model.unmerge_adapter()
        return
    for name, param in model.named_parameters():
        with _gathered([param]):
            yield checkpoint_name(name), param.data
    yield from _tied_head(model)


def _tied_head(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """A tied output layer is not a separate parameter here, but an engine may hold its own copy of it
    (vLLM's in-place reload restores a layer it received no weights for from its old copy): send it."""
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False) or not hasattr(model, "get_output_embeddings"):
        return
    head = model.get_output_embeddings()
    if head is None:
        return
    with _gathered([head.weight]):
        yield "lm_head.weight", head.weight.data
