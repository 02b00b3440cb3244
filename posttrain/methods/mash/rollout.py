"""Pay-per-search's rollouts: the search tool loop as TRL's ``rollout_func``, and its installation.

    search: {enabled: true}            # the recipe section (config.py); install_search puts it on a trainer
    trainer.rollout_func = make_rollout_func(tool, ToolConfig(max_searches=5))

The loop itself (``posttrain/rollout/tools.py``, ``run_search_loop``) works on any engine; this module
feeds it TRL's prompts, picks the engine (the trainer's rollout engine, else its own model through an
``HFEngine``), and returns what TRL's ``rollout_func`` contract asks for, the search counts included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from posttrain.retrieval.tool import format_documents
from posttrain.rollout.base import SamplingSettings
from posttrain.rollout.tools import SearchTool, ToolConfig, Trajectory, run_search_loop


def install_search(trainer, recipe) -> None:
    """Generate with the search tool loop of ``recipe.search`` (the retriever must answer at start)."""
    search = recipe.search
    tool = search.make_tool()
    if hasattr(tool, "wait_until_ready"):  # a retrieval server: fail at start, not at the first search
        tool.wait_until_ready(60)
    config = search.tool_config(trainer.args.max_completion_length)
    trainer.rollout_func = make_rollout_func(tool, config, format_documents=search.formatter())


def make_rollout_func(
    tool: SearchTool,
    config: ToolConfig | None = None,
    engine_factory: Callable[[Any], Any] | None = None,
    format_documents: Callable[[Sequence[Any]], str] = format_documents,
) -> Callable[[list, Any], dict[str, list]]:
    """``rollout_func(prompts, trainer) -> dict`` for ``GRPOTrainer(rollout_func=...)``.

    ``prompts`` are the raw prompts, already repeated once per generation (TRL does that), conversations
    or strings. The engine: ``engine_factory(trainer)`` if given; else ``trainer.rollout_engine`` if set
    (posttrain's vLLM colocate/server engine; ``trainer.sync_engine()`` is called first, because TRL does
    not call ``_generate_single_turn``, where the trainer otherwise syncs weights, on this path); else an ``HFEngine`` over the trainer's model, unwrapped as TRL unwraps it for
    ``generate`` (ZeRO-3 gathered, gradient checkpointing off) and in eval mode while generating.

    Returns ``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask`` (TRL turns it into the loss's
    ``tool_mask``) and, forwarded to the reward functions as keyword arguments, ``num_searches``,
    ``search_budget_hit``, ``truncated``, ``retrieved_ids``. ``logprobs`` is None on the HF path: the
    sampler is the trained model there, so nothing needs them and scoring them would cost a forward pass.
    """
    config = config if config is not None else ToolConfig()

    def rollout_func(prompts: list, trainer) -> dict[str, list]:
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        prompt_ids = tokenize_prompts(prompts, trainer)
        sampling = SamplingSettings.from_args(trainer.args)
        all_finished = _all_finished(trainer.accelerator) if _num_processes(trainer) > 1 else None
        with _engine(trainer, tokenizer, engine_factory, len(prompt_ids)) as (engine, wants_logprobs):
            sampling.logprobs = wants_logprobs
            trajectories = run_search_loop(
                engine,
                prompt_ids,
                tokenizer,
                tool,
                config,
                sampling,
                format_documents=format_documents,
                all_finished=all_finished,
            )
        _log_metrics(trainer, trajectories)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [t.completion_ids for t in trajectories],
            "logprobs": [t.logprobs for t in trajectories] if wants_logprobs else None,
            "env_mask": [t.env_mask for t in trajectories],
            "num_searches": [t.num_searches for t in trajectories],
            "search_budget_hit": [t.search_budget_hit for t in trajectories],
            "truncated": [t.truncated for t in trajectories],
            "retrieved_ids": [t.retrieved_ids for t in trajectories],
        }

    return rollout_func


def tokenize_prompts(prompts: list, trainer) -> list[list[int]]:
    """Conversations through the chat template (with a generation prompt), strings as they are: what
    TRL's ``_tokenize_prompts`` does for text-only prompts."""
    processing = trainer.processing_class
    if prompts and isinstance(prompts[0], list):
        kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
        template = getattr(trainer, "chat_template", None)
        return [
            list(
                processing.apply_chat_template(
                    prompt,
                    chat_template=template,
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                    **kwargs,
                )
            )
            for prompt in prompts
        ]
    return [list(ids) for ids in processing(text=prompts)["input_ids"]]


@contextlib.contextmanager
def _engine(trainer, tokenizer, engine_factory, batch_size: int) -> Iterator[tuple[Any, bool]]:
    """(engine, whether the sampler's log-probs are wanted) for this generation batch."""
    if engine_factory is not None:
        yield engine_factory(trainer), True
        return
    engine = getattr(trainer, "rollout_engine", None)
    if engine is not None:
        trainer.sync_engine()
        try:
            yield engine, True  # the trainer's importance-sampling correction needs them
        finally:
            engine.sleep()
        return
    if getattr(trainer, "use_vllm", False):
        raise ValueError(
            "The search rollout cannot drive TRL's own vLLM (trainer.use_vllm: true); use posttrain's "
            "`rollout.engine: vllm`, which sets trainer.rollout_engine, or the transformers engine."
        )
    from trl.models import unwrap_model_for_generation

    from posttrain.rollout.hf import HFEngine

    args = trainer.args
    from trl.distributed import DistributedBackend  # TRL's FSDP-aware parameter gathering

    dist = DistributedBackend(trainer.accelerator)
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
        ) as model,
        dist.summon_full_params(trainer.model_wrapped, recurse=False),
    ):
        yield HFEngine(model, tokenizer, batch_size=max(batch_size, 1)), False  # eval mode inside generate


def _num_processes(trainer) -> int:
    accelerator = getattr(trainer, "accelerator", None)
    return accelerator.num_processes if accelerator is not None else 1


def _all_finished(accelerator) -> Callable[[bool], bool]:
    import torch

    def all_finished(done_here: bool) -> bool:
        flag = torch.tensor([0 if done_here else 1], device=accelerator.device)
        return int(accelerator.gather(flag).sum().item()) == 0

    return all_finished


def _log_metrics(trainer, trajectories: list[Trajectory]) -> None:
    log = getattr(trainer, "log_metric", None)  # a posttrain trainer's; a plain TRL trainer logs none
    if log is None or not trajectories:
        return
    n = len(trajectories)
    log("tools/searches_mean", sum(t.num_searches for t in trajectories) / n)
    log("tools/budget_hit_frac", sum(t.search_budget_hit for t in trajectories) / n)
    log("tools/truncated_frac", sum(t.truncated for t in trajectories) / n)
    log("tools/answered_frac", sum(t.finish_reason == "answer" for t in trajectories) / n)
