"""Tests for posttrain.data: file formats, column mapping, answers, prompts, splits, generators, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain import data as data_mod
from posttrain.data import DataConfig, build_prompt, extract_hash_answer, load_datasets, parse_answer
from posttrain.errors import ConfigError, DataError
from posttrain.testing import make_tiny_tokenizer

# The repo ships GSM8K and MATH-500 (data/, with their licenses): tests read those, never files outside the repository.
DATA = Path(__file__).resolve().parents[1] / "data"
SCHEMA = ["prompt", "question", "answer", "verifier", "id"]
ROWS = [{"question": f"What is {i}+1?", "answer": str(i + 1), "extra": i} for i in range(10)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---------------------------------------------------------------------------------------------
# File formats


def _jsonl(tmp: Path) -> str:
    return write_jsonl(tmp / "d.jsonl", ROWS)


def _json_list(tmp: Path) -> str:
    (tmp / "d.json").write_text(json.dumps(ROWS, indent=2))
    return str(tmp / "d.json")


def _json_lines_in_json(tmp: Path) -> str:
    return write_jsonl(tmp / "d.json", ROWS)


def _parquet(tmp: Path) -> str:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp / "d.parquet")
    return str(tmp / "d.parquet")


def _folder_split(tmp: Path) -> str:
    # train files are picked by name; the test file must not leak into training.
    write_jsonl(tmp / "train-0.jsonl", ROWS[:4])
    pq.write_table(pa.Table.from_pylist(ROWS[4:]), tmp / "train-1.parquet")
    write_jsonl(tmp / "test.jsonl", [{"question": "held out?", "answer": "0"}])
    return str(tmp)


def _folder_plain(tmp: Path) -> str:
    # no split names: every file is read, in name order
    write_jsonl(tmp / "a.jsonl", ROWS[:5])
    write_jsonl(tmp / "b.jsonl", ROWS[5:])
    return str(tmp)


@pytest.mark.parametrize(
    "make",
    [_jsonl, _json_list, _json_lines_in_json, _parquet, _folder_split, _folder_plain],
    ids=["jsonl", "json-list", "json-lines-in-.json", "parquet", "folder-by-split", "folder-all-files"],
)
def test_local_formats_load_same_rows(tmp_path, make):
    train, eval_ = load_datasets(DataConfig(path=make(tmp_path)))
    assert eval_ is None
    assert train.column_names == SCHEMA  # source columns such as `extra` are dropped
    assert train["question"] == [r["question"] for r in ROWS]
    assert train["answer"] == [r["answer"] for r in ROWS]
    assert set(train["verifier"]) == {""}
    assert len(set(train["id"])) == len(ROWS)


def test_folder_eval_split(tmp_path):
    train, eval_ = load_datasets(DataConfig(path=_folder_split(tmp_path), eval_split="test"))
    assert len(train) == 10
    assert eval_["question"] == ["held out?"]


def test_fixture_file_and_default_ids(math_jsonl):
    train, _ = load_datasets(DataConfig(path=math_jsonl))
    assert len(train) == 12
    assert train["id"][:2] == ["math-0", "math-1"]


# ---------------------------------------------------------------------------------------------
# Column mapping and answers


def test_column_mapping_math500_style(tmp_path):
    rows = [{"prompt": "Solve $x+1=2$.", "answer": "1", "source": "math", "id": "test/algebra/1.json"}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows))
    train, _ = load_datasets(DataConfig(path=str(path), question_field="prompt", id_field="id"))
    assert train[0]["question"] == "Solve $x+1=2$."
    assert train[0]["id"] == "test/algebra/1.json"
    assert train.column_names == SCHEMA


def test_real_math500():
    train, _ = load_datasets(
        DataConfig(
            path=str(DATA / "math500" / "test.json"), question_field="prompt", id_field="id", max_samples=3
        )
    )
    assert len(train) == 3
    assert train[0]["answer"] == r"\left( 3, \frac{\pi}{2} \right)"  # LaTeX kept as is
    assert train[0]["id"].startswith("test/")


def test_unlabeled_data(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "q1"}, {"question": "q2"}])
    train, _ = load_datasets(DataConfig(path=path, answer_field=None))
    assert train["answer"] == [None, None]
    assert train.column_names == SCHEMA


@pytest.mark.parametrize(
    "value, fmt, expected",
    [
        ("Work...\n#### 1,234", "auto", "1234"),  # GSM8K: number after ####, thousands separators gone
        ("#### 72", "gsm8k", "72"),
        ("a\n#### 1,000,000.5", "auto", "1000000.5"),
        ("\\frac{1}{2}", "auto", "\\frac{1}{2}"),  # no marker: kept
        ("x #### 1,234", "raw", "x #### 1,234"),  # raw: untouched
        ("1, 2", "auto", "1, 2"),  # a comma between list items is not a thousands separator
        (72, "auto", "72"),  # numbers become strings
        (72.0, "auto", "72"),  # integral floats print without ".0"
        (1.5, "raw", "1.5"),
    ],
)
def test_parse_answer(value, fmt, expected):
    assert parse_answer(value, fmt) == expected


def test_extract_hash_answer_without_marker():
    assert extract_hash_answer("no marker") is None


def test_real_gsm8k_first_rows():
    train, _ = load_datasets(
        DataConfig(path=str(DATA / "gsm8k" / "train.jsonl"), answer_format="gsm8k", max_samples=4)
    )
    assert len(train) == 4
    assert train[0]["answer"] == "72"
    assert all(a.lstrip("-").replace(".", "").isdigit() for a in train["answer"])


def test_nq_list_answers(tmp_path):
    # NQ-open's layout (its dev set's first rows, Apache-2.0): `answer` is a list of accepted answers;
    # plus a scalar answer that must become a 1-list
    rows = [
        {
            "question": "when was the last time anyone was on the moon",
            "answer": ["14 December 1972 UTC", "December 1972"],
        },
        {
            "question": "who wrote he ain't heavy he's my brother lyrics",
            "answer": ["Bobby Scott", "Bob Russell"],
        },
        {
            "question": "how many seasons of the bastard executioner are there",
            "answer": ["one", "one season"],
        },
        {"question": "scalar?", "answer": "yes"},
    ]
    train, _ = load_datasets(DataConfig(path=write_jsonl(tmp_path / "nq.jsonl", rows)))
    assert train.column_names == [*SCHEMA, "answers"]
    assert train[0]["answers"] == ["14 December 1972 UTC", "December 1972"]
    assert train[0]["answer"] == "14 December 1972 UTC"
    assert train[3]["answers"] == ["yes"]


# ---------------------------------------------------------------------------------------------
# Prompts


def test_prompt_with_system_and_instruction():
    cfg = DataConfig(
        path="x.jsonl", system_prompt="You are terse.", instruction="Put your final answer in \\boxed{}."
    )
    assert build_prompt("What is 2+2?", cfg) == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?\n\nPut your final answer in \\boxed{}."},
    ]


def test_prompt_template():
    cfg = DataConfig(path="x.jsonl", prompt_template="Q: {question}\nAnswer in \\boxed{{}}.")
    assert build_prompt("2+2?", cfg) == [{"role": "user", "content": "Q: 2+2?\nAnswer in \\boxed{}."}]


def test_prompt_renders_with_chat_template(math_jsonl):
    train, _ = load_datasets(DataConfig(path=math_jsonl, system_prompt="Be brief.", instruction="Answer."))
    text = make_tiny_tokenizer().apply_chat_template(
        train[0]["prompt"], add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 0+0?\n\nAnswer.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------------------------------------
# Held-out splits


@pytest.mark.parametrize("eval_size, expected", [(3, 3), (0.25, 3), (0.01, 1)])  # 0.25*12 = 3; tiny >= 1
def test_eval_size_disjoint_and_deterministic(math_jsonl, eval_size, expected):
    train, eval_ = load_datasets(DataConfig(path=math_jsonl, eval_size=eval_size))
    assert len(eval_) == expected
    assert len(train) == 12 - expected
    assert not set(train["id"]) & set(eval_["id"])
    assert not set(train["question"]) & set(eval_["question"])
    again_train, again_eval = load_datasets(DataConfig(path=math_jsonl, eval_size=eval_size))
    assert again_eval["id"] == eval_["id"] and again_train["id"] == train["id"]


def test_eval_split_depends_on_seed_and_max_samples_caps_train(math_jsonl):
    _, eval0 = load_datasets(DataConfig(path=math_jsonl, eval_size=4, seed=0))
    _, eval1 = load_datasets(DataConfig(path=math_jsonl, eval_size=4, seed=1))
    assert eval0["id"] != eval1["id"]
    train, eval_ = load_datasets(DataConfig(path=math_jsonl, eval_size=4, max_samples=2))
    assert len(train) == 2 and len(eval_) == 4
    assert not set(train["id"]) & set(eval_["id"])


def test_eval_path(tmp_path, math_jsonl):
    eval_file = write_jsonl(tmp_path / "dev.jsonl", [{"question": "dev q", "answer": "#### 5"}])
    train, eval_ = load_datasets(DataConfig(path=math_jsonl, eval_path=eval_file, instruction="Go."))
    assert len(train) == 12
    assert eval_[0]["answer"] == "5"
    assert eval_[0]["prompt"][-1]["content"] == "dev q\n\nGo."  # same formatting as training rows


# ---------------------------------------------------------------------------------------------
# reasoning-gym generators


def test_generator_rows_and_verifier_round_trip():
    from reasoning_gym import get_score_answer_fn

    train, eval_ = load_datasets(DataConfig(generator="chain_sum", size=20, instruction="Answer only."))
    assert eval_ is None
    assert len(train) == 20
    assert train.column_names == SCHEMA
    assert train["id"][:2] == ["chain_sum-0", "chain_sum-1"]
    for row in train.select(range(5)):
        verifier = json.loads(row["verifier"])
        assert verifier["kind"] == "reasoning_gym" and verifier["generator"] == "chain_sum"
        entry = verifier["entry"]
        assert entry["question"] == row["question"] and entry["answer"] == row["answer"]
        assert row["prompt"][-1]["content"] == row["question"] + "\n\nAnswer only."
        score = get_score_answer_fn(entry["metadata"]["source_dataset"])
        assert score(row["answer"], entry) == 1.0


def test_generator_eval_disjoint_and_deterministic():
    cfg = dict(generator="chain_sum", size=20, seed=3, eval_size=8)
    train, eval_ = load_datasets(DataConfig(**cfg))
    assert len(eval_) == 8
    assert not set(train["question"]) & set(eval_["question"])
    assert not set(train["id"]) & set(eval_["id"])
    _, again = load_datasets(DataConfig(**cfg))
    assert again["question"] == eval_["question"]


def test_generator_eval_drops_train_questions():
    # Two one-digit terms give a small question space, so some held-out candidates repeat
    # training questions; they are skipped (gaps in the eval ids) and replaced by fresh ones.
    kwargs = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    train, eval_ = load_datasets(
        DataConfig(generator="chain_sum", size=100, eval_size=10, generator_kwargs=kwargs)
    )
    assert len(eval_) == 10
    assert not set(train["question"]) & set(eval_["question"])
    assert len(set(eval_["question"])) == len(eval_)
    assert eval_["id"] != [f"chain_sum-eval-{i}" for i in range(10)]  # some candidates were dropped


def test_plain_makes_entries_json_serialisable():
    entry = {"t": (1, 2), "s": {3, 1}, (0, 1): "tuple key", "n": None}
    assert json.loads(json.dumps(data_mod._plain(entry))) == {
        "t": [1, 2],
        "s": [1, 3],
        "(0, 1)": "tuple key",
        "n": None,
    }


# ---------------------------------------------------------------------------------------------
# Hugging Face names (never touch the network)


def test_hub_name_loads_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"question": "q", "answer": "a\n#### 3", "other": 1}])

    monkeypatch.setattr("posttrain.data_sources._hub_offline", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    train, _ = load_datasets(DataConfig(path="openai/gsm8k", name="main"))
    assert calls == [("openai/gsm8k", "main", "train")]
    assert train[0]["answer"] == "3" and train[0]["id"] == "openai/gsm8k:train-0"


def test_hub_name_offline_fails_fast(monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline mode is read at import time, so patch the constants as well as the environment.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DataError, match="offline.*local file.*generator"):
        load_datasets(DataConfig(path="no-such-org/no-such-dataset-xyz"))
    assert time.monotonic() - start < 5


def test_hub_unreachable_fails_before_load_dataset(monkeypatch):
    import datasets

    monkeypatch.setattr("posttrain.data_sources._hub_offline", lambda: False)
    monkeypatch.setattr("posttrain.data_sources._hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset was called"))
    with pytest.raises(DataError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        load_datasets(DataConfig(path="no-such-org/no-such-dataset-xyz"))


# ---------------------------------------------------------------------------------------------
# Errors: each names the problem and the fix


def _missing_file(tmp: Path) -> DataConfig:
    return DataConfig(path=str(tmp / "nope" / "train.jsonl"))


def _unknown_extension(tmp: Path) -> DataConfig:
    (tmp / "d.csv").write_text("question,answer\n1+1,2\n")
    return DataConfig(path=str(tmp / "d.csv"))


def _missing_question(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", [{"problem": "1+1", "answer": "2"}]))


def _missing_answer(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", [{"question": "1+1", "solution": "2"}]))


def _missing_id(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", ROWS), id_field="uid")


def _empty_file(tmp: Path) -> DataConfig:
    (tmp / "d.jsonl").write_text("\n")
    return DataConfig(path=str(tmp / "d.jsonl"))


def _empty_json_list(tmp: Path) -> DataConfig:
    (tmp / "d.json").write_text("[]")
    return DataConfig(path=str(tmp / "d.json"))


def _eval_too_large(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", ROWS), eval_size=10)


def _malformed_line(tmp: Path) -> DataConfig:
    (tmp / "d.jsonl").write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n')
    return DataConfig(path=str(tmp / "d.jsonl"))


def _gsm8k_without_marker(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", ROWS), answer_format="gsm8k")


def _null_answer(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", [{"question": "q", "answer": None}]))


def _single_object_json(tmp: Path) -> DataConfig:
    (tmp / "d.json").write_text(json.dumps({"version": 1, "data": ROWS}, indent=1))
    return DataConfig(path=str(tmp / "d.json"))


def _eval_split_of_single_file(tmp: Path) -> DataConfig:
    return DataConfig(path=write_jsonl(tmp / "d.jsonl", ROWS), eval_split="test")


def _folder_without_split(tmp: Path) -> DataConfig:
    write_jsonl(tmp / "test.jsonl", ROWS)
    return DataConfig(path=str(tmp))


def _unknown_generator(tmp: Path) -> DataConfig:
    return DataConfig(generator="chain_summ")


def _bad_generator_kwargs(tmp: Path) -> DataConfig:
    return DataConfig(generator="chain_sum", generator_kwargs={"no_such_option": 1})


@pytest.mark.parametrize(
    "make, pattern",
    [
        (_missing_file, r"no such file.*nope/train\.jsonl.*`org/name`"),
        (_unknown_extension, r"extension '\.csv'.*\.jsonl"),
        (_missing_question, r"no column 'question'.*\['problem', 'answer'\].*data\.question_field"),
        (_missing_answer, r"no column 'answer'.*\['question', 'solution'\].*data\.answer_field.*null"),
        (_missing_id, r"no column 'uid'.*data\.id_field"),
        (_empty_file, r"has no rows"),
        (_empty_json_list, r"has no rows"),
        (_eval_too_large, r"eval_size=10 .*only 10.*lower data\.eval_size"),
        (_malformed_line, r"d\.jsonl:2: malformed JSON line"),
        (_gsm8k_without_marker, r"row 0 .*no `####`.*answer_format: auto or raw"),
        (_null_answer, r"row 0 .*no value in column 'answer'.*answer_field: null"),
        (_single_object_json, r"one JSON object \(keys \['version', 'data'\]\)"),
        (_eval_split_of_single_file, r"single file and has no splits.*data\.eval_path"),
        (_folder_without_split, r"no file .* split 'train'.*data\.split"),
        (_unknown_generator, r"not a reasoning-gym task; did you mean \['chain_sum'"),
        (_bad_generator_kwargs, r"generator_kwargs .*not valid for 'chain_sum'.*min_terms"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_data_errors(tmp_path, make, pattern):
    with pytest.raises(DataError, match=pattern):
        load_datasets(make(tmp_path))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({}, "exactly one of data.path"),  # neither source
        ({"path": "a.jsonl", "generator": "chain_sum"}, "exactly one of data.path"),  # both
        ({"path": "a.jsonl", "answer_format": "latex"}, r"answer_format='latex'.*'auto'"),
        ({"path": "a.jsonl", "eval_size": 1.5}, r"fraction and must lie in \(0, 1\)"),
        ({"path": "a.jsonl", "eval_size": -1}, "must be >= 0"),
        ({"path": "a.jsonl", "eval_size": True}, "must be an int"),
        ({"path": "a.jsonl", "eval_size": 5, "eval_path": "b.jsonl"}, "set only one"),
        ({"generator": "chain_sum", "eval_split": "test"}, "needs data.eval_path"),
        ({"path": "a.jsonl", "max_samples": 0}, "max_samples=0"),
        ({"generator": "chain_sum", "size": 0}, "data.size=0"),
        ({"generator": "chain_sum", "generator_kwargs": {"seed": 1}}, r"use data\.size and data\.seed"),
        ({"path": "a.jsonl", "prompt_template": "no field"}, r"must contain `\{question\}`"),
        ({"path": "a.jsonl", "prompt_template": "{question} \\boxed{}"}, "braces must be doubled"),
        ({"path": "a.jsonl", "prompt_template": "{question}", "instruction": "x"}, "move data.instruction"),
    ],
)
def test_config_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        DataConfig(**kwargs)


def test_keep_columns_are_carried_and_checked(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text(
        '{"question": "q1", "answer": "1", "w": 0.5, "tag": "a"}\n{"question": "q2", "answer": "2", "w": 2}\n'
    )
    train, _ = load_datasets(DataConfig(path=str(path), keep_columns=["w", "tag"]))
    assert train["w"] == [0.5, 2.0] and train["tag"] == ["a", None]
    with pytest.raises(DataError, match=r"no column 'wt'.*data.keep_columns"):
        load_datasets(DataConfig(path=str(path), keep_columns=["wt"]))
