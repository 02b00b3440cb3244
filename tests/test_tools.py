"""Tests for the multi-turn search loop and its TRL glue (posttrain/rollout/tools.py), and for stop
strings in the HF engine (posttrain/rollout/hf.py).

    OMP_NUM_THREADS=1 pytest tests/test_tools.py -q

The loop tests drive a scripted engine over the repo's character-level tokenizer (one token per
character), so a mask can be checked by decoding the tokens it keeps or drops. The trainer tests run
TRL's GRPOTrainer for one step on the tiny random model with the rollout function plugged in.
"""

from __future__ import annotations

import doctest
import math
from dataclasses import dataclass, replace

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

import posttrain.rollout.tools as tools
from posttrain.data import DataConfig, load_datasets
from posttrain.methods.mash.rollout import make_rollout_func
from posttrain.models import ModelConfig, load_model
from posttrain.rollout import Rollouts, SamplingSettings
from posttrain.rollout.hf import HFEngine, stop_end
from posttrain.rollout.tools import (
    LIMIT_WARNING,
    NO_RESULTS,
    SEARCH_PROMPT,
    ToolConfig,
    run_search_loop,
)
from posttrain.testing import make_tiny_tokenizer

torch.set_num_threads(1)

EOS = "<EOS>"  # in a script: the engine emits the end-of-sequence token here
END = "<|im_end|>"  # the tiny tokenizer's end-of-sequence token: closes every complete trajectory
MODEL_LOGP = -0.5  # the scripted engine's log-prob for every model token (inserted ones must read 0.0)


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


@dataclass
class Hit:
    id: str
    title: str
    text: str
    score: float = 1.0


class FakeTool:
    """Returns the hits listed for a query (none for any other query) and records every call."""

    def __init__(self, hits: dict[str, list[Hit]] | None = None):
        self.hits = hits or {}
        self.calls: list[tuple[list[str], int]] = []

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls.append((list(queries), k))
        return [self.hits.get(q, [])[:k] for q in queries]


class ScriptedEngine:
    """Plays scripted turns: ``scripts[key][t]`` is what the "model" writes in turn ``t`` of the trajectory
    whose prompt contains ``key`` ("*": any other prompt). ``t`` = the ``</search>`` count after the prompt.
    Honours ``max_tokens`` and stop strings like a real engine (the stop string is kept)."""

    def __init__(self, tokenizer, scripts: dict[str, list[str]]):
        self.tok = tokenizer
        self.scripts = scripts
        self.eos_ids = [tokenizer.eos_token_id]
        self.calls: list[tuple[list[list[int]], SamplingSettings]] = []

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        assert n == 1
        self.calls.append(([list(p) for p in prompt_ids], sampling))
        completions = []
        for ids in prompt_ids:
            text = self.tok.decode(ids)
            key = next((k for k in self.scripts if k != "*" and k in text), "*")
            turn = text.count("</search>") - key.count("</search>")
            script = self.scripts[key][turn]
            for s in sampling.stop or []:
                if s in script:
                    script = script[: script.index(s) + len(s)]
            eos = script.endswith(EOS)
            out = self.tok(script.removesuffix(EOS), add_special_tokens=False)["input_ids"]
            out = (out + [self.tok.eos_token_id] * eos)[: sampling.max_tokens]
            completions.append(out)
        logprobs = [[MODEL_LOGP] * len(c) for c in completions] if sampling.logprobs else None
        return Rollouts(completion_ids=completions, logprobs=logprobs)


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def spans(tok, traj) -> tuple[str, str]:
    """(text of the model's tokens, text of the inserted tokens)."""
    model = [t for t, m in zip(traj.completion_ids, traj.env_mask) if m == 1]
    inserted = [t for t, m in zip(traj.completion_ids, traj.env_mask) if m == 0]
    return tok.decode(model), tok.decode(inserted)


def run(tok, scripts, tool=None, prompts=("Q0",), sampling=None, **config):
    engine = ScriptedEngine(tok, scripts)
    tool = tool if tool is not None else FakeTool()
    sampling = sampling or SamplingSettings(max_tokens=1000)
    prompt_ids = [encode(tok, p) for p in prompts]
    out = run_search_loop(engine, prompt_ids, tok, tool, ToolConfig(**config), sampling)
    return out, engine, tool


