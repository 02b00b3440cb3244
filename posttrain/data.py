"""Load a prompt data set for GRPO: local files, a Hugging Face data set, or a reasoning-gym task.

Every source comes out in one row schema, so batches are uniform and reward functions receive the
same keyword arguments whatever the data was:

    prompt    list of chat messages ([system?], user); TRL applies the model's chat template
    question  the raw question text
    answer    the reference answer as a string (None for unlabeled data)
    verifier  "" or, for reasoning-gym rows, JSON {"kind": "reasoning_gym", "generator", "entry"}
    id        the source's id column, else "<source>-<index>"
    answers   (only when the source answers were lists, e.g. NQ-open) every accepted answer

A recipe's ``data:`` block maps onto :class:`DataConfig`:

    data:
      path: data/gsm8k/train.jsonl               # or openai/gsm8k, or a folder of .jsonl/.parquet
      instruction: "Put your final answer in \\boxed{}."
      eval_size: 200                             # held out, disjoint from the training rows

    data:
      generator: chain_sum                       # a reasoning-gym task, generated on the fly
      size: 2000
      eval_size: 100

In Python: ``train, eval_ = load_datasets(DataConfig(path="train.jsonl"))``.
"""

from __future__ import annotations

import difflib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

import datasets

from posttrain.data_sources import FILE_SUFFIXES as FILE_SUFFIXES  # re-exported: part of this module's API
from posttrain.data_sources import Table, load_table
from posttrain.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ANSWER_FORMATS = ("auto", "gsm8k", "raw")
SCHEMA_COLUMNS = ("prompt", "question", "answer", "verifier", "id", "answers")
# Held-out generator rows use a seed far from the training seed so the two streams don't overlap.
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class DataConfig:
    """Where the prompts come from and how they are turned into chat messages."""

    path: str | None = None
    """A local `.jsonl`, `.json` (a JSON list or JSON lines) or `.parquet` file, a folder of such
    files, or a Hugging Face data set name such as `openai/gsm8k`."""

    name: str | None = None
    """Hugging Face data set configuration name (e.g. `main` for `openai/gsm8k`)."""

    split: str = "train"
    """Split to train on: a Hugging Face split, or in a folder the files whose name starts with it."""

    generator: str | None = None
    """A reasoning-gym procedural task (`chain_sum`, `basic_arithmetic`, ...) instead of `path`."""

    generator_kwargs: dict = field(default_factory=dict)
    """Task options passed to `reasoning_gym.create_dataset(generator, size=, seed=, **kwargs)`."""

    size: int = 1000
    """Number of training rows a generator produces."""

    seed: int = 0
    """Seed of the generator and of the held-out split."""

    question_field: str = "question"
    """Column holding the question (`prompt` for MATH-500)."""

    answer_field: str | None = "answer"
    """Column holding the reference answer; null for unlabeled data (test-time RL)."""

    id_field: str | None = None
    """Column holding a row id; without it ids are `<source>-<row index>`."""

    keep_columns: list[str] = field(default_factory=list)
    """Source columns carried unchanged into every row, where reward plugins and hooks read them
    (e.g. `sample_weight`, see method.sample_weight). Files and Hugging Face data only."""

    answer_format: str = "auto"
    """`auto`: the number after `####` if present, else the answer as is; `gsm8k`: require `####`;
    `raw`: keep the answer unchanged."""

    system_prompt: str | None = None
    """Optional system message placed before every question."""

    instruction: str | None = None
    """Text appended to the question after a blank line, e.g. `Put your final answer in \\boxed{}.`"""

    prompt_template: str | None = None
    """Python format string with `{question}` used as the user message instead of question +
    instruction. Literal braces must be doubled: `\\boxed{{}}`."""

    eval_size: int | float = 0
    """Rows held out for evaluation: an int is a count, a float in (0, 1) a fraction. Taken
    deterministically with `seed`, disjoint from training rows."""

    eval_path: str | None = None
    """Separate evaluation data (same formats as `path`) instead of holding rows out."""

    eval_split: str | None = None
    """Split to evaluate on: from `eval_path` if set, else from `path` (default `test` with `eval_path`)."""

    max_samples: int | None = None
    """Cap on the number of training rows (after the held-out rows are removed)."""

    def __post_init__(self) -> None:
        if (self.path is None) == (self.generator is None):
            raise ConfigError(
                "data: set exactly one of data.path (a file, folder or Hugging Face name) and "
                f"data.generator (a reasoning-gym task); got path={self.path!r}, generator={self.generator!r}."
            )
        if self.answer_format not in ANSWER_FORMATS:
            raise ConfigError(
                f"data.answer_format={self.answer_format!r} is not valid; use one of {list(ANSWER_FORMATS)}."
            )
        if not self.question_field:
            raise ConfigError("data.question_field is empty; set it to the column holding the question.")
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"data.size={self.size!r} must be a positive integer.")
        if not isinstance(self.generator_kwargs, dict):
            raise ConfigError(
                f"data.generator_kwargs must be a mapping of task options, got {self.generator_kwargs!r}."
            )
        clash = {"size", "seed"} & set(self.generator_kwargs)
        if clash:
            raise ConfigError(
                f"data.generator_kwargs sets {sorted(clash)}; use data.size and data.seed instead."
            )
        self._check_eval()
        self._check_keep_columns()
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ConfigError(f"data.max_samples={self.max_samples!r} must be a positive integer or null.")
        self._check_template()

    def _check_eval(self) -> None:
        size = self.eval_size
        if isinstance(size, bool) or not isinstance(size, int | float):
            raise ConfigError(f"data.eval_size={size!r} must be an int (rows) or a float in (0, 1).")
        if isinstance(size, float) and not 0 < size < 1:
            raise ConfigError(
                f"data.eval_size={size!r}: a float is a fraction and must lie in (0, 1); "
                "use an int for a number of rows."
            )
        if size < 0:
            raise ConfigError(f"data.eval_size={size!r} must be >= 0.")
        if size and (self.eval_path or self.eval_split):
            raise ConfigError(
                "data.eval_size holds rows out of the training data, and data.eval_path/eval_split name "
                "separate evaluation data; set only one of them."
            )
        if self.eval_split and self.generator and not self.eval_path:
            raise ConfigError(
                "data.eval_split needs data.eval_path with a generator; use data.eval_size to generate "
                "held-out rows instead."
            )

    def _check_keep_columns(self) -> None:
        cols = self.keep_columns
        if not isinstance(cols, list) or not all(isinstance(c, str) and c for c in cols):
            raise ConfigError(f"data.keep_columns must be a list of column names, got {cols!r}.")
        clash = sorted(set(cols) & set(SCHEMA_COLUMNS))
        if clash:
            raise ConfigError(
                f"data.keep_columns lists {clash}, which every row already has (the posttrain schema: "
                f"{', '.join(SCHEMA_COLUMNS)}); remove them."
            )
        if cols and self.generator:
            raise ConfigError(
                f"data.keep_columns ({cols}) applies to files and Hugging Face data; reasoning-gym rows "
                "have no extra columns. Remove it, or save the generated rows to a file first."
            )

    def _check_template(self) -> None:
        if self.prompt_template is None:
            return
        if self.instruction:
            raise ConfigError(
                "data.prompt_template replaces question + instruction; move data.instruction into the "
                "template and remove it."
            )
        if "{question}" not in self.prompt_template:
            raise ConfigError("data.prompt_template must contain `{question}` where the question goes.")
        try:
            self.prompt_template.format(question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"data.prompt_template cannot be formatted ({exc!r}); the only field is {{question}}, "
                "and literal braces must be doubled, e.g. \\boxed{{}}."
            ) from exc


