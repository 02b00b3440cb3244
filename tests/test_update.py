"""The update's fast paths (posttrain/update.py) compute TRL's loss: each switch against TRL itself.

    pytest tests/test_update.py -q

On the tiny random model in fp32: the per-token log-probabilities, entropies and their gradients of a
hand-built batch (prompts of different lengths, completions of different lengths, a row whose
completion is wholly masked) match TRL's own computation to 1e-5 under every switch; two training
steps through ``PosttrainTrainer`` log the same losses as bare ``trl.GRPOTrainer`` to 1e-5 and end with
the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from posttrain.data import DataConfig, load_datasets
from posttrain.errors import ConfigError
from posttrain.models import ModelConfig, load_model
from posttrain.rewards import RewardPlugin
from posttrain.trainer import PosttrainTrainer
from posttrain.update import UpdateConfig, cut_by_length, plan_buckets, read_layout

torch.set_num_threads(1)

NONE = {"compact_logprobs": False, "trim_padding": False, "share_prompts": False, "fused_optimizer": False}
OFF = UpdateConfig(**NONE)
SWITCHES = {
    "compact": UpdateConfig(**{**NONE, "compact_logprobs": True}),
    "trim": UpdateConfig(**{**NONE, "trim_padding": True}),
    "buckets": UpdateConfig(**{**NONE, "trim_padding": True, "length_buckets": 3}),
    "share": UpdateConfig(**{**NONE, "trim_padding": True, "share_prompts": True}),
    "share_buckets": UpdateConfig(
        **{**NONE, "trim_padding": True, "share_prompts": True, "length_buckets": 3}
    ),
    "fused": UpdateConfig(**{**NONE, "fused_optimizer": True}),
    "all": UpdateConfig(),
}
# The path each switch takes on a batch whose prompts repeat (posttrain/update.py: FastUpdate.last).
PATHS = {
    "compact": "trl", "trim": "buckets", "buckets": "buckets", "share": "shared", "share_buckets": "shared",
    "all": "shared",
}  # fmt: skip


def token_reward(completions, completion_ids, **kwargs):
    """Rewards that differ within a group (so every step has a gradient), read from the token ids."""
    return [float(sum(ids) % 5) for ids in completion_ids]


@pytest.fixture
def varied_jsonl(tmp_path) -> str:
    """Questions of different lengths, so that prompts are padded differently."""
    path = tmp_path / "varied.jsonl"
    rows = [{"question": "Sum " + "1+" * k + "1?", "answer": str(k + 1)} for k in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def settings(out, **kwargs) -> GRPOConfig:
    base = {
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 10,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "temperature": 1.5,  # long and short completions from the tiny model
        **kwargs,
    }
    return GRPOConfig(**base)


def build(kind, tiny_model, data, out, update=None, lora=False, **kwargs):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=data))
    common = {"args": settings(out, **kwargs), "train_dataset": train_ds, "processing_class": tokenizer}
    if lora:
        from peft import LoraConfig

        common["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    if kind == "trl":
        return GRPOTrainer(model=model, reward_funcs=[token_reward], **common)
    plugins = [RewardPlugin(token_reward, "token_reward")]
    return PosttrainTrainer(model=model, reward_plugins=plugins, update=update, **common)


def hand_built_batch(tokenizer_vocab: int, seed: int = 0, groups: bool = False):
    """Left-padded prompts of lengths 3-9, right-padded completions of lengths 0-7 (row 2 masked); with
    ``groups``, rows 0/1, 2/3/4 and 5 share their prompts (lengths 9, 5, 4), as a group's completions do."""
    g = torch.Generator().manual_seed(seed)
    prompt_lengths, completion_lengths, width, keep = [9, 3, 6, 5, 8, 4], [7, 2, 0, 5, 1, 6], 9, 7
    owner = [0, 1, 2, 3, 4, 5]
    if groups:
        prompt_lengths, owner = [9, 9, 5, 5, 5, 4], [0, 0, 2, 2, 2, 5]
    prompt_ids = torch.randint(3, tokenizer_vocab, (6, width), generator=g)
    rows, masks = [], []
    for i, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        ids = torch.cat([prompt_ids[owner[i]], torch.randint(3, tokenizer_vocab, (keep,), generator=g)])
        mask = torch.zeros(width + keep, dtype=torch.long)
        mask[width - p : width + c] = 1
        rows.append(torch.where(mask.bool(), ids, torch.zeros_like(ids)))
        masks.append(mask)
    return torch.stack(rows), torch.stack(masks), keep


