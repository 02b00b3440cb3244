"""The in-process search tool (posttrain/retrieval/corpus.py, index.py, tool.py) and the shipped data.

OMP_NUM_THREADS=1 pytest tests/test_retrieval.py -q            # a few seconds

A hand-made corpus checks the ranking and the query hygiene (empty, huge, unknown-word queries, k);
the cache is checked by building, reloading without a rebuild, and rebuilding after corruption; the
shipped SQuAD data must load and find its gold passages. Every test uses its own cache folder.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

from posttrain.errors import DataError
from posttrain.retrieval import DEFAULT_CORPUS, DEFAULT_QUESTIONS, tool
from posttrain.retrieval.corpus import Passage, read_corpus
from posttrain.retrieval.index import MAX_QUERY_WORDS, BM25Index, Hit, load_index
from posttrain.retrieval.tool import MAX_PASSAGE_CHARS, SearchTool, format_documents, make_search_tool

PASSAGES = [
    Passage("paris", "Paris", "Paris is the capital and largest city of France, on the river Seine."),
    Passage("berlin", "Berlin", "Berlin is the capital of Germany and its largest city by population."),
    Passage("nile", "Nile", "The Nile is a major north-flowing river in northeastern Africa."),
    Passage("python", "Python", "Python is a programming language that emphasises code readability."),
    Passage("everest", "", "Mount Everest is the highest mountain above sea level, in the Himalayas."),
]


@pytest.fixture(scope="module")
def tiny_index() -> BM25Index:
    return BM25Index.build(PASSAGES)


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _folders(cache: Path) -> list[Path]:
    """The index folders of a cache (not its lock files)."""
    return [p for p in cache.iterdir() if p.is_dir()]


def _ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


# ----------------------------------------------------------------------------- corpus


def test_corpus_reads_rows_and_optional_title(tmp_path):
    path = _write(tmp_path / "c.jsonl", [{"id": "a", "title": "T", "text": "x"}, "", {"id": 7, "text": "y"}])
    passages, digest = read_corpus(path)
    assert passages == [Passage("a", "T", "x"), Passage("7", "", "y")]  # blank line skipped, int id kept
    assert len(digest) == 64


def test_corpus_reads_flashrag_contents(tmp_path):
    # wiki-18 as Search-R1 / FlashRAG ship it: the quoted title on the first line of `contents`.
    path = _write(tmp_path / "w.jsonl", [{"id": "0", "contents": '"Aaron"\nAaron is a prophet.'}])
    assert read_corpus(path)[0] == [Passage("0", "Aaron", "Aaron is a prophet.")]


@pytest.mark.parametrize(
    "rows, message",
    [
        # no passages at all
        ([], "holds no passages"),
        # line 2 is not JSON: the line number is in the message
        ([{"id": "a", "text": "x"}, "{not json"], r"c.jsonl:2: the line is not valid JSON"),
        # a JSON value that is not an object
        (["[1, 2]"], "expected a JSON object"),
        # no text
        ([{"id": "a", "title": "T"}], r"c.jsonl:1: the row has no 'text'"),
        # no id
        ([{"text": "x"}], r"the row has no 'id'"),
        # the same id twice: both lines named
        ([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}], "line 1"),
        # a text that is not a string
        ([{"id": "a", "text": 3}], "must be strings"),
    ],
)
def test_corpus_errors_name_the_problem(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_corpus(_write(tmp_path / "c.jsonl", rows))


def test_corpus_without_a_word_to_index(tmp_path):
    with pytest.raises(DataError, match="None of the 2 passages holds a word"):
        BM25Index.build([Passage("a", "", ""), Passage("b", "", "the of ...")])


def test_missing_corpus_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="does not exist.*http"):
        read_corpus(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- index


@pytest.mark.parametrize(
    "query, best",
    [
        ("capital of France", "paris"),
        ("Germany largest city", "berlin"),
        ("which river flows north in Africa", "nile"),
        ("programming language readability", "python"),
        ("HIGHEST MOUNTAIN", "everest"),  # case does not matter
        ("Himalayas", "everest"),
    ],
)
def test_right_passage_ranks_first(tiny_index, query, best):
    hits = tiny_index.search([query], k=3)[0]
    assert hits[0].id == best
    assert all(a.score >= b.score > 0 for a, b in zip(hits, hits[1:]))


def test_hit_fields_and_dict(tiny_index):
    hit = tiny_index.search(["Seine"], k=1)[0][0]
    assert hit.to_dict() == {"id": "paris", "title": "Paris", "text": PASSAGES[0].text, "score": hit.score}
    assert Hit.from_dict(hit.to_dict()) == hit


def test_batch_equals_one_by_one():
    passages, _ = read_corpus(DEFAULT_CORPUS)
    index = BM25Index.build(passages)
    questions = [json.loads(line)["question"] for line in DEFAULT_QUESTIONS.read_text().splitlines()[:64]]
    questions += ["", "the of and"]
    assert index.search(questions, 5) == [index.search([q], 5)[0] for q in questions]


def test_scores_equal_bm25s_own(tiny_index):
    # The index sums the rows of bm25s's score matrix itself (sparse); it must agree with bm25s.
    import bm25s  # here, after posttrain.retrieval.index chose its backend (it avoids numba)

    query = "capital city of the river"
    tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    full = tiny_index.retriever.get_scores(tokens)
    hits = tiny_index.search([query], k=len(PASSAGES))[0]
    assert {h.id: h.score for h in hits} == pytest.approx(
        {p.id: float(s) for p, s in zip(PASSAGES, full) if s > 0}, rel=1e-5
    )


@pytest.mark.parametrize(
    "query",
    [
        "",  # what a policy sends with <search></search>
        "   \n\t ",
        "the of and is",  # only stop words
        "zyxwv qwxz",  # only words the corpus never uses
        "!!! ???",  # no word at all
    ],
)
def test_query_without_indexed_words_has_no_hits(tiny_index, query):
    assert tiny_index.search([query], k=3) == [[]]


def test_very_long_query_is_capped_and_fast(tiny_index):
    import time

    filler = " ".join(["zyxwv"] * MAX_QUERY_WORDS)
    start = time.perf_counter()
    # 10,000+ characters: the useful words past the cap are ignored, those before it are searched.
    assert tiny_index.search([filler + " Germany"], k=3) == [[]]
    assert _ids(tiny_index.search(["Germany " + filler], k=1)[0]) == ["berlin"]
    assert _ids(tiny_index.search(["Nile " * 5000], k=1)[0]) == ["nile"]
    assert tiny_index.search(["x" * 10_000], k=1) == [[]]  # one 10,000-letter word
    assert time.perf_counter() - start < 1.0


def test_k_handling(tiny_index):
    assert len(tiny_index.search(["capital"], k=1)[0]) == 1
    # More than the corpus holds: every matching passage, no error.
    assert sorted(_ids(tiny_index.search(["is"], k=50)[0])) == []  # "is" is a stop word
    everything = tiny_index.search(["capital river mountain language"], k=50)[0]
    assert sorted(_ids(everything)) == sorted(p.id for p in PASSAGES)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            tiny_index.search(["capital"], k=bad)
    with pytest.raises(TypeError, match="list of strings"):
        tiny_index.search("capital", k=1)
    assert tiny_index.search([], k=3) == []


def test_top_k_is_a_prefix_of_a_larger_k():
    # Equal scores are ordered by corpus position, so a search with k=5 cut to 3 equals one with k=3:
    # the server relies on it to answer mixed k from one search.
    twins = [Passage(str(i), "", "same words here") for i in range(6)]
    index = BM25Index.build(twins)
    assert _ids(index.search(["words"], 3)[0]) == ["0", "1", "2"]
    assert index.search(["words"], 5)[0][:3] == index.search(["words"], 3)[0]


# ----------------------------------------------------------------------------- cache


def test_cache_is_built_once_then_reloaded(tmp_path, monkeypatch):
    corpus = _write(tmp_path / "c.jsonl", [p.__dict__ for p in PASSAGES])
    cache = tmp_path / "cache"
    first = load_index(corpus, cache_dir=cache)
    [folder] = _folders(cache)
    assert (folder / "meta.json").is_file() and not list(cache.glob(".*tmp*"))

    def no_build(*args, **kwargs):
        raise AssertionError("the cached index was rebuilt")

    monkeypatch.setattr(BM25Index, "build", no_build)
    again = load_index(corpus, cache_dir=cache)
    query = ["capital city river"]
    assert again.search(query, 5) == first.search(query, 5)


def test_cache_follows_the_env_and_the_corpus_content(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "pt"))
    corpus = _write(tmp_path / "c.jsonl", [p.__dict__ for p in PASSAGES])
    load_index(corpus)
    assert len(_folders(tmp_path / "pt" / "retrieval")) == 1
    # An edited corpus gets a folder of its own: never a stale index.
    _write(corpus, [p.__dict__ for p in PASSAGES[:3]])
    assert len(load_index(corpus)) == 3
    assert len(_folders(tmp_path / "pt" / "retrieval")) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "meta.json").unlink(),  # an interrupted copy by hand
        lambda folder: (folder / "meta.json").write_text("{"),
        lambda folder: (folder / "bm25" / "indptr.csc.index.npy").write_bytes(b"\x93NUMPY garbage"),
        lambda folder: (folder / "bm25" / "vocab.index.json").unlink(),
    ],
)
def test_corrupted_cache_is_rebuilt(tmp_path, damage, caplog):
    corpus = _write(tmp_path / "c.jsonl", [p.__dict__ for p in PASSAGES])
    cache = tmp_path / "cache"
    want = load_index(corpus, cache_dir=cache).search(["capital of Germany"], 2)
    [folder] = _folders(cache)
    damage(folder)
    assert load_index(corpus, cache_dir=cache).search(["capital of Germany"], 2) == want
    assert "rebuilding" in caplog.text
    caplog.clear()
    load_index(corpus, cache_dir=cache)  # and the rebuilt folder is good again
    assert "rebuilding" not in caplog.text


# ----------------------------------------------------------------------------- the tool


def test_make_search_tool_sources(tmp_path):
    corpus = _write(tmp_path / "c.jsonl", [p.__dict__ for p in PASSAGES])
    local = make_search_tool(str(corpus), cache_dir=tmp_path / "cache")
    assert isinstance(local, SearchTool) and len(local) == len(PASSAGES)
    remote = make_search_tool("http://127.0.0.1:1")  # not contacted until a search
    assert isinstance(remote, SearchTool) and remote.url == "http://127.0.0.1:1"
    with pytest.raises(DataError, match="does not exist"):
        make_search_tool(str(tmp_path / "missing.jsonl"), cache_dir=tmp_path / "cache")


def test_format_documents_wraps_each_hit():
    hits = [Hit("a", "T1", "first\npassage", 2.0), Hit("b", "", "x " * 2000, 1.0)]
    text = format_documents(hits)
    blocks = text.split("\n<document>")[1:]
    assert text.startswith("\n<document>(Title: T1) first passage</document>")
    assert len(blocks) == 2 and all(b.endswith("</document>") for b in blocks)
    assert blocks[1].endswith("...</document>") and len(blocks[1]) < MAX_PASSAGE_CHARS + 40
    assert format_documents([]) == tool.NO_RESULTS


def test_tool_docstring_examples():
    assert doctest.testmod(tool).failed == 0


# ----------------------------------------------------------------------------- shipped data


def test_shipped_data_finds_gold_passages(tmp_path):
    index = make_search_tool(None, cache_dir=tmp_path)
    assert len(index) == 2067
    assert (DEFAULT_CORPUS.parent / "LICENSE").read_text().count("CC BY-SA 4.0") >= 1
    rows = [json.loads(line) for line in DEFAULT_QUESTIONS.read_text().splitlines()]
    assert len(rows) == 1000 and len({r["gold_doc"] for r in rows}) == 1000
    hits = index.search([r["question"] for r in rows], k=5)
    found = np.mean([r["gold_doc"] in _ids(h) for r, h in zip(rows, hits)])
    assert found > 0.88  # 0.894 measured (data/squad/README.md)
    # The first questions of the file, each found in the top 5.
    for row, row_hits in list(zip(rows, hits))[:5]:
        assert row["gold_doc"] in _ids(row_hits), row["question"]
