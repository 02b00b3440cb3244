"""Memory-R+'s episodic-memory rewards (rewards/memory.py) against the paper's formulas.

    pytest tests/test_memory.py -q

Hand-built embeddings (a fake embedder maps each text to a chosen vector) check exploit (Eq. 4) and
explore (Eq. 5), the sliding min-max (Eq. 6) and its edge cases, per-question keying in a batch of
several questions, eviction, the warm-up, both insertion orders and a state round trip through a
checkpoint file. One test loads the packaged all-MiniLM-L6-v2 and one trains the shipped recipe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from posttrain.errors import RewardError
from rewards.memory import EpisodicMemory, KeyedMemory, SlidingMinMax, exploit_value, explore_value

REPO = Path(__file__).resolve().parents[1]


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


class FakeEmbedder:
    """Question texts and reasoning texts mapped to fixed unit vectors; records each batch."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.batches = table, []

    def __call__(self, texts):
        self.batches.append(list(texts))
        return np.stack([self.table[t] for t in texts])


def test_exploit_and_explore_follow_equations_4_and_5():
    a = unit(1, 0, 0)
    successes = np.stack([unit(1, 1, 0), unit(1, -1, 0)])  # centroid (0.707, 0, 0)
    assert exploit_value(a, successes) == pytest.approx(-(1 - math.sqrt(0.5)), abs=1e-6)
    failures = np.stack([unit(0, 1, 0), unit(1, 1, 0)])
    assert explore_value(a, failures) == pytest.approx(1 - math.sqrt(0.5), abs=1e-6)  # 1 - max cos
    assert exploit_value(a, np.zeros((0, 3))) == 0.0 and explore_value(a, np.zeros((0, 3))) == 1.0


def test_sliding_min_max_and_its_edge_cases():
    norm = SlidingMinMax(window=3)
    assert norm([]) == []  # an empty window
    assert norm([5.0]) == [0.0]  # one value: max = min
    assert norm([5.0]) == [0.0]  # equal values
    assert norm([7.0]) == [pytest.approx(1.0, abs=1e-6)]
    assert norm([6.0]) == [pytest.approx(0.5, abs=1e-6)]
    assert norm([9.0]) == [pytest.approx(1.0, abs=1e-6)]  # window now 7, 6, 9: the 5s left it
    # A call's values enter together: each is rescaled by the same window, whatever its position.
    assert norm([1.0, 3.0]) == [pytest.approx(0.0, abs=1e-6), pytest.approx(0.25, abs=1e-6)]  # 9, 1, 3


def test_memory_evicts_the_oldest_question_and_response():
    memory = KeyedMemory(capacity=2, per_key=2)
    for i, q in enumerate(["q1", "q2", "q1", "q1", "q3"]):
        memory.add(q, unit(1, i + 1), unit(i, 1))
    assert list(memory.keys) == ["q2", "q3"]  # q1 was the oldest question when q3 came
    memory.add("q2", unit(1, 2), unit(9, 1))
    memory.add("q2", unit(1, 2), unit(8, 1))
    assert len(memory.responses["q2"]) == 2 and np.allclose(memory.responses["q2"][0], unit(9, 1))
    assert memory.nearest(np.stack([unit(1, 2), unit(1, 5)]), 1) == [["q2"], ["q3"]]
    memory.faiss_above = 0  # the same answer from the FAISS index used for large memories
    assert memory.nearest(np.stack([unit(1, 2), unit(1, 5)]), 1) == [["q2"], ["q3"]]


def _batch():
    # Two questions, two completions each; q1's first is right, q2's both wrong.
    table = {
        "Q1": unit(1, 0, 0, 0),
        "Q2": unit(0, 1, 0, 0),
        "r1a": unit(0, 0, 1, 0),
        "r1b": unit(0, 0, 0, 1),
        "r2a": unit(0, 0, 1, 1),
        "r2b": unit(0, 1, 1, 0),
    }
    prompts = [[{"role": "user", "content": q}] for q in ("Q1", "Q1", "Q2", "Q2")]
    completions = ["<think>r1a</think><answer>4</answer>", "<think>r1b</think><answer>5</answer>"]
    completions += ["<think>r2a</think><answer>1</answer>", "<think>r2b</think><answer>2</answer>"]
    return table, prompts, completions, ["4", "4", "9", "9"]


def test_each_completion_is_keyed_by_its_own_question():
    table, prompts, completions, answers = _batch()
    embed = FakeEmbedder(table)
    reward = EpisodicMemory(explore=True, warmup_steps=0, extract="tagged", embed=embed)
    reward(completions, group_size=2, prompts=prompts, answer=answers)
    assert embed.batches == [["Q1", "Q2", "r1a", "r1b", "r2a", "r2b"]]  # one batch per call
    assert list(reward.success.keys) == ["Q1"] and len(reward.success.responses["Q1"]) == 1
    assert list(reward.failure.keys) == ["Q1", "Q2"]  # r1b under Q1, never under the call's first prompt
    assert [v.tolist() for v in reward.failure.responses["Q2"]] == [
        table["r2a"].tolist(),
        table["r2b"].tolist(),
    ]


