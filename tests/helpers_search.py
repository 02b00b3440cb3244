"""A fake search tool for tests: real ``Hit`` objects, every call recorded, no index."""

from __future__ import annotations

from posttrain.retrieval.index import Hit


class FakeTool:
    """Returns ``k`` copies of one passage per query (ids d0, d1, ...); ``calls`` holds each batch."""

    def __init__(self, title: str = "Paris", text: str = "Paris is the capital of France."):
        self.title, self.text = title, text
        self.calls: list[list[str]] = []

    def search(self, queries, k):
        self.calls.append(list(queries))
        return [[Hit(f"d{i}", self.title, self.text, 1.0) for i in range(k)] for _ in queries]