# ---------------------------------------------------------------------------------------------
# Row formatting


def build_prompt(question: str, cfg: DataConfig) -> list[dict[str, str]]:
    """The conversational prompt for one question: an optional system message, then the user turn.

    >>> build_prompt("1+1?", DataConfig(path="x.jsonl", instruction="Answer with a number."))
    [{'role': 'user', 'content': '1+1?\\n\\nAnswer with a number.'}]
    """
    if cfg.prompt_template is not None:
        content = cfg.prompt_template.format(question=question)
    elif cfg.instruction:
        content = f"{question}\n\n{cfg.instruction}"
    else:
        content = question
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    messages.append({"role": "user", "content": content})
    return messages


def extract_hash_answer(text: str) -> str | None:
    """The final answer after the last `####` (GSM8K style), thousands separators removed.

    >>> extract_hash_answer("48/2 = 24\\n#### 1,234")
    '1234'
    """
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    return re.sub(r"(?<=\d),(?=\d)", "", tail)


def parse_answer(value: Any, answer_format: str) -> str:
    """One reference answer as a string, following `answer_format` (see :class:`DataConfig`)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 72.0 -> "72", so numeric answers compare as written
    text = value if isinstance(value, str) else str(value)
    if answer_format == "raw":
        return text
    extracted = extract_hash_answer(text)
    if extracted is None and answer_format == "gsm8k":
        raise ValueError("has no `####` final-answer marker")
    return text if extracted is None else extracted


def _format_answer(raw: Any, cfg: DataConfig, where: str) -> tuple[str | None, list[str] | None]:
    """(answer, answers): the first accepted answer, plus all of them when the source had a list."""
    if cfg.answer_field is None:
        return None, None
    if raw is None:
        raise DataError(
            f"{where} has no value in column '{cfg.answer_field}'; fix the row, or set "
            "data.answer_field: null if the data set is unlabeled."
        )
    values = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not values:
        raise DataError(f"{where} has an empty answer list in column '{cfg.answer_field}'; fix the row.")
    try:
        parsed = [parse_answer(v, cfg.answer_format) for v in values]
    except ValueError as exc:
        raise DataError(
            f"{where}: answer {str(raw)[-80:]!r} {exc}; use data.answer_format: auto or raw for answers "
            "that are not GSM8K-style worked solutions."
        ) from exc
    return parsed[0], (parsed if isinstance(raw, list | tuple) else None)


def format_row(raw: dict, index: int, source: str, cfg: DataConfig) -> dict[str, Any]:
    """Turn one source row into the posttrain row schema (see the module docstring)."""
    where = f"row {index} of {source}"
    question = raw.get(cfg.question_field)
    if question is None or (isinstance(question, str) and not question.strip()):
        raise DataError(f"{where} has an empty '{cfg.question_field}'; fix or remove the row.")
    question = question if isinstance(question, str) else str(question)
    answer, answers = _format_answer(raw.get(cfg.answer_field) if cfg.answer_field else None, cfg, where)
    row_id = raw.get(cfg.id_field) if cfg.id_field else None
    return {
        "prompt": build_prompt(question, cfg),
        "question": question,
        "answer": answer,
        "verifier": "",
        "id": str(row_id) if row_id is not None else f"{source}-{index}",
        "answers": answers,
        **{column: raw.get(column) for column in cfg.keep_columns},
    }


def _to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows in the fixed schema; `answers` is kept only when some source answer was a list."""
    has_lists = any(r["answers"] is not None for r in rows)
    features = {
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "verifier": datasets.Value("string"),
        "id": datasets.Value("string"),
    }
    if has_lists:
        features["answers"] = datasets.List(datasets.Value("string"))
        for r in rows:
            if r["answers"] is None:
                r["answers"] = [] if r["answer"] is None else [r["answer"]]
    else:
        for r in rows:
            del r["answers"]
    extra = [k for k in rows[0] if k not in features and k != "answers"]
    if extra:  # data.keep_columns: their types come from the values
        inferred = datasets.Dataset.from_list([{k: r[k] for k in extra} for r in rows]).features
        features.update(inferred)
    return datasets.Dataset.from_list(rows, features=datasets.Features(features))