PERU = [Hit("d1", "Peru", "Lima is the capital."), Hit("d2", "Lima", "A city.")]
PERU_DOCS = (
    "\n<document>(Title: Peru) Lima is the capital.</document>\n<document>(Title: Lima) A city.</document>\n"
)


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def test_search_inserts_documents_masked_and_the_model_resumes_after_them(tok):
    turns = ["<think>hm</think><search> capital of Peru </search>", "<answer> Lima </answer>"]
    # The script runs past the stop string: the loop must see the turn end at </search>.
    scripts = {"Q0": [turns[0] + " and more", turns[1] + EOS]}
    (traj,), engine, tool = run(tok, scripts, FakeTool({"capital of Peru": PERU}))

    # It stopped at </answer>, a stop string: the loop closes it with an EOS, inserted, so TRL sees it complete.
    assert tok.decode(traj.completion_ids) == turns[0] + PERU_DOCS + turns[1] + END
    model, inserted = spans(tok, traj)
    assert (model, inserted) == (turns[0] + turns[1], PERU_DOCS + END)  # the documents and the EOS are masked
    assert traj.logprobs == [MODEL_LOGP if m else 0.0 for m in traj.env_mask]
    assert tool.calls == [(["capital of Peru"], 3)]  # stripped query, top_k = 3
    assert (traj.num_searches, traj.queries, traj.retrieved_ids) == (1, ["capital of Peru"], ["d1", "d2"])
    assert (traj.finish_reason, traj.truncated, traj.search_budget_hit) == ("answer", False, False)
    # Round 2 continues from prompt + every token so far, the inserted ids included (token-level).
    assert engine.calls[1][0] == [encode(tok, "Q0") + traj.completion_ids[: -len(turns[1]) - 1]]
    assert all(s.stop == ["</search>", "</answer>"] for _, s in engine.calls)


def test_the_search_over_budget_gets_the_warning_not_the_tool(tok):
    scripts = {"Q0": ["<search>a</search>", "<search>b</search>", "<answer> x </answer>"]}
    (traj,), _, tool = run(tok, scripts, FakeTool({"a": PERU}), max_searches=1)

    assert tool.calls == [(["a"], 3)]  # "b" never reaches the tool
    assert (traj.num_searches, traj.search_budget_hit, traj.queries) == (2, True, ["a"])
    _, inserted = spans(tok, traj)
    assert inserted == PERU_DOCS + LIMIT_WARNING + END
    assert tok.decode(traj.completion_ids).endswith(
        "<search>b</search>" + LIMIT_WARNING + "<answer> x </answer>" + END
    )
    assert traj.finish_reason == "answer" and not traj.truncated


@pytest.mark.parametrize(
    "script, config, reason, truncated, length",
    [
        # end-of-sequence: done, not truncated; the EOS token is kept
        (["no tags at all" + EOS], {}, "stop", False, len("no tags at all") + 1),
        # the per-turn cap hit with no closed tag and no EOS: truncated at the cap
        (["a long ramble without any tag"], {"max_turn_tokens": 10}, "turn_cap", True, 10),
        # a closing search tag with no opening one: the model stopped itself, nothing to search (+ the EOS)
        (["oops</search> tail"], {}, "stop", False, len("oops</search>") + 1),
        # every round searches: the round cap (max_searches + 2 = 3 rounds) ends it, truncated
        (["<search>q</search>"] * 5, {"max_searches": 1}, "rounds", True, None),
    ],
)
def test_how_an_episode_ends(tok, script, config, reason, truncated, length):
    (traj,), engine, _ = run(tok, {"Q0": script}, **config)
    assert (traj.finish_reason, traj.truncated) == (reason, truncated)
    if length is not None:
        assert len(traj.completion_ids) == length
    if reason == "rounds":
        assert len(engine.calls) == 3 and traj.num_searches == 3 and traj.search_budget_hit


