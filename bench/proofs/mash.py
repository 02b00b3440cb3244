"""Pay-per-search's proof: search use aligns with what the model knows (MASH, arXiv 2510.01152).

Setting (:mod:`bench.proofs.knowledge`): common-fact questions SmolLM2-135M answers right without help
(``known``: at least half of 8 samples at T = 0.5 right, decided on the base model as MASH decides it)
mixed with questions about invented entities whose answers exist only in the search corpus. The corpus
(BM25, one sentence per fact of both kinds) answers every question, so a search never hurts; under
pay-per-search it only costs. Held out: up to 90 known questions (half of those the base model knows) and invented ones up to 200; trained on the rest of the
known ones and as many invented ones.

Both arms start from one warm start (MASH's shape, :mod:`posttrain.methods.mash.warmstart`: two thirds of
the examples search once, one third answer directly, whatever the question), then train with
``pay_per_search`` at equal wall budget: lam 0.5 (the method) and lam 1 (no penalty: a search is free).
Evaluated on the held-out questions, greedy, with the tool (searches, exact match) and without it (a
search request is an abstention, :mod:`posttrain.methods.mash.evaluate`).

Expected, if the mechanism works: under pay-per-search, searches fall on known questions and stay on
invented ones; without the penalty they stay everywhere; exact match does not fall below the
no-penalty arm; abstention without the tool picks out the invented questions. Effect: the search gap
(searches on invented minus on known questions) of pay-per-search minus that of the no-penalty arm.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from bench.proofs.harness import BASE, Arm, Context, Figure, Records, Setting
from bench.proofs.knowledge import common_facts, invented_facts
from bench.stats import mean_over

KNOWN_SAMPLES, KNOWN_TEMPERATURE, KNOWN_AT = 8, 0.5, 0.5
# A shorter wording of the search prompt's instruction (posttrain.rollout.tools.SEARCH_PROMPT has 110
# tokens): on 2 CPU cores the update's cost grows with every prompt token.
PROMPT = (
    "Answer the question. If you do not know the answer, search for it: <search> query </search>; the "
    "result comes back in <document> </document>. Searches cost. Give the short answer in <answer> </answer>."
    "\nQuestion: {question}\n"
)
EVAL_KNOWN = 90  # held-out known questions at most (about half of what the base model knows)
MAX_TOKENS = 96


def _subset_mean(column: str, known: bool):
    def stat(r: Records, q) -> float:
        values = [r.columns[column][i] for i in q if r.columns["known"][i] == known]
        return sum(values) / len(values) if values else math.nan

    return stat


def _gap(r: Records, q) -> float:
    return _subset_mean("searches", False)(r, q) - _subset_mean("searches", True)(r, q)


def _abstain(measure: str):
    def stat(r: Records, q) -> float:
        abstained = [r.columns["known"][i] for i in q if r.columns["abstained"][i]]
        if measure == "precision":  # of the abstentions, the share on invented (unknowable) questions
            return abstained.count(False) / len(abstained) if abstained else math.nan
        unknown = [r.columns["abstained"][i] for i in q if not r.columns["known"][i]]
        return sum(unknown) / len(unknown) if unknown else math.nan

    return stat


def _mean(column: str):
    return lambda r, q: mean_over(r.columns[column], q)


class MashProof(Setting):
    name = "mash"
    description = (
        "knowledge boundary: common facts the base model knows + invented facts only the corpus holds; "
        "warm start, then pay_per_search lam 0.5 vs lam 1 (no penalty) at equal wall budget"
    )
    arms = [
        Arm("mash", {"rewards": [{"name": "pay_per_search", "weight": 1.0, "kwargs": {"lam": 0.5}}]}),
        Arm("nopenalty", {"rewards": [{"name": "pay_per_search", "weight": 1.0, "kwargs": {"lam": 1.0}}]}),
    ]
    default_budget = "8m"
    headline = [
        "searches_known_before",
        "searches_known_after",
        "searches_unknown_before",
        "searches_unknown_after",
        "em_after",
        "nopenalty_em_after",
        "abstain_precision",
        "abstain_recall",
    ]

    def __init__(self) -> None:
        self.figures = [
            Figure("searches_known_before", BASE, "before", _subset_mean("searches", True)),
            Figure("searches_known_after", "mash", "after", _subset_mean("searches", True)),
            Figure("nopenalty_searches_known_after", "nopenalty", "after", _subset_mean("searches", True)),
            Figure("searches_unknown_before", BASE, "before", _subset_mean("searches", False)),
            Figure("searches_unknown_after", "mash", "after", _subset_mean("searches", False)),
            Figure("nopenalty_searches_unknown_after", "nopenalty", "after", _subset_mean("searches", False)),
            Figure("search_gap_before", BASE, "before", _gap),
            Figure("search_gap_after", "mash", "after", _gap),
            Figure("nopenalty_search_gap_after", "nopenalty", "after", _gap),
            Figure("em_before", BASE, "before", _mean("em")),
            Figure("em_after", "mash", "after", _mean("em")),
            Figure("nopenalty_em_after", "nopenalty", "after", _mean("em")),
            Figure("em_known_after", "mash", "after", _subset_mean("em", True)),
            Figure("em_unknown_after", "mash", "after", _subset_mean("em", False)),
            Figure("abstain_precision", "mash", "after", _abstain("precision")),
            Figure("abstain_recall", "mash", "after", _abstain("recall")),
            Figure("nopenalty_abstain_precision", "nopenalty", "after", _abstain("precision")),
            Figure("nopenalty_abstain_recall", "nopenalty", "after", _abstain("recall")),
            Figure("abstain_precision_before", BASE, "before", _abstain("precision")),
            Figure("abstain_recall_before", BASE, "before", _abstain("recall")),
        ]
        self.effect = ("search_gap_after", "nopenalty_search_gap_after")

    # ------------------------------------------------------------------------------------------ recipe
    def recipe(self, arm: Arm, seed: int, ctx: Context, output_dir: Path):
        from posttrain.config import load_recipe

        data = ctx.state["data_dir"]
        flags = {
            "model.name_or_path": self.starting_model(ctx),
            "data.path": str(data / "train.jsonl"),
            "data.answer_field": "answers",
            "data.answer_format": "raw",
            "data.keep_columns": ["known", "kind"],
            "data.prompt_template": PROMPT,
            "method.name": "mash",
            "search.enabled": True,
            "search.retriever": str(data / "corpus.jsonl"),
            "search.cache_dir": str(data / "index"),
            "search.top_k": 1,
            "search.max_searches": 2,
            "search.max_turn_tokens": 48,
            "learning_rate": 1e-5,
            "lr_scheduler_type": "constant",
            "num_generations": 8,
            "per_device_train_batch_size": 16,
            "max_completion_length": MAX_TOKENS,
            "temperature": 0.7,
            "beta": 0.0,
            # MASH's entropy bonus (0.001) is off: on 2 cores it costs as much as the rest of the update.
            "entropy_coef": 0.0,
            **self.harness_flags(seed, ctx, output_dir),
            **ctx.extra,
            **arm.flags,
        }
        return load_recipe(None, flags)

    # ----------------------------------------------------------------------------------------- prepare
    def prepare(self, ctx: Context) -> None:
        from posttrain.data import DataConfig, load_datasets
        from posttrain.methods.mash.config import SearchConfig

        names = ("warm_examples", "warm_lr", "warm_share", "warm_epochs", "known_questions")
        options = {k: ctx.extra.pop(k) for k in names if k in ctx.extra}
        data = ctx.runs_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        ctx.state["data_dir"] = data
        known = self._known(ctx, data, options.get("known_questions"))
        rng = random.Random(0)
        knowable = [f for f in known if f["known"]]
        rng.shuffle(knowable)
        eval_known = min(EVAL_KNOWN, len(knowable) // 2)
        eval_invented = max(ctx.eval_size - eval_known, 1)  # the rest of the held-out questions
        train_known = knowable[eval_known:]
        n_invented = max(len(train_known), 8)  # as many as known ones (a model that knows nothing: a few)
        invented = [_row(f, known=False) for f in invented_facts(eval_invented + n_invented + 200, seed=0)]
        eval_rows = knowable[:eval_known] + invented[:eval_invented]
        train_rows = train_known + invented[eval_invented : eval_invented + n_invented]
        rng.shuffle(train_rows)
        warm_rows = train_rows + invented[eval_invented + n_invented :]
        facts = [f for f in known] + invented
        _write(
            data / "corpus.jsonl",
            [{"id": str(i), "title": "", "text": f["passage"]} for i, f in enumerate(facts)],
        )
        _write(data / "train.jsonl", train_rows)
        _write(data / "eval.jsonl", eval_rows)
        recipe = self.recipe(self.arms[0], 0, ctx, ctx.runs_dir / "prepare")
        eval_cfg = DataConfig(**{**recipe.data.__dict__, "path": str(data / "eval.jsonl")})
        ctx.state["eval_rows"] = [dict(r) for r in load_datasets(eval_cfg)[0]]
        ctx.state["search"] = SearchConfig(**recipe.search.__dict__)
        ctx.state["report"] = {
            "known_questions": len(knowable),
            "common_questions": len(known),
            "eval": {"known": eval_known, "invented": eval_invented},
            "train": {"known": len(train_known), "invented": n_invented},
        }
        warm_cfg = DataConfig(**{**recipe.data.__dict__, "path": str(data / "warm.jsonl")})
        _write(data / "warm.jsonl", warm_rows[: int(options.get("warm_examples", 300))])
        ctx.state["start_model"] = self._warm_start(
            ctx,
            recipe,
            warm_cfg,
            lr=float(options.get("warm_lr", 1e-4)),
            share=float(options.get("warm_share", 0.8)),
            epochs=float(options.get("warm_epochs", 2)),
        )

    def _known(self, ctx: Context, data: Path, limit) -> list[dict]:
        """Common facts with ``known`` decided by sampling the base model (cached in the data folder)."""
        from posttrain.evaluation import generate
        from posttrain.models import ModelConfig, load_model
        from posttrain.verify.qa import normalize_answer

        path = data / "known.json"
        if path.exists():
            return json.loads(path.read_text())
        facts = common_facts()[: int(limit)] if limit else common_facts()
        model, tokenizer = load_model(ModelConfig(name_or_path=ctx.model))
        import torch

        torch.manual_seed(0)
        prompts = [[{"role": "user", "content": f"{f.question} Answer in a few words."}] for f in facts]
        samples = generate(
            model, tokenizer, prompts, 16, KNOWN_SAMPLES, KNOWN_TEMPERATURE, 64, "what the base model knows"
        )

        def hit(text: str, golds) -> bool:  # the gold answer as whole words in the reply (a lenient judge)
            padded = f" {normalize_answer(text)} "
            return any(f" {normalize_answer(g)} " in padded for g in golds)

        rows = []
        for f, texts in zip(facts, samples):
            share = sum(hit(t, f.answers) for t in texts) / len(texts)
            rows.append({**_row(f, known=share >= KNOWN_AT), "known_share": share})
        path.write_text(json.dumps(rows))
        return rows

    def _warm_start(self, ctx: Context, recipe, warm_cfg, lr: float, share: float, epochs: float) -> str:
        from posttrain.data import load_datasets
        from posttrain.methods.mash.warmstart import warm_start, warm_start_examples
        from posttrain.models import load_model

        out = ctx.runs_dir / "warm"
        if (out / "config.json").exists():
            return str(out)
        base = recipe.model.__class__(**{**recipe.model.__dict__, "name_or_path": ctx.model})
        model, tokenizer = load_model(base)
        rows = [dict(r) for r in load_datasets(warm_cfg)[0]]
        for row in rows:
            row["answer"] = row["answers"][0] if isinstance(row.get("answers"), list) else row.get("answer")
        tool = recipe.search.make_tool()
        examples = warm_start_examples(
            rows,
            tool,
            tokenizer,
            top_k=recipe.search.top_k,
            seed=0,
            format_documents=recipe.search.formatter(),
        )
        warm_start(model, tokenizer, examples, str(out / "tmp"), epochs=1, learning_rate=lr)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        ctx.state["report"]["warm_start"] = {
            "examples": len(examples),
            "learning_rate": lr,
            "search_share": share,
            "epochs": epochs,
        }
        return str(out)

    # -------------------------------------------------------------------------------------- evaluation
    def evaluate(self, model, tokenizer, seed: int, ctx: Context) -> Records:
        from posttrain.methods.mash.evaluate import evaluate_search

        rows = ctx.state["eval_rows"]
        result = evaluate_search(
            model, tokenizer, rows, ctx.state["search"], MAX_TOKENS, batch_size=64, known_samples=0, seed=seed
        )
        preds = result.predictions
        return Records(
            columns={
                "known": [bool(r["known"]) for r in rows],
                "searches": [float(p["num_searches"]) for p in preds],
                "em": [float(p["exact_match"]) for p in preds],
                "abstained": [bool(p["abstained"]) for p in preds],
            },
            scalars={k: v for k, v in result.metrics.items() if isinstance(v, float)},
        )

    def train_scalars(self, output_dir: Path) -> dict[str, float]:
        rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
        searches = [r["search/searches_mean"] for r in rows if r.get("search/searches_mean") is not None]
        return {"train_searches_last10": sum(searches[-10:]) / len(searches[-10:])} if searches else {}


def _row(f, known: bool) -> dict:
    return {
        "question": f.question,
        "answers": list(f.answers),
        "kind": f.kind,
        "known": known,
        "passage": f.passage,
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