def test_scores_are_read_from_earlier_steps_with_insert_after():
    table, prompts, completions, answers = _batch()
    reward = EpisodicMemory(
        explore=True, warmup_steps=0, window=100, extract="tagged", embed=FakeEmbedder(table)
    )
    first = reward(completions, group_size=2, prompts=prompts, answer=answers)
    assert first == [
        pytest.approx(0.0),
        pytest.approx(0.0),
        pytest.approx(0.0),
        pytest.approx(0.0),
    ]  # empty memory
    second = reward(completions, group_size=2, prompts=prompts, answer=answers)
    # Q1's completions now read the success memory {r1a}: r1a is at distance 0, r1b at sqrt(2).
    raw_exploit = [exploit_value(table[r], np.stack([table["r1a"]])) for r in ("r1a", "r1b")]
    assert raw_exploit == [pytest.approx(0.0), pytest.approx(-math.sqrt(2), abs=1e-6)]
    assert second[0] > second[1]  # the completion like the past success scores higher


def test_insert_before_compares_a_success_with_itself_as_the_reference_does():
    table, prompts, completions, answers = _batch()
    before = EpisodicMemory(explore=False, insert="before", extract="tagged", embed=FakeEmbedder(table))
    scores = before(completions, group_size=2, prompts=prompts, answer=answers)
    # r1a is already in the success memory when scored: distance 0, the best exploit of the call.
    assert scores[0] == pytest.approx(max(scores))
    after = EpisodicMemory(explore=False, insert="after", extract="tagged", embed=FakeEmbedder(table))
    assert after(completions, group_size=2, prompts=prompts, answer=answers) == [0.0] * 4


def test_explore_is_zero_during_the_warm_up():
    table, prompts, completions, answers = _batch()
    reward = EpisodicMemory(
        explore=True, warmup_steps=2, beta_exploit=0.0, extract="tagged", embed=FakeEmbedder(table)
    )
    for _ in range(2):
        assert reward(completions, group_size=2, prompts=prompts, answer=answers) == [0.0] * 4
    third = reward(completions, group_size=2, prompts=prompts, answer=answers)
    assert reward.explore_active() and any(s > 0 for s in third)
    plain = EpisodicMemory(explore=False, warmup_steps=0, beta_exploit=0.0, embed=FakeEmbedder(table))
    for _ in range(3):  # Memory-R (no explore): only the exploit term, here weighted 0
        assert plain(completions, group_size=2, prompts=prompts, answer=answers) == [0.0] * 4


def test_state_round_trip_through_a_checkpoint_file(tmp_path):
    table, prompts, completions, answers = _batch()
    one = EpisodicMemory(explore=True, warmup_steps=1, window=5, extract="tagged", embed=FakeEmbedder(table))
    for _ in range(3):
        one(completions, group_size=2, prompts=prompts, answer=answers)
    torch.save(one.state_dict(), tmp_path / "state.pt")
    two = EpisodicMemory(explore=True, warmup_steps=1, window=5, extract="tagged", embed=FakeEmbedder(table))
    two.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # plain types only
    assert two(completions, group_size=2, prompts=prompts, answer=answers) == one(
        completions, group_size=2, prompts=prompts, answer=answers
    )


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"k": 0}, "`k` must be an integer >= 1"),
        ({"window": 1}, "`window` must be an integer >= 2"),
        ({"beta_explore": -1.0}, "`beta_explore` must be a number >= 0"),
        ({"insert": "during"}, "`insert` must be 'after'"),
        ({"extract": "magic"}, "unknown answer extraction policy"),
    ],
)
def test_bad_settings_are_one_clear_message(kwargs, phrase):
    with pytest.raises(RewardError, match=phrase):
        EpisodicMemory(**kwargs)


def test_data_without_correctness_is_refused():
    reward = EpisodicMemory(embed=FakeEmbedder({}))
    with pytest.raises(RewardError, match="needs a correctness signal"):
        reward(["x"], group_size=1, prompts=["Q"])


def test_the_packaged_minilm_embeds_offline():
    from posttrain.embedding import load_embedder

    embed = load_embedder("all-MiniLM-L6-v2")
    vectors = embed(["What is 2+2?", "What is two plus two?", "The Nile is a river in Africa."])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # paraphrases are nearer


def test_a_missing_embedder_folder_is_a_clear_error(tmp_path):
    from posttrain.embedding import load_embedder
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="Cannot load the sentence embedder"):
        load_embedder(str(tmp_path / "no-such-embedder"))


def test_the_shipped_recipe_trains_a_few_steps(tiny_model, tmp_path, monkeypatch):
    from posttrain import cli

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    torch.set_num_threads(1)
    flags = ["--model.name_or_path", tiny_model, "--max_steps", "2", "--data.max_samples", "16"]
    flags += ["--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "16"]
    flags += ["--eval.before", "false", "--eval.after", "false", "--report_to", "none", "--bf16", "false"]
    flags += ["--output_dir", str(tmp_path / "run")]
    assert cli.main(["train", "recipes/memory_r_gsm8k.yaml", *flags]) == 0
    steps = [
        m
        for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "loss" in m
    ]
    assert len(steps) == 2
    assert all("rewards/episodic_memory/mean" in m and "time/memory" in m for m in steps)
    assert steps[1]["memory/size_failure"] >= 1  # the tiny model's wrong answers were stored
