"""The project's cache folder: converted models, BM25 indexes.

from posttrain.cache import cache_dir
cache_dir() / "models"        # $POSTTRAIN_CACHE, else ~/.cache/posttrain
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models and indexes live: ``$POSTTRAIN_CACHE``, else ``~/.cache/posttrain``."""
    return Path(os.environ.get("POSTTRAIN_CACHE") or Path.home() / ".cache" / "posttrain").expanduser()


def short_hash(text: str) -> str:
    """A 10-character key that tells apart cache folders made from different sources."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]
