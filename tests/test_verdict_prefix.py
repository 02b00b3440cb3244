"""SPARK's verdict prefix: a judge reply the prompt begins, the same in training and at inference.

    pytest tests/test_verdict_prefix.py -q

posttrain/chat.py encodes a prompt ending in an assistant message as a reply to continue; the recycler
ends judge prompts with ``spark.verdict_prefix``; the trainer tokenizes such prompts without opening a
new assistant turn; ``spark_judge`` and the judge evaluation read prefix + completion.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from posttrain.chat import continues_reply, encode, prefill, template_kwargs
from posttrain.config import load_recipe
from posttrain.errors import ConfigError
from posttrain.methods.spark.config import SparkConfig
from posttrain.methods.spark.recycle import Recycler
from posttrain.models import ModelConfig, load_model
from posttrain.queue import GroupQueue
from posttrain.rewards import RewardPlugin, load_reward
from posttrain.trainer import ScoredBatch
from rewards.spark import spark_judge

torch.set_num_threads(1)

PREFIX = "Judgement: \\boxed{"
G = 4


def test_prefill_and_template_flags():
    user = [{"role": "user", "content": "Is 3 right?"}]
    begun = [*user, {"role": "assistant", "content": PREFIX}]
    assert not continues_reply(user) and continues_reply(begun) and not continues_reply("text")
    assert prefill(user) == "" and prefill(begun) == PREFIX
    parts = [
        *user,
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    assert prefill(parts) == "ab"
    assert template_kwargs(user) == {"add_generation_prompt": True}
    assert template_kwargs(begun) == {"add_generation_prompt": False, "continue_final_message": True}


def test_encode_continues_the_reply_instead_of_opening_a_new_one(tiny_model):
    _, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    user = [{"role": "user", "content": "Is 3 right?"}]
    opened = tokenizer.decode(encode(tokenizer, user))
    begun = tokenizer.decode(encode(tokenizer, [*user, {"role": "assistant", "content": PREFIX}]))
    assert begun == opened + PREFIX  # the reply's header once, then the prefix; no end-of-turn after it


def _batch(groups: list[list[str]]) -> ScoredBatch:
    rows = [{"question": f"q{i}", "answer": "4", "verifier": "", "id": f"q{i}"} for i in range(len(groups))]
    completions = [t for g in groups for t in g]
    return ScoredBatch(
        rows=[dict(r) for r in rows for _ in range(G)],
        prompts=[None] * len(completions),
        completions=completions,
        completion_ids=[[0]] * len(completions),
        rewards_per_func=torch.tensor([[float("4" in t)] for t in completions]),
        reward_names=["accuracy"],
        group_size=G,
        process_slice=slice(0, len(completions)),
        extra={"global_step": 0},
    )


def test_recycled_judge_prompts_end_with_the_prefix_and_reflections_do_not():
    queue = GroupQueue()
    cfg = SparkConfig(verdict_prefix=PREFIX)
    # Bare-number answers read with the lenient policy (a task that asks for just the number).
    Recycler(cfg, queue, extract="lenient")(_batch([["4", "5", "4", "5"], ["5", "6", "5", "7"]]))
    rows = queue.pop(100)
    judges = [r for r in rows if r["task"] in ("pointwise", "pairwise")]
    reflections = [r for r in rows if r["task"] == "reflection"]
    assert judges and reflections
    assert all(r["prompt"][-1] == {"role": "assistant", "content": PREFIX} for r in judges)
    assert all(r["prompt"][-1]["role"] == "user" for r in reflections)
    # The lenient policy shows the bare number the rollout gave.
    assert any("\n5\n" in r["prompt"][-2]["content"] or "(A) 5" in r["prompt"][-2]["content"] for r in judges)


def test_spark_judge_reads_the_prefix_and_the_completion():
    prompts = [
        [{"role": "user", "content": "judge"}, {"role": "assistant", "content": PREFIX}],
        [{"role": "user", "content": "judge"}],
    ]
    scores = spark_judge(
        ["Yes}", "Yes}"], task=["pointwise", "pointwise"], judge_label=["Yes", "Yes"], prompts=prompts
    )
    assert scores == [1.0, 0.0]  # without the prefix "Yes}" is no verdict at all


def test_the_trainer_tokenizes_prefilled_prompts_as_replies_to_continue(tiny_model, tmp_path):
    from trl import GRPOConfig

    from posttrain.data import DataConfig, load_datasets
    from posttrain.trainer import PosttrainTrainer

    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(8))
    )
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=str(data)))
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        num_generations=G,
        per_device_train_batch_size=G,
        max_completion_length=4,
        max_steps=1,
    )
    plugins = [RewardPlugin(load_reward("accuracy"), "accuracy")]
    trainer = PosttrainTrainer(
        model=model, reward_plugins=plugins, args=args, train_dataset=train_ds, processing_class=tokenizer
    )
    user = [{"role": "user", "content": "Is 3 right?"}]
    begun = [*user, {"role": "assistant", "content": PREFIX}]
    ids, images, fields = trainer._tokenize_prompts([begun, user])
    assert ids == [encode(tokenizer, begun), encode(tokenizer, user)] and images is None and fields == {}
    plain, _, _ = trainer._tokenize_prompts([user])  # no prefilled prompt in the batch: TRL's own path
    assert list(plain[0]) == encode(tokenizer, user)


def test_generate_returns_the_whole_reply_and_refuses_a_mixed_batch(tiny_model):
    from posttrain.evaluation import generate

    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    user = [{"role": "user", "content": "Is 3 right?"}]
    begun = [*user, {"role": "assistant", "content": PREFIX}]
    (texts,) = generate(model, tokenizer, [begun], max_new_tokens=3)
    assert texts[0].startswith(PREFIX)
    with pytest.raises(ValueError, match="separate calls"):
        generate(model, tokenizer, [begun, user], max_new_tokens=2)


def test_judge_eval_with_the_prefix_reads_every_verdict():
    """A judge that answers only the verdict token: readable only because the prefix opened the box."""
    from posttrain.methods.spark.selfcheck import judge_eval

    rows = [{"question": "2+2?", "answer": "4", "prompt": [{"role": "user", "content": "2+2?"}], "id": 0}]

    def sampler(prompts, k):
        return [["\\boxed{4}", "\\boxed{5}"] for _ in prompts]

    def judge(prompts):
        assert all(p[-1] == {"role": "assistant", "content": PREFIX} for p in prompts)
        return [prefill(p) + "Yes}" for p in prompts]  # what evaluation.generate returns: the whole reply

    metrics, tasks = judge_eval(judge, rows, 2, sampler, random.Random(0), verdict_prefix=PREFIX)
    assert metrics["unparsed"] == 0.0 and {t["verdict"] for t in tasks} <= {"Yes"}


@pytest.mark.parametrize("value", [3, ["a"]])
def test_a_bad_prefix_is_refused(value):
    with pytest.raises(ConfigError, match="spark.verdict_prefix"):
        load_recipe(
            None, {"data.generator": "chain_sum", "method.name": "spark", "spark.verdict_prefix": value}
        )
