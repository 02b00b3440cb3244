"""Evaluation of a search-tool policy: exact match with the tool, and abstention without it (MASH).

    posttrain eval --search --model runs/mash_search --data data/squad/questions.jsonl \\
        --data.answer_field answers --data.id_field id --data.eval_size 100

Three greedy-or-sampled passes over the questions (``search_prompt`` as the recipe's, by default
:data:`posttrain.rollout.tools.SEARCH_PROMPT`):

1. **With the tool** (the training loop, greedy): exact match and F1 of the final ``<answer>`` (SQuAD
   normalisation, :mod:`posttrain.verify.qa`, the code ``pay_per_search`` rewards with), searches per question,
   share of questions that searched, share that hit the search budget.
2. **Tool removed** (MASH's abstention read-off, arXiv 2510.01152): one greedy turn that stops at
   ``</search>`` or ``</answer>``; a completion that asks to search is an abstention. Reported:
   abstention rate, accuracy on the answered questions, accuracy counting abstentions as wrong.
3. **What the model knows** (``known_samples`` > 0): that many sampled answers per question to a
   prompt without the tool; ``known`` = their exact-match rate. MASH estimates it the same way (from
   its base model, 10 samples). With it: how abstention tracks the questions the model gets wrong
   (abstention rate when known = 0 vs known = 1, and precision/recall of abstaining on unknowns).

Metric names: ``tool/*`` (pass 1) and ``no_tool/*`` (passes 2-3), see :func:`posttrain.verify.qa.abstention_metrics`.
"""

from __future__ import annotations

import logging
from typing import Any

from posttrain.evaluation import EvalResult
from posttrain.methods.mash.config import SearchConfig
from posttrain.rollout.base import SamplingSettings
from posttrain.rollout.tools import STOP_STRINGS, run_search_loop
from posttrain.verify.qa import abstention_metrics, exact_match, extract_answer, f1_score

logger = logging.getLogger(__name__)

# Pass 3's prompt: the same question, no tool offered, just the answer.
DIRECT_PROMPT = (
    "Answer the question at the end from what you know. Write only the short answer, with no "
    "explanation, between <answer> and </answer>, for example <answer> Paris </answer>.\n\n"
    "Question: {question}\n"
)


def _prompt_ids(tokenizer, rows: list[dict], template: str | None) -> list[list[int]]:
    out = []
    for row in rows:
        messages = (
            row["prompt"]
            if template is None
            else [{"role": "user", "content": template.format(question=row["question"])}]
        )
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        out.append(list(enc["input_ids"]))
    return out


def _gold(row: dict) -> list[str]:
    return list(row.get("answers") or ([row["answer"]] if row.get("answer") is not None else []))


def asked_to_search(text: str) -> bool:
    """A request to search: an opened ``<search>`` tag (closed or not: the tool is not there to answer)."""
    return "<search>" in text


