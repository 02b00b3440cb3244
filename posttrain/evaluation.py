"""Held-out accuracy: greedy, mean@k and maj@k, with a JSONL of predictions.

    posttrain eval --model runs/demo --data.generator chain_sum --num_samples 4 --temperature 1.0

Correctness is decided by the same code as the ``accuracy`` reward (:func:`rewards.math.score`):
math-verify for math answers, a reasoning-gym task's own ``score_answer`` for generated tasks. A
sample counts as correct when it scores 1.0. maj@k takes the most common final answer among the
k samples (answers compared by mathematical equivalence; ties go to the answer seen first).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from posttrain.chat import prefill, template_kwargs
from posttrain.verify.math import get_extractor, score
from posttrain.verify.vote import majority_answer

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]

    def save(self, folder: str | Path, name: str = "eval") -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(self.metrics, indent=2) + "\n")
        with open(folder / f"{name}_predictions.jsonl", "w") as f:
            for row in self.predictions:
                f.write(json.dumps(row) + "\n")


def _autocast(model) -> torch.autocast:
    """bf16 compute over the fp32 master weights where the hardware has it natively, as in training."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        from posttrain.models import cpu_supports_bf16

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_supports_bf16())
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 64,
    desc: str = "generate",
) -> list[list[str]]:
    """Complete each chat prompt ``num_samples`` times (greedy when ``temperature == 0``).

    A prompt ending in an assistant message is a reply already begun (:mod:`posttrain.chat`): the model
    continues it, and the returned text is the whole reply (the prefilled text first)."""
    model.eval()
    device = next(model.parameters()).device
    sample = temperature > 0
    out: list[list[str]] = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            flags = template_kwargs(chunk[0])
            if any(template_kwargs(p) != flags for p in chunk):
                raise ValueError(
                    "generate: a batch mixes prompts that prefill the reply (ending in an assistant message) "
                    "with prompts that do not; generate the two kinds in separate calls."
                )
            enc = tokenizer.apply_chat_template(
                chunk, padding=True, return_tensors="pt", return_dict=True, **flags
            ).to(device)
            # Plain sampling (no top-k/top-p) so that mean@k measures the policy's own distribution.
            kwargs = {"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}
            with _autocast(model):
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_samples,
                    do_sample=sample,
                    pad_token_id=tokenizer.pad_token_id,
                    **kwargs,
                )
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            # A prefilled reply is returned whole: the prefilled text, then what the model wrote.
            out.extend(
                [prefill(p) + t for t in texts[i * num_samples : (i + 1) * num_samples]]
                for i, p in enumerate(chunk)
            )
            bar.update(len(chunk))
    return out


def is_correct(text: str, row: dict[str, Any], extract: str = "lenient") -> bool:
    return score(text, row.get("answer") or "", row.get("verifier") or None, extract) >= 1.0


def evaluate(
    model,
    tokenizer,
    dataset,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "eval",
    extract: str = "lenient",
) -> EvalResult:
    """Greedy accuracy, and mean@k / maj@k over ``num_samples`` samples when k > 1.

    ``extract``: how final answers are read (``rewards.math.EXTRACTORS``), so that a method is measured the
    way it is rewarded (``posttrain adapt`` passes its test-time reward's policy)."""
    answer_of = get_extractor(extract)
    rows = [dict(r) for r in dataset]
    prompts = [r["prompt"] for r in rows]
    greedy = generate(model, tokenizer, prompts, max_new_tokens, 1, 0.0, batch_size, f"{desc} (greedy)")
    preds = []
    for row, (text,) in zip(rows, greedy):
        preds.append(
            {
                "id": row.get("id"),
                "question": row.get("question"),
                "answer": row.get("answer"),
                "completion": text,
                "extracted": answer_of(text),
                "correct": is_correct(text, row, extract),
            }
        )
    n = max(len(rows), 1)
    metrics = {"n": len(rows), "accuracy_greedy": sum(p["correct"] for p in preds) / n}
    if num_samples > 1:
        torch.manual_seed(seed)
        samples = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens,
            num_samples,
            temperature,
            batch_size,
            f"{desc} (k={num_samples})",
        )
        mean_k, maj_k = 0.0, 0.0
        for row, pred, texts in zip(rows, preds, samples):
            correct = [is_correct(t, row, extract) for t in texts]
            maj, share = majority_answer([answer_of(t) for t in texts])
            maj_ok = maj is not None and is_correct(f"\\boxed{{{maj}}}", row)  # the answer itself, boxed
            pred.update(
                samples=texts,
                samples_correct=correct,
                majority=maj,
                majority_share=share,
                majority_correct=maj_ok,
            )
            mean_k += sum(correct) / len(correct)
            maj_k += maj_ok
        metrics[f"mean@{num_samples}"] = mean_k / n
        metrics[f"maj@{num_samples}"] = maj_k / n
        metrics["temperature"] = temperature
    return EvalResult(metrics=metrics, predictions=preds)


def held_out(recipe, model, tokenizer, eval_ds, args, name: str) -> dict[str, Any]:
    """Held-out accuracy with the recipe's ``eval`` settings; saves ``eval_<name>.json`` + predictions."""
    result = evaluate(
        model,
        tokenizer,
        eval_ds,
        max_new_tokens=recipe.eval.max_new_tokens or args.max_completion_length,
        num_samples=recipe.eval.num_samples,
        temperature=recipe.eval.temperature,
        batch_size=recipe.eval.batch_size,
        seed=args.seed,
        desc=f"eval {name}",
    )
    result.save(recipe.output_dir, f"eval_{name}")
    logger.info("Held-out %s: %s", name, result.metrics)
    return result.metrics
