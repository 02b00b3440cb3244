"""The search tool of pay-per-search training (MASH): a BM25 retriever, in-process or behind HTTP.

    from posttrain.retrieval.tool import make_search_tool, format_documents
    tool = make_search_tool(None)                        # BM25 over the shipped SQuAD passages
    tool = make_search_tool("wiki.jsonl")                # ... over your own {id, title, text} JSONL
    tool = make_search_tool("http://127.0.0.1:8001")     # ... served by `posttrain retriever serve`
    hits = tool.search(["who won super bowl 50"], k=3)   # one list of Hit per query
    text = format_documents(hits[0])                     # what the rollout inserts after </search>

The modules, one job each:

    corpus.py   read and validate a JSONL passage corpus
    index.py    the BM25 index (bm25s), its search, and the on-disk cache keyed by the corpus's hash
    server.py   `posttrain retriever serve`: the index behind FastAPI, concurrent requests micro-batched
    client.py   RetrievalClient: the HTTP side, with bounded retries
    tool.py     SearchTool (the interface the rollout loop uses), make_search_tool, format_documents

MASH itself retrieves with E5 + FAISS over wiki-18 (arXiv 2510.01152, top-k 3); BM25 needs no GPU and
no model download, and any retriever that returns :class:`~posttrain.retrieval.index.Hit` lists fits
the same :class:`~posttrain.retrieval.tool.SearchTool` interface.
"""

from __future__ import annotations

from pathlib import Path

from posttrain.errors import PosttrainError

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "squad"
"""The shipped SQuAD v1.1 dev data (CC BY-SA 4.0); see data/squad/README.md."""

DEFAULT_CORPUS = DATA_DIR / "corpus.jsonl"
"""The 2,067 Wikipedia paragraphs of SQuAD v1.1 dev: the corpus searched when no other is given."""

DEFAULT_QUESTIONS = DATA_DIR / "questions.jsonl"
"""1,000 SQuAD v1.1 dev questions ``{id, question, answers, gold_doc}`` answerable from DEFAULT_CORPUS."""


MAX_QUERIES_PER_REQUEST = 1024
"""Queries one POST /search may carry; :class:`~posttrain.retrieval.client.RetrievalClient` splits
larger batches into several requests."""

MAX_K = 100
"""Largest ``k`` the server accepts: a policy reads 3 to 5 passages, and the answer's size is k x batch."""


class RetrievalError(PosttrainError):
    """The retrieval server cannot be reached or keeps failing; the message says how to start it."""