# ---------------------------------------------------------------------------------------------
# Source tables (read by posttrain.data_sources): column checks and the held-out split


def _check_table(table: Table, cfg: DataConfig, key: str) -> None:
    if table.num_rows == 0:
        raise DataError(f"{key}: {table.source} has no rows; point it at a non-empty data set.")
    wanted = [
        ("data.question_field", cfg.question_field, "question", ""),
        ("data.answer_field", cfg.answer_field, "reference answer", ", or null for unlabeled data"),
        ("data.id_field", cfg.id_field, "row id", ", or null to number the rows"),
        *[
            ("data.keep_columns", c, "values to carry", ", or remove it from the list")
            for c in cfg.keep_columns
        ],
    ]
    for recipe_key, column, what, alt in wanted:
        if column and column not in table.columns:
            close = difflib.get_close_matches(column, table.columns, n=1)
            hint = f" (perhaps {close[0]!r}?)" if close else ""
            raise DataError(
                f"{key}: {table.source} has no column {column!r}; its columns are {table.columns}. Set "
                f"{recipe_key} to the column holding the {what}{hint}{alt}."
            )


def _held_out_count(eval_size: int | float, num_rows: int, source: str) -> int:
    count = eval_size if isinstance(eval_size, int) else max(1, round(eval_size * num_rows))
    if count >= num_rows:
        raise DataError(
            f"data.eval_size={eval_size} holds out {count} rows but {source} has only {num_rows}; lower "
            "data.eval_size so that at least one training row remains."
        )
    return count