def test_the_total_cap_cuts_inserted_documents_and_ends_the_episode(tok):
    turn = "<search>capital of Peru</search>"
    cap = len(turn) + 12
    (traj,), engine, _ = run(tok, {"Q0": [turn, "never reached"]}, FakeTool({"capital of Peru": PERU}),
                             max_total_tokens=cap)  # fmt: skip
    assert len(traj.completion_ids) == len(traj.env_mask) == len(traj.logprobs) == cap
    assert tok.decode(traj.completion_ids) == turn + PERU_DOCS[:12]
    assert (traj.finish_reason, traj.truncated, traj.num_searches) == ("total_cap", True, 1)
    assert len(engine.calls) == 1


def test_the_total_cap_defaults_to_max_tokens_and_cuts_a_long_turn(tok):
    sampling = SamplingSettings(max_tokens=8)
    (traj,), engine, tool = run(tok, {"Q0": ["<think>long thought</think>"]}, sampling=sampling)
    assert engine.calls[0][1].max_tokens == 8  # per turn: min(max_turn_tokens=512, total cap)
    assert tok.decode(traj.completion_ids) == "<think>l"
    assert (traj.finish_reason, traj.truncated) == ("turn_cap", True)


def test_a_search_with_no_room_left_is_counted_but_not_sent(tok):
    turn = "<search>q</search>"
    (traj,), _, tool = run(tok, {"Q0": [turn]}, max_total_tokens=len(turn))
    assert tool.calls == [] and traj.num_searches == 1
    assert (traj.finish_reason, traj.truncated) == ("total_cap", True)


def test_one_batched_tool_call_per_round_with_only_the_searching_trajectories(tok):
    scripts = {
        "QA": ["<search>a1</search>", "<search>a2</search>", "<answer>A</answer>"],
        "QB": ["<answer>B</answer>"],
        "QC": ["<search>c1</search>", "<answer>C</answer>"],
    }
    tool = FakeTool({"a1": [Hit("x", "T", "t")], "c1": [Hit("y", "T", "t"), Hit("z", "T", "t")]})
    out, engine, _ = run(tok, scripts, tool, prompts=("QA", "QB", "QC"), top_k=2)

    assert tool.calls == [(["a1", "c1"], 2), (["a2"], 2)]
    assert [len(prompts) for prompts, _ in engine.calls] == [3, 2, 1]  # one generate per round
    assert [t.num_searches for t in out] == [2, 0, 1]
    assert [t.retrieved_ids for t in out] == [["x"], [], ["y", "z"]]
    assert [t.queries for t in out] == [["a1", "a2"], [], ["c1"]]
    assert all(t.finish_reason == "answer" for t in out)
    for t in out:  # a2 found nothing: its note is inserted and masked like documents
        assert spans(tok, t)[1].count("<document>") == len(t.retrieved_ids) + (t.queries == ["a1", "a2"])


def test_a_blank_query_is_still_a_search(tok):
    scripts = {"Q0": ["<search>   </search>", "<answer>?</answer>"]}
    (traj,), _, tool = run(tok, scripts)
    assert tool.calls == [([""], 3)]
    assert (traj.num_searches, traj.queries, traj.retrieved_ids) == (1, [""], [])
    assert spans(tok, traj)[1] == NO_RESULTS + "\n" + END


def test_seeded_sampling_gets_a_new_seed_each_round(tok):
    scripts = {"Q0": ["<search>q</search>", "<answer>a</answer>"]}
    _, engine, _ = run(tok, scripts, sampling=SamplingSettings(max_tokens=100, seed=7))
    assert [s.seed for _, s in engine.calls] == [7, 8]


def test_config_defaults_and_errors():
    config = ToolConfig()
    assert (config.max_searches, config.max_turn_tokens, config.top_k, config.max_rounds) == (5, 512, 3, 7)
    assert ToolConfig(max_searches=2).max_rounds == 4
    with pytest.raises(ValueError, match="top_k"):
        ToolConfig(top_k=0)


def test_prompt_is_a_format_string_and_names_the_tags():
    text = SEARCH_PROMPT.format(question="Who wrote Hamlet?")
    assert text.rstrip().endswith("Who wrote Hamlet?")
    for tag in ("<think>", "</think>", "<search>", "</search>", "<document>", "<answer>", "</answer>"):
        assert tag in text