@pytest.mark.parametrize("groups", [False, True])
@pytest.mark.parametrize("name", ["compact", "trim", "buckets", "share", "share_buckets", "all"])
def test_log_probs_entropies_and_gradients_match_trl(name, groups, tiny_model, varied_jsonl, tmp_path):
    reference = build("posttrain", tiny_model, varied_jsonl, tmp_path / "a", update=OFF)
    fast = build("posttrain", tiny_model, varied_jsonl, tmp_path / "b", update=SWITCHES[name])
    ids, mask, keep = hand_built_batch(reference.model.config.vocab_size, groups=groups)
    weights = torch.randn(ids.size(0), keep, generator=torch.Generator().manual_seed(1))
    results = []
    for trainer in (reference, fast):
        trainer.model.train()
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, keep, compute_entropy=True
        )
        loss = (logps * weights * mask[:, -keep:]).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((logps.detach(), entropies.detach(), grads))
    (lp_a, ent_a, grad_a), (lp_b, ent_b, grad_b) = results
    completion = mask[:, -keep:].bool()
    torch.testing.assert_close(lp_b[completion], lp_a[completion], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent_b[completion], ent_a[completion], atol=1e-5, rtol=0)
    assert torch.all(lp_b[~completion] == 0) and torch.all(lp_a[~completion] == 0)  # TRL's zeros
    assert grad_a.keys() == grad_b.keys()
    for key in grad_a:
        torch.testing.assert_close(grad_b[key], grad_a[key], atol=1e-5, rtol=1e-4)
    path = (
        PATHS[name] if groups or PATHS[name] != "shared" else "buckets"
    )  # no prompt repeats: nothing to share
    assert fast.fast.last["path"] == path
    if path == "buckets":  # trimmed: fewer positions ran than the padded batch holds, the masked row skipped
        assert fast.fast.last["positions"] < ids.numel()
        assert fast.fast.last["real"] == int(mask[[0, 1, 3, 4, 5]].sum())
    if path == "shared":  # the prompts of lengths 9, 5 and 4 ran once each, then the 5 completions
        assert fast.fast.last["real"] == 9 + 5 + 4 + 7 + 2 + 5 + 1 + 6


@pytest.mark.parametrize("name", list(SWITCHES))
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"beta": 0.05, "mask_truncated_completions": True, "loss_type": "grpo"},
        {"lora": True, "beta": 0.05, "optim": "sgd"},
    ],
)
def test_training_logs_the_same_losses_as_bare_trl(name, extra, tiny_model, varied_jsonl, tmp_path):
    # LoRA trains with SGD: its B matrices start at 0, so A's gradients are 0 up to rounding, and Adam
    # would turn a 1e-12 rounding difference into a full learning-rate step.
    trl = build("trl", tiny_model, varied_jsonl, tmp_path / "trl", **extra)
    trl.train()  # built and trained one after the other: building a trainer draws from the global RNG
    post = build("posttrain", tiny_model, varied_jsonl, tmp_path / "post", update=SWITCHES[name], **extra)
    post.train()
    logs = [[e for e in t.state.log_history if "loss" in e] for t in (trl, post)]
    assert len(logs[0]) == len(logs[1]) == 2
    for a, b in zip(*logs):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)  # the same completions
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["entropy"] == pytest.approx(a["entropy"], abs=1e-5)
    for (n, p), (_, q) in zip(trl.model.named_parameters(), post.model.named_parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4, msg=f"{n} differs after two steps")
    if name in ("fused", "all") and "optim" not in extra:
        assert post.optimizer.param_groups[0]["fused"] is True
    if (
        name in ("share", "share_buckets", "all") and "mask_truncated_completions" not in extra
    ):  # groups of 4 share a prompt
        assert post.fast.last["path"] == "shared"


def test_layout_and_buckets_on_a_hand_built_mask():
    ids, mask, keep = hand_built_batch(50)
    layout = read_layout(mask, keep)
    assert layout.prompt_lengths.tolist() == [9, 3, 6, 5, 8, 4]
    assert layout.completion_lengths.tolist() == [7, 2, 0, 5, 1, 6]
    buckets = plan_buckets(layout, 2)
    assert sorted(i for b in buckets for i in b) == [0, 1, 3, 4, 5]  # row 2 trains no token
    totals = [9 + 7, 3 + 2, 5 + 5, 8 + 1, 4 + 6]
    assert [len(b) for b in buckets] == [2, 3] or [len(b) for b in buckets] == [3, 2]
    lengths = [[totals[[0, 1, 3, 4, 5].index(i)] for i in b] for b in buckets]
    assert max(lengths[0]) <= min(lengths[1])  # sorted by length
    assert plan_buckets(layout, 99) == [[1], [4], [3], [5], [0]]  # never more buckets than rows
    assert cut_by_length([7, 2, 5, 1, 6], 2) == [[3, 1], [2, 4, 0]]  # sorted by completion length
    assert cut_by_length([3], 4) == [[0]]
    right_padded_prompt = mask.clone()
    right_padded_prompt[1, :9] = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert read_layout(right_padded_prompt, keep) is None  # not TRL's layout: TRL's call, whole


@pytest.mark.parametrize(
    "values, match",
    [
        ({"length_buckets": 0}, "length_buckets must be a whole number >= 1"),
        ({"length_buckets": 1.5}, "length_buckets"),
        ({"compact_logprobs": "yes"}, "update.compact_logprobs must be true or false"),
    ],
)
def test_bad_update_settings_are_named(values, match):
    with pytest.raises(ConfigError, match=match):
        UpdateConfig(**values)


def test_the_recipe_section_reaches_the_trainer(tmp_path):
    from posttrain.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(
        "data: {generator: chain_sum, size: 8}\nupdate: {length_buckets: 4, compact_logprobs: false}\n"
    )
    recipe = load_recipe(str(path), ["--update.fused_optimizer", "false"])
    assert recipe.update == UpdateConfig(compact_logprobs=False, length_buckets=4, fused_optimizer=False)
    assert recipe.to_dict()["update"]["length_buckets"] == 4
