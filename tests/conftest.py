"""Shared fixtures: a tiny random model (built once per session) and small JSONL data sets."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.testing import make_tiny_model

# Tiny models only lose time to thread synchronisation, badly so on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny randomly initialised Llama folder with a ChatML char tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture
def math_jsonl(tmp_path) -> str:
    """A 12-row JSONL of one-digit additions with `question` / `answer` columns."""
    path = tmp_path / "math.jsonl"
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(3) for b in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)