def test_docstring_examples():
    result = doctest.testmod(tools)
    assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------------------------------
# Stop strings in the HF engine
# --------------------------------------------------------------------------------------------------


def test_stop_end_finds_the_completing_token(tok):
    ids = encode(tok, "ab</s>cd")
    assert stop_end([], ids, ["</s>"], tok) == 6
    assert stop_end([], ids, ["zz"], tok) is None
    # A stop string may begin in the prompt and end in the completion ...
    assert stop_end(encode(tok, "x</"), encode(tok, "s>yz"), ["</s>"], tok) == 2
    # ... but one wholly inside the prompt does not count.
    assert stop_end(encode(tok, "</s>"), encode(tok, "yz"), ["</s>"], tok) is None


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_hf_engine_stops_at_a_stop_string_while_the_batch_goes_on(tiny_model, pad_is_eos):
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    engine = HFEngine(model, tok)
    if pad_is_eos:  # finished rows are then filled with end-of-sequence tokens: none may be kept
        engine.pad_id = engine.eos_ids[0]
    prompts = [encode(tok, "What is 1+2?"), encode(tok, "Name a city")]
    # Seeded sampling: the same random stream with and without the stop string (transformers samples
    # every row at each step, finished or not), and varied text from the random model.
    settings = SamplingSettings(max_tokens=40, temperature=1.0, seed=3, logprobs=False)
    free = engine.generate(prompts, 1, settings).completion_ids
    texts = [tok.decode(ids) for ids in free]
    heads = [tok.decode(p[-1:] + ids[:1]) for p, ids in zip(prompts, free)]  # where a prompt overhangs

    def usable(stop: str) -> bool:
        return len(stop) == 2 and stop not in texts[1] and stop not in heads[0] + heads[1]

    # A two-character stop string the model writes mid-way through row 0 and never in row 1.
    stop = next(s for i in range(4, len(free[0]) - 4) if usable(s := tok.decode(free[0][i : i + 2])))
    end = next(k for k in range(1, len(free[0]) + 1) if stop in tok.decode(free[0][:k]))  # plain scan
    stopped = engine.generate(prompts, 1, replace(settings, stop=[stop]))
    assert stopped.completion_ids[0] == free[0][:end]  # cut right after the stop string, no padding
    assert end < len(free[0]) <= len(free[1])  # ... while row 1 kept generating
    assert stopped.completion_ids[1] == free[1]
    scored = engine.generate(prompts, 1, replace(settings, stop=[stop], logprobs=True))
    assert scored.completion_ids == stopped.completion_ids
    # A row on its own (its own random stream): transformers itself stops after the stop string.
    (alone,) = engine.generate(prompts[:1], 1, settings).completion_ids
    stop = next(s for i in range(4, len(alone) - 4) if (s := tok.decode(alone[i : i + 2])) not in heads[0])
    end = next(k for k in range(1, len(alone) + 1) if stop in tok.decode(alone[:k]))
    widths = []
    generate = model.generate
    model.generate = lambda **kw: widths.append(out := generate(**kw)) or out
    assert engine.generate(prompts[:1], 1, replace(settings, stop=[stop])).completion_ids == [alone[:end]]
    assert widths[0].shape[1] == len(prompts[0]) + end < len(prompts[0]) + len(alone)
    assert [len(lp) for lp in scored.logprobs] == [len(ids) for ids in scored.completion_ids]


# --------------------------------------------------------------------------------------------------
# TRL glue: GRPOTrainer(rollout_func=...) for one step on the tiny model
# --------------------------------------------------------------------------------------------------


class Capturing(GRPOTrainer):
    """Keeps the last scored batch, to read the loss mask TRL built from ``env_mask``."""

    def _generate_and_score_completions(self, inputs):
        self.captured = super()._generate_and_score_completions(inputs)
        return self.captured


def tiny_grpo_args(tmp_path, **changes) -> GRPOConfig:
    """The GRPO settings of the trainer tests below: CPU, fp32, 4 completions of up to 120 tokens per prompt."""
    settings = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 120,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
    }
    return GRPOConfig(**{**settings, **changes})


