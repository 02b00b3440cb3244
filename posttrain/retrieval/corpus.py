"""Read a passage corpus for the search tool: one JSON object ``{id, title, text}`` per line.

    from posttrain.retrieval.corpus import read_corpus
    passages, digest = read_corpus("data/squad/corpus.jsonl")   # list[Passage], sha256 of the file

``title`` is optional (an empty string when absent). The Search-R1 / FlashRAG layout of wiki-18, where
``contents`` holds a quoted title on its first line and the passage below it, is read too, so the corpus
MASH trains on loads without a conversion step. Every problem (a missing file, a line that is not JSON,
a row without ``id`` or ``text``, two rows with one id) is a :class:`~posttrain.errors.DataError` that
names the line and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from posttrain.errors import DataError


@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrievable unit of text."""

    id: str
    title: str
    text: str


def read_corpus(path: str | os.PathLike) -> tuple[list[Passage], str]:
    """The passages of the JSONL corpus at ``path``, in file order, and the sha256 of the file's bytes.

    The digest is computed in the same pass as the parse (one read of a corpus that may be gigabytes):
    it keys the index cache, so an edited corpus is never served from a stale index.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"Corpus file {str(path)!r} does not exist. Pass a JSONL file with one "
            '{"id": ..., "title": ..., "text": ...} object per line (the shipped default is '
            "data/squad/corpus.jsonl), or an http(s):// URL of a running `posttrain retriever serve`."
        )
    digest = hashlib.sha256()
    passages: list[Passage] = []
    first_line_of: dict[str, int] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            digest.update(raw)
            if not raw.strip():
                continue  # blank lines (a trailing newline, a hand-edited file) carry nothing
            passage = _parse_row(raw, number, path)
            if passage.id in first_line_of:
                raise DataError(
                    f"{path}:{number}: passage id {passage.id!r} already used on line "
                    f"{first_line_of[passage.id]}. Ids must be unique: a search hit is reported by its id."
                )
            first_line_of[passage.id] = number
            passages.append(passage)
    if not passages:
        raise DataError(
            f"Corpus file {str(path)!r} holds no passages. Write one "
            '{"id": ..., "title": ..., "text": ...} object per line.'
        )
    return passages, digest.hexdigest()


def _parse_row(raw: bytes, number: int, path: Path) -> Passage:
    """The passage on line ``number``, or a DataError saying what is wrong with it."""
    where = f"{path}:{number}"
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{where}: the line is not valid JSON ({exc}). Each line must be one object "
            '{"id": ..., "title": ..., "text": ...}.'
        ) from exc
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object {{id, title, text}}, got {type(row).__name__}.")
    if "text" not in row and isinstance(row.get("contents"), str):
        row = {**row, **_split_contents(row["contents"])}
    missing = [key for key in ("id", "text") if row.get(key) is None]
    if missing:
        raise DataError(
            f"{where}: the row has no {' or '.join(repr(m) for m in missing)} (keys: {sorted(row)}). "
            'Every passage needs an "id" (unique) and a "text"; "title" is optional.'
        )
    pid, title, text = row["id"], row.get("title") or "", row["text"]
    # Integer ids (wiki-18 numbers its passages) are kept as their decimal string.
    if isinstance(pid, bool) or not isinstance(pid, str | int):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {pid!r}.")
    if not isinstance(text, str) or not isinstance(title, str):
        raise DataError(f"{where}: 'text' and 'title' must be strings.")
    return Passage(id=str(pid), title=title, text=text)


def _split_contents(contents: str) -> dict[str, str]:
    """FlashRAG's ``contents`` field (``'"Title"\\npassage'``) as ``{title, text}``."""
    title, newline, text = contents.partition("\n")
    if not newline:
        return {"title": "", "text": contents}
    return {"title": title.strip().strip('"'), "text": text.strip()}
