"""The search warm start (posttrain/methods/mash/warmstart.py): trajectories, masks, and a short SFT on the tiny model.

pytest tests/test_warmstart.py -q
"""

from __future__ import annotations

import torch
from helpers_search import FakeTool

from posttrain.methods.mash.warmstart import IGNORE, Segment, encode, warm_start, warm_start_examples
from posttrain.models import ModelConfig, load_model


def rows(n):
    return [
        {
            "question": f"Capital {i}?",
            "answer": "Paris",
            "prompt": [{"role": "user", "content": f"Capital {i}?"}],
        }
        for i in range(n)
    ]


def test_labels_cover_exactly_the_model_text(tiny_model):
    _, tok = load_model(ModelConfig(name_or_path=tiny_model))
    segments = [
        Segment("<search> q </search>", True),
        Segment("<document>D</document>", False),
        Segment("<answer> A </answer>", True),
    ]
    ex = encode(tok, [{"role": "user", "content": "Q?"}], segments)
    trained = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE]
    assert (
        tok.decode(trained[:-1]) == "<search> q </search><answer> A </answer>"
    )  # documents and prompt masked
    assert trained[-1] == tok.eos_token_id
    masked = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label == IGNORE]
    assert "<document>D</document>" in tok.decode(masked) and "Q?" in tok.decode(masked)


def test_search_share_and_one_batched_search(tiny_model):
    _, tok = load_model(ModelConfig(name_or_path=tiny_model))
    tool = FakeTool()
    examples = warm_start_examples(rows(30), tool, tok, top_k=1, search_share=0.5, seed=0)
    assert len(examples) == 30 and len(tool.calls) == 1
    searching = [e for e in examples if "<search>" in tok.decode(e["input_ids"])]
    assert len(searching) == len(tool.calls[0]) and 5 < len(searching) < 25
    assert all("(Title: Paris)" in tok.decode(e["input_ids"]) for e in searching)
    assert warm_start_examples(rows(5), FakeTool(), tok, search_share=0.0)[0]["input_ids"]  # none search


def test_warm_start_lowers_the_loss_on_its_examples(tiny_model, tmp_path):
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    examples = warm_start_examples(rows(8), FakeTool(), tok, top_k=1, search_share=0.5)

    def loss():
        with torch.no_grad():
            ex = examples[0]
            out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]]))
        return out.loss.item()

    before = loss()
    warm_start(model, tok, examples, str(tmp_path / "warm"), epochs=3, learning_rate=1e-2, batch_size=4)
    assert loss() < before