def make_grpo(tiny_model, data_path, tmp_path, rollout_func, reward):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=data_path))
    args = tiny_grpo_args(tmp_path, max_steps=1, learning_rate=1e-2)
    return Capturing(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        rollout_func=rollout_func,
    )


class RecordingReward:
    """Random scores (every group varies), and a record of the rollout fields it was given."""

    __name__ = "recording"
    last_truncated: list[bool] = []

    def __init__(self):
        self.kwargs: dict = {}

    def __call__(self, completions, **kwargs):
        self.kwargs = kwargs
        RecordingReward.last_truncated = list(kwargs.get("truncated") or [])
        return [float(i % 3) for i in range(len(completions))]


def test_grpo_step_with_the_search_rollout_masks_the_documents(tiny_model, math_jsonl, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = make_tiny_tokenizer()
    docs = [Hit("d7", "Sums", "Add the digits.")]
    scripted = ScriptedEngine(
        tok, {"*": ["<think>t</think><search>sum</search>", "<answer>3</answer>" + EOS]}
    )
    reward = RecordingReward()
    rollout = make_rollout_func(
        FakeTool({"sum": docs}), ToolConfig(), engine_factory=lambda trainer: scripted
    )
    trainer = make_grpo(tiny_model, math_jsonl, tmp_path, rollout, reward)
    trainer.train()

    out = trainer.captured
    inserted = tok(tools.format_documents(docs) + "\n", add_special_tokens=False)["input_ids"]
    for ids, mask, tool_mask in zip(out["completion_ids"], out["completion_mask"], out["tool_mask"]):
        n = int(mask.sum())
        text = tok.decode(ids[:n].tolist())
        assert (
            text == "<think>t</think><search>sum</search>" + tok.decode(inserted) + "<answer>3</answer>" + END
        )
        zeros = [t for t, m in zip(ids[:n].tolist(), tool_mask[:n].tolist()) if m == 0]
        assert zeros == inserted + [tok.eos_token_id]  # the loss ignores exactly the documents and the EOS
    assert reward.kwargs["num_searches"] == [1] * 8
    assert reward.kwargs["retrieved_ids"] == [["d7"]] * 8
    assert reward.kwargs["truncated"] == [False] * 8 and "env_mask" not in reward.kwargs
    # The prompts reached the engine through the chat template, with the generation prompt.
    assert tok.decode(scripted.calls[0][0][0]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_grpo_step_on_the_trainers_own_model(tiny_model, math_jsonl, tmp_path, monkeypatch):
    """No engine given: an HFEngine over the unwrapped training model, in train mode again after."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    reward = RecordingReward()
    rollout = make_rollout_func(FakeTool(), ToolConfig(max_turn_tokens=16))
    trainer = make_grpo(tiny_model, math_jsonl, tmp_path, rollout, reward)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    out = trainer.captured
    assert out["completion_ids"].shape[1] <= 120
    assert "sampling_per_token_logps" not in out  # no sampler log-probs on this path: none are needed
    assert all(isinstance(n, int) for n in reward.kwargs["num_searches"])
    assert trainer.model.training
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


class ScriptedButScored(HFEngine):
    """Scripted text, with the log-probs the engine's own copy of the model gives it: a stand-in for
    vLLM whose samples contain searches (the random tiny model never writes tags)."""

    def __init__(self, model, tokenizer, scripts):
        super().__init__(model, tokenizer)
        self.script = ScriptedEngine(tokenizer, scripts)
        self.sleeps = 0

    def generate(self, prompt_ids, n, sampling):
        out = self.script.generate(prompt_ids, n, replace(sampling, logprobs=False))
        out.logprobs = self.score(prompt_ids, out.completion_ids, sampling.temperature)
        return out

    def sleep(self) -> None:
        self.sleeps += 1


def test_posttrain_trainer_with_a_rollout_engine_syncs_it_and_corrects_only_model_tokens(
    tiny_model, math_jsonl, tmp_path, monkeypatch
):
    """The rollout-engine path: the trainer's weight sync runs before each step's rollouts, and the
    importance-sampling correction compares log-probs on model tokens only (inserted tokens carry a
    sampler log-prob of 0.0, far from the trainer's, so the gap would show them)."""
    from helpers_plugins import SeededRandom

    from posttrain.rewards import RewardPlugin
    from posttrain.trainer import PosttrainTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    copy_model, _ = load_model(ModelConfig(name_or_path=tiny_model))
    scripts = {"*": ["<search>sum</search>", "<answer>3</answer>"]}
    engine = ScriptedButScored(copy_model, tok, scripts)
    tool = FakeTool({"sum": [Hit("d7", "Sums", "Add the digits.")]})
    args = tiny_grpo_args(tmp_path, max_steps=2, learning_rate=5e-2)
    trainer = PosttrainTrainer(
        model=model,
        reward_plugins=[RewardPlugin(SeededRandom(), "random")],
        args=args,
        train_dataset=load_datasets(DataConfig(path=math_jsonl))[0],
        processing_class=tok,
        rollout_engine=engine,
        rollout_func=make_rollout_func(tool, ToolConfig()),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and engine.sleeps == 2
    assert "time/sync" in logs[1]  # synced before step 2's rollouts
    assert [entry["rollout/logp_gap"] < 1e-4 for entry in logs] == [True, True], logs
    assert len(tool.calls) == 2


def test_answered_trajectories_are_complete_under_truncation_masking(
    tiny_model, math_jsonl, tmp_path, monkeypatch
):
    """Defect (issue 13): a trajectory that stops at </answer> has no EOS, so TRL took it for truncated;
    with mask_truncated_completions (DAPO's preset) every answered trajectory left the loss and
    completions/clipped_ratio read 1.0. Now only really truncated ones are masked."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = make_tiny_tokenizer()
    # Prompts whose text holds a "0" answer; the others ramble past the turn cap (truncated).
    scripted = ScriptedEngine(tok, {"+0": ["<answer>3</answer>"], "*": ["a long ramble " * 20]})
    rollout = make_rollout_func(FakeTool(), ToolConfig(max_turn_tokens=40), engine_factory=lambda t: scripted)
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    trainer = Capturing(
        model=model,
        reward_funcs=RecordingReward(),
        args=tiny_grpo_args(tmp_path, max_steps=1, mask_truncated_completions=True, seed=1),
        train_dataset=load_datasets(DataConfig(path=math_jsonl))[0],
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    trainer.train()
    out = trainer.captured
    truncated = RecordingReward.last_truncated
    trained = (out["completion_mask"] * out["tool_mask"]).sum(dim=1) > 0
    assert trained.tolist() == [not t for t in truncated]  # answered: in the loss; cut off: masked
    assert any(trained) and not all(trained)
    clipped = trainer.state.log_history[0]["completions/clipped_ratio"]
    assert clipped == pytest.approx(sum(truncated) / len(truncated))


def test_evaluation_leaves_the_pay_per_search_history_alone(tiny_model, math_jsonl, tmp_path, monkeypatch):
    """Defect (issue 13): scoring held-out rows (trainer.evaluate) updated pay_per_search's history of the
    fewest searches, so evaluation changed later training rewards."""
    from posttrain.rewards import RewardPlugin, load_reward
    from posttrain.trainer import PosttrainTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = make_tiny_tokenizer()
    scripted = ScriptedEngine(tok, {"*": ["<search>sum</search>", "<answer>3</answer>"]})
    rollout = make_rollout_func(FakeTool(), ToolConfig(), engine_factory=lambda trainer: scripted)
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    data = load_datasets(DataConfig(path=math_jsonl))[0]
    data = data.map(lambda r, i: {"id": f"q{i}", "answer": "3"}, with_indices=True)  # "3" is right
    plugin = RewardPlugin(load_reward("pay_per_search"), "pay_per_search")
    trainer = PosttrainTrainer(
        model=model,
        reward_plugins=[plugin],
        args=tiny_grpo_args(tmp_path, max_steps=1, per_device_eval_batch_size=8, num_generations_eval=4),
        train_dataset=data,
        eval_dataset=data.select(range(4)),
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    assert plugin.state_dict() == {"history": {}}
    trainer.evaluate()
    assert plugin.state_dict() == {"history": {}}  # held-out scoring taught it nothing
    trainer.train()
    assert plugin.state_dict()["history"]  # training does update it (a correct answer after one search)
