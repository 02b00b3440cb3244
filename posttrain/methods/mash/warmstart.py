"""A warm start for search-tool RL: supervised trajectories that show the tags, documents masked.

    from posttrain.methods.mash.warmstart import warm_start_examples, warm_start
    examples = warm_start_examples(rows, tool, tokenizer, top_k=3, search_share=0.67, seed=0)
    warm_start(model, tokenizer, examples, output_dir="runs/warm", epochs=1, learning_rate=5e-5)

Why: a policy that never writes ``<search>`` or ``<answer>`` gets reward 0 from ``pay_per_search``
on every rollout, so RL has nothing to follow (SmolLM2-135M answers in free text). MASH (arXiv
2510.01152; its ``example_scripts/warm_start``; docs/methods.md, "Pay-per-search") starts RL from an SFT
checkpoint trained on trajectories from a larger model, about a third answering directly and the rest
searching one or two times, with the gold answer put into the answer tag and the retrieved documents
masked from the loss. We build the same shapes without a larger model: the trajectories are
templates filled with the question (as the query), the real retrieved documents and the gold answer.
They teach the format and the two behaviours, not reasoning; which behaviour pays off for which
question is left to RL.

Loss: the model's own tokens only (prompt and inserted documents are label -100), trained with
``transformers.Trainer``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from posttrain import chat
from posttrain.retrieval.tool import NO_RESULTS, format_documents

IGNORE = -100  # labels the loss skips (transformers' convention)


@dataclass
class Segment:
    text: str
    trained: bool
    """False for inserted text (documents): it stays in the input and out of the loss."""


def search_trajectory(
    question: str, answer: str, hits: Sequence[Any], formatter=format_documents
) -> list[Segment]:
    """think -> search(question) -> documents (masked, written by ``formatter`` as the loop does) -> think -> answer."""
    return [
        Segment(f"<think> I need to look this up. </think>\n<search> {question} </search>", True),
        Segment((formatter(hits) if hits else NO_RESULTS) + "\n", False),
        Segment(f"<think> The documents answer it. </think>\n<answer> {answer} </answer>", True),
    ]


def direct_trajectory(answer: str) -> list[Segment]:
    """think -> answer, no search."""
    return [Segment(f"<think> I know this. </think>\n<answer> {answer} </answer>", True)]


def encode(tokenizer, prompt: list[dict], segments: list[Segment]) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (-100 on the prompt and on untrained segments), ending in EOS. A prompt
    ending in an assistant message is continued (posttrain/chat.py)."""
    ids = chat.encode(tokenizer, prompt)
    labels = [IGNORE] * len(ids)
    for seg in segments:
        part = tokenizer(seg.text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if seg.trained else [IGNORE] * len(part)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": labels}


def warm_start_examples(
    rows: Sequence[dict],
    tool,
    tokenizer,
    top_k: int = 3,
    search_share: float = 2 / 3,
    seed: int = 0,
    format_documents=format_documents,
) -> list[dict[str, list[int]]]:
    """One example per row with an answer: ``search_share`` of them search (MASH: about two thirds),
    the rest answer directly. Queries of the searching rows go to ``tool`` in one batch."""
    if not 0 <= search_share <= 1:
        raise ValueError(f"search_share must be in [0, 1], got {search_share}.")
    rows = [r for r in rows if r.get("answer") is not None]
    rng = random.Random(seed)
    searching = [rng.random() < search_share for _ in rows]
    queries = [r["question"] for r, s in zip(rows, searching, strict=True) if s]
    found = iter(tool.search(queries, top_k) if queries else [])
    examples = []
    for row, search in zip(rows, searching, strict=True):
        segments = (
            search_trajectory(row["question"], row["answer"], next(found), format_documents)
            if search
            else direct_trajectory(row["answer"])
        )
        examples.append(encode(tokenizer, row["prompt"], segments))
    return examples


def _collate(pad_id: int):
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad_id] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [IGNORE] * (width - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def warm_start(
    model,
    tokenizer,
    examples: list[dict[str, list[int]]],
    output_dir: str,
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    seed: int = 0,
):
    """Supervised fine-tuning on ``examples`` with ``transformers.Trainer``; returns the trained model."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from posttrain.models import detect_precision

    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        lr_scheduler_type="constant",
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=seed,
        remove_unused_columns=False,
        **detect_precision(),  # bf16 where the hardware has it (autocast on CPU), as the RL trainer does
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(examples),
        data_collator=_collate(tokenizer.pad_token_id),
    )
    trainer.train()
    model.eval()
    return model
