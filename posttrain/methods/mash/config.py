"""The recipe's ``search:`` section: the multi-turn search tool loop of pay-per-search training (MASH).

search:
  enabled: true                       # generate with the tool loop (posttrain/rollout/tools.py)
  retriever: null                     # null: BM25 over the shipped SQuAD passages; a .jsonl corpus;
                                      # or http://host:port of `posttrain retriever serve`
  top_k: 3                            # MASH: 3 passages per search
  max_searches: 5                     # MASH: 5; a request beyond it gets a warning instead of results
  max_turn_tokens: 512                # MASH: 512 new tokens per turn
"""

from __future__ import annotations

from dataclasses import dataclass

from posttrain.errors import ConfigError


@dataclass
class SearchConfig:
    """Whether rollouts use the search tool, which retriever answers it, and the loop's limits."""

    enabled: bool = False
    """Generate with the search tool loop: ``<search>q</search>`` -> ``<document>`` results (masked
    from the loss) -> resume, until ``<answer>``. Needed by ``method: mash`` / ``pay_per_search``. A data
    section without ``prompt_template`` or ``instruction`` then gets
    :data:`posttrain.rollout.tools.SEARCH_PROMPT` (how to think, search and answer)."""
    retriever: str | None = None
    """null: BM25 over the shipped SQuAD v1.1 dev passages; the path of a ``{id, title, text}`` JSONL
    corpus (indexed once, cached); or the URL of a ``posttrain retriever serve`` process."""
    top_k: int = 3
    """Passages inserted per search (MASH: 3)."""
    max_searches: int = 5
    """Searches answered per trajectory (MASH: 5); later requests get ``SEARCH LIMIT REACHED``."""
    max_turn_tokens: int = 512
    """Most new tokens the model writes between two tool calls (MASH: 512)."""
    max_doc_chars: int = 1000
    """Cut each inserted passage to this many characters, at a word (on SQuAD the answer lies in the
    first 1,000 characters of its passage 97.7% of the time)."""
    cache_dir: str | None = None
    """Where the BM25 index is cached (default ``~/.cache/posttrain/retrieval``, or $POSTTRAIN_CACHE)."""
    retries: int = 5
    """A served retriever that does not answer is asked again this many times, waiting 1, 2, 4, ... s
    (5: about half a minute, long enough for a restart) before the run stops with its URL."""

    def __post_init__(self) -> None:
        for name, low in (("top_k", 1), ("max_searches", 0), ("max_turn_tokens", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"search.{name} must be an integer >= {low}, got {value!r}.")
        value = self.max_doc_chars
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"search.max_doc_chars must be a positive integer, got {value!r}.")
        if self.retriever is not None and (not isinstance(self.retriever, str) or not self.retriever.strip()):
            raise ConfigError(
                f"search.retriever must be null, a corpus .jsonl path or an http:// URL, got {self.retriever!r}."
            )

    def tool_config(self, max_completion_length: int):
        """The loop's limits (:class:`posttrain.rollout.tools.ToolConfig`) for this run."""
        from posttrain.rollout.tools import ToolConfig

        return ToolConfig(
            max_searches=self.max_searches,
            max_turn_tokens=min(self.max_turn_tokens, max_completion_length),
            max_total_tokens=max_completion_length,
            top_k=self.top_k,
        )

    def formatter(self):
        """How retrieved passages are written into the trajectory (``format_documents`` with the cap)."""
        import functools

        from posttrain.retrieval.tool import format_documents

        return functools.partial(format_documents, max_chars=self.max_doc_chars)

    @staticmethod
    def with_prompt(data):
        """``data`` (a ``DataConfig``) with :data:`~posttrain.rollout.tools.SEARCH_PROMPT` around each
        question, unless it has a prompt template or an instruction of its own."""
        import dataclasses

        from posttrain.rollout.tools import SEARCH_PROMPT

        if data.prompt_template is None and not data.instruction:
            return dataclasses.replace(data, prompt_template=SEARCH_PROMPT)
        return data

    def make_tool(self):
        from posttrain.retrieval.tool import make_search_tool

        return make_search_tool(self.retriever, cache_dir=self.cache_dir, retries=self.retries)