def evaluate_search(
    model,
    tokenizer,
    rows: list[dict],
    search: SearchConfig,
    max_new_tokens: int,
    batch_size: int = 32,
    known_samples: int = 4,
    seed: int = 0,
    tool=None,
    engine=None,
) -> EvalResult:
    """Passes 1-3 of the module docstring on ``rows`` (posttrain rows with ``answer``/``answers``).

    ``tool`` defaults to ``search.make_tool()``, ``engine`` to transformers generation with ``model``.
    """
    from posttrain.rollout.hf import HFEngine

    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("evaluate_search needs at least one question.")
    if any(not _gold(r) for r in rows):
        from posttrain.errors import DataError

        raise DataError(
            "eval --search scores exact match against the accepted answers, and some questions have none; "
            "set --data.answer_field to the column holding them (SQuAD/NQ: answers)."
        )
    engine = engine if engine is not None else HFEngine(model, tokenizer, batch_size=batch_size)
    tool = tool if tool is not None else search.make_tool()
    was_training = model.training
    model.eval()
    try:
        prompt_ids = _prompt_ids(tokenizer, rows, None)
        greedy = SamplingSettings(max_tokens=max_new_tokens, temperature=0.0, logprobs=False)
        trajectories = run_search_loop(
            engine,
            prompt_ids,
            tokenizer,
            tool,
            search.tool_config(max_new_tokens),
            greedy,
            format_documents=search.formatter(),
        )
        turn = SamplingSettings(
            max_tokens=min(search.max_turn_tokens, max_new_tokens),
            temperature=0.0,
            stop=list(STOP_STRINGS),
            logprobs=False,
        )
        no_tool = engine.generate(prompt_ids, 1, turn).completion_ids
        known: list[float | None] = [None] * len(rows)
        if known_samples > 0:
            direct = _prompt_ids(tokenizer, rows, DIRECT_PROMPT)
            sampled = SamplingSettings(
                max_tokens=min(64, max_new_tokens),
                temperature=1.0,
                stop=["</answer>"],
                seed=seed,
                logprobs=False,
            )
            outs = engine.generate(direct, known_samples, sampled).completion_ids
            for i, row in enumerate(rows):
                texts = [
                    tokenizer.decode(ids, skip_special_tokens=True)
                    for ids in outs[i * known_samples : (i + 1) * known_samples]
                ]
                known[i] = sum(exact_match(extract_answer(t), _gold(row)) for t in texts) / known_samples
    finally:
        model.train(was_training)

    predictions, records = [], []
    for i, row in enumerate(rows):
        gold = _gold(row)
        traj = trajectories[i]
        text = tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
        answer = extract_answer(text)
        plain = tokenizer.decode(no_tool[i], skip_special_tokens=True)
        plain_answer = None if asked_to_search(plain) else extract_answer(plain)
        record = {
            "correct": exact_match(plain_answer, gold),
            "f1": f1_score(plain_answer, gold),
            "searched": asked_to_search(plain),
        }
        if known[i] is not None:
            record["known"] = known[i]
        records.append(record)
        predictions.append(
            {
                "id": row.get("id"),
                "question": row.get("question"),
                "answers": gold,
                "completion": text,
                "prediction": answer,
                "exact_match": exact_match(answer, gold),
                "f1": f1_score(answer, gold),
                "num_searches": traj.num_searches,
                "queries": traj.queries,
                "retrieved_ids": traj.retrieved_ids,
                "no_tool_completion": plain,
                "abstained": record["searched"],
                "known": known[i],
            }
        )
    n = len(rows)
    metrics: dict[str, Any] = {
        "n": n,
        "tool/exact_match": sum(p["exact_match"] for p in predictions) / n,
        "tool/f1": sum(p["f1"] for p in predictions) / n,
        "tool/searches_mean": sum(t.num_searches for t in trajectories) / n,
        "tool/search_rate": sum(t.num_searches > 0 for t in trajectories) / n,
        "tool/budget_hit_rate": sum(t.search_budget_hit for t in trajectories) / n,
        "tool/answered": sum(p["prediction"] is not None for p in predictions) / n,
    }
    metrics.update({f"no_tool/{k}": v for k, v in abstention_metrics(records).items() if k != "n"})
    return EvalResult(metrics=metrics, predictions=predictions)


def held_out(recipe, model, tokenizer, eval_ds, args, name: str) -> dict[str, Any]:
    """Held-out evaluation of a search-tool run (passes 1 and 2); saves ``eval_<name>.json``."""
    result = evaluate_search(
        model,
        tokenizer,
        list(eval_ds),
        recipe.search,
        max_new_tokens=recipe.eval.max_new_tokens or args.max_completion_length,
        batch_size=recipe.eval.batch_size,
        known_samples=0,  # the abstention read-off without "known": `posttrain eval --search` adds it
        seed=args.seed,
    )
    result.save(recipe.output_dir, f"eval_{name}")
    logger.info("Held-out %s: %s", name, result.metrics)
    return result.metrics
