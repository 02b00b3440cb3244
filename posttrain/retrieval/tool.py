"""The search tool as the multi-turn rollout loop sees it: one interface, three sources.

    tool = make_search_tool(None)                       # BM25 over the shipped SQuAD passages
    tool = make_search_tool("corpus.jsonl")             # BM25 over a corpus, in this process
    tool = make_search_tool("http://127.0.0.1:8001")    # a `posttrain retriever serve` server
    hits = tool.search(queries, k=3)                    # one list of Hit per query, batched
    trajectory += format_documents(hits[i])             # after the i-th rollout's </search>

An in-process index is simplest on one machine; a server keeps one copy of a large index for all the
ranks (and machines) of a launch. Both give the same hits for the same corpus.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from posttrain.retrieval import DEFAULT_CORPUS
from posttrain.retrieval.index import Hit

MAX_PASSAGE_CHARS = 1000
"""Characters of a passage inserted into a trajectory; longer ones are cut at a word and end in "...".
With k = 3 that bounds a search's documents to about 750 tokens. On the 10,565 SQuAD dev questions the
answer lies within the first 1,000 characters of its passage 97.7% of the time (86% for 600)."""

NO_RESULTS = "\n<document>(no results)</document>"
"""What a search with no hit inserts (an empty query, only stop words, only unknown words), so that
the policy sees its search was answered, rather than nothing (the same text as posttrain.rollout.tools)."""


@runtime_checkable
class SearchTool(Protocol):
    """What the rollout loop calls between rounds: one batched search per round."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The top ``k`` hits of each query, best first; an empty list for a query that matches nothing."""
        ...


def make_search_tool(
    source: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    *,
    stem: bool = False,
    retries: int = 3,
) -> SearchTool:
    """The search tool for ``source``: None (the shipped corpus), a JSONL corpus path, or a server URL.

    A corpus is indexed in this process (cached under ``cache_dir``, see
    :func:`~posttrain.retrieval.index.load_index`); a URL gives a
    :class:`~posttrain.retrieval.client.RetrievalClient` (it does not wait for the server: call its
    ``wait_until_ready`` where the run should wait).
    """
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        from posttrain.retrieval.client import RetrievalClient

        return RetrievalClient(source, retries=retries)
    from posttrain.retrieval.index import load_index

    return load_index(Path(source) if source is not None else DEFAULT_CORPUS, cache_dir=cache_dir, stem=stem)


def format_documents(hits: Sequence[Hit], max_chars: int = MAX_PASSAGE_CHARS) -> str:
    """The text appended to a trajectory after a search: one ``<document>`` block per hit, MASH's format.

    >>> format_documents([Hit("d1", "Paris", "Paris is the capital of France.", 7.5)])
    '\\n<document>(Title: Paris) Paris is the capital of France.</document>'
    >>> format_documents([])
    '\\n<document>(no results)</document>'
    """
    if not hits:
        return NO_RESULTS
    return "".join(f"\n<document>(Title: {hit.title}) {_cut(hit.text, max_chars)}</document>" for hit in hits)


def _cut(text: str, max_chars: int) -> str:
    text = " ".join(text.split())  # newlines inside a passage would read as structure in the trajectory
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut) + "..."