def split_indices(num_rows: int, eval_count: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) row indices: `eval_count` rows drawn with `seed`, both lists in source order."""
    order = list(range(num_rows))
    random.Random(seed).shuffle(order)
    return sorted(order[eval_count:]), sorted(order[:eval_count])


def _format_table(table: Table, indices: list[int], cfg: DataConfig) -> list[dict[str, Any]]:
    return [format_row(raw, i, table.source, cfg) for i, raw in zip(indices, table.take(indices))]


# ---------------------------------------------------------------------------------------------
# reasoning-gym generators


def _plain(obj: Any) -> Any:
    """A JSON-serialisable copy of a reasoning-gym entry (tuples -> lists, sets -> sorted lists)."""
    if obj is None or isinstance(obj, str | bool | int | float):
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, str | int | float | bool) else str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_plain(v) for v in obj), key=repr)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _plain(obj.tolist())
    return str(obj)


def _rg_dataset(cfg: DataConfig, size: int, seed: int):
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    name = cfg.generator
    if name not in DATASETS:
        close = difflib.get_close_matches(name, sorted(DATASETS), n=5, cutoff=0.5)
        hint = f"did you mean {close}? " if close else ""
        raise DataError(
            f"data.generator: {name!r} is not a reasoning-gym task; {hint}"
            f"{len(DATASETS)} tasks exist, e.g. {sorted(DATASETS)[:8]}."
        )
    try:
        return reasoning_gym.create_dataset(name, size=size, seed=seed, **cfg.generator_kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        options = sorted(getattr(DATASETS[name][1], "__dataclass_fields__", {}))
        raise DataError(
            f"data.generator_kwargs {cfg.generator_kwargs} are not valid for {name!r} ({exc}); its options "
            f"are {options}."
        ) from exc


def _rg_row(entry: dict, index: int, source: str, cfg: DataConfig) -> dict[str, Any]:
    answer = entry.get("answer")
    verifier = {"kind": "reasoning_gym", "generator": cfg.generator, "entry": _plain(entry)}
    return {
        "prompt": build_prompt(entry["question"], cfg),
        "question": entry["question"],
        "answer": None if answer is None else str(answer),
        "verifier": json.dumps(verifier),
        "id": f"{source}-{index}",
        "answers": None,
    }


def _generator_rows(cfg: DataConfig) -> tuple[list[dict], list[dict] | None]:
    """Training rows (seed) and held-out rows (seed + EVAL_SEED_OFFSET, no question shared with
    training)."""
    num_train = min(cfg.size, cfg.max_samples or cfg.size)
    train_ds = _rg_dataset(cfg, cfg.size, cfg.seed)
    train = [_rg_row(train_ds[i], i, cfg.generator, cfg) for i in range(num_train)]
    if not cfg.eval_size:
        return train, None
    want = cfg.eval_size if isinstance(cfg.eval_size, int) else max(1, round(cfg.eval_size * cfg.size))
    seen = {row["question"] for row in train}
    # Entries are generated lazily on indexing, so a generous virtual size costs nothing.
    eval_ds = _rg_dataset(cfg, 4 * want + 64, cfg.seed + EVAL_SEED_OFFSET)
    held_out = []
    for i in range(len(eval_ds)):
        entry = eval_ds[i]
        if entry["question"] in seen:
            continue
        seen.add(entry["question"])
        held_out.append(_rg_row(entry, i, f"{cfg.generator}-eval", cfg))
        if len(held_out) == want:
            break
    if not held_out:
        raise DataError(
            f"data.eval_size: every generated {cfg.generator!r} question already appears in the training "
            "set; the task has too few distinct questions. Lower data.size or widen data.generator_kwargs."
        )
    if len(held_out) < want:
        logger.warning(
            "Only %d of %d held-out %s questions differ from the training ones; the task's question "
            "space is small.",
            len(held_out),
            want,
            cfg.generator,
        )
    return train, held_out


# ---------------------------------------------------------------------------------------------
# Entry point


def load_datasets(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(train, eval) data sets in the posttrain row schema; eval is None when none was asked for."""
    if cfg.generator:
        train_rows, eval_rows = _generator_rows(cfg)
    else:
        table = load_table(cfg.path, cfg.name, cfg.split, "data.path")
        _check_table(table, cfg, "data.path")
        train_idx, eval_idx = list(range(table.num_rows)), None
        if cfg.eval_size:
            count = _held_out_count(cfg.eval_size, table.num_rows, table.source)
            train_idx, eval_idx = split_indices(table.num_rows, count, cfg.seed)
        train_rows = _format_table(table, train_idx[: cfg.max_samples], cfg)
        eval_rows = _format_table(table, eval_idx, cfg) if eval_idx else None
        if cfg.eval_split and not cfg.eval_path:
            eval_table = load_table(
                cfg.path, cfg.name, cfg.eval_split, "data.eval_split", split_required=True
            )
            _check_table(eval_table, cfg, "data.eval_split")
            eval_rows = _format_table(eval_table, list(range(eval_table.num_rows)), cfg)
    if cfg.eval_path:
        # data.name is a configuration of data.path; it applies to eval_path only when they match.
        config_name = cfg.name if cfg.eval_path == cfg.path else None
        eval_table = load_table(cfg.eval_path, config_name, cfg.eval_split or "test", "data.eval_path")
        _check_table(eval_table, cfg, "data.eval_path")
        eval_rows = _format_table(eval_table, list(range(eval_table.num_rows)), cfg)
    if not train_rows:
        raise DataError("data: no training rows remain after loading; check data.path and data.max_samples.")
    train = _to_dataset(train_rows)
    eval_ = _to_dataset(eval_rows) if eval_rows else None
    logger.info(
        "Loaded %d training rows and %d evaluation rows from %s.",
        len(train),
        0 if eval_ is None else len(eval_),
        cfg.path or f"reasoning-gym:{cfg.generator}",
    )
    return train, eval_
