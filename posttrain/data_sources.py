"""Read raw rows from a local file, a folder of split files, or the Hugging Face hub, with clear errors.

:func:`load_table` turns a ``data.path`` (or ``data.eval_path``) into a :class:`Table` of raw rows,
before any column mapping or prompt formatting (that is :mod:`posttrain.data`'s job):

* a ``.jsonl``, ``.json`` (a JSON list or JSON lines) or ``.parquet`` file;
* a folder of such files, of which only those of the asked split are read (``train.jsonl``,
  ``train-00000-of-00002.parquet``, ``train/part-0.jsonl``), so test rows never leak into training;
* a Hugging Face data set named ``org/name``, loaded with ``datasets.load_dataset`` after a quick check
  that the hub can be reached (an offline machine would otherwise spend ~25 s in retries).

Each failure raises :class:`~posttrain.errors.DataError` naming the recipe key, the file and line, and
what to change::

    from posttrain.data_sources import load_table
    table = load_table("train.jsonl", None, "train", "data.path")
    rows = table.take([0, 1])                     # the first two rows as dicts
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import datasets

from posttrain.errors import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# Suffixes that mark a path as a file name rather than a Hugging Face `org/name`.
_FILE_LIKE_SUFFIXES = FILE_SUFFIXES + (".csv", ".tsv", ".txt", ".arrow", ".gz", ".zst")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Table:
    """Raw source rows: `take(indices)` returns them as dicts, so large sources are read lazily."""

    source: str
    columns: list[str]
    num_rows: int
    take: Callable[[list[int]], list[dict]]


def _list_table(source: str, rows: list[dict]) -> Table:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return Table(source, columns, len(rows), lambda idx: [rows[i] for i in idx])


def _read_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno}); every line of a "
                "JSON-lines file must be one JSON object. Fix or delete that line."
            ) from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}.")
        rows.append(obj)
    return rows


def _read_json_file(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" or not text.lstrip().startswith(("[", "{")):
        return _read_jsonl(path, text)
    if text.lstrip().startswith("{"):
        # A `.json` file starting with an object is JSON lines unless it parses as a single document.
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return _read_jsonl(path, text)
        keys = list(obj)[:10]
        raise DataError(
            f"{path} holds one JSON object (keys {keys}), not a list of rows; write the rows as a JSON "
            "list or as JSON lines (.jsonl)."
        )
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); fix the file."
        ) from exc
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: item {bad} of the JSON list is not an object; every row must be an object.")
    return rows


def _parquet_table(source: str, files: list[Path]) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return Table(source, table.column_names, table.num_rows, lambda idx: table.take(idx).to_pylist())


def _read_files(source: str, files: list[Path]) -> Table:
    if all(f.suffix == ".parquet" for f in files):
        return _parquet_table(source, files)
    rows: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(f).to_pylist())
        else:
            rows.extend(_read_json_file(f))
    return _list_table(source, rows)


# Names that mark a file as belonging to one split; a folder with such files is never read whole
# for another split, so test rows cannot leak into training by accident.
_SPLIT_WORDS = ("train", "test", "validation", "valid", "val", "dev", "eval")


def _split_files(folder: Path, split: str, key: str, split_required: bool) -> tuple[list[Path], str]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in FILE_SUFFIXES)
    if not files:
        raise DataError(
            f"{key}: folder {folder} holds no {'/'.join(FILE_SUFFIXES)} files; point it at a folder of "
            "data files or at one file."
        )

    def in_split(f: Path, word: str) -> bool:
        # `train.jsonl`, `train-00000-of-00002.parquet` or `train/part-0.jsonl`, not `trainer.jsonl`.
        named = re.match(rf"{re.escape(word)}(?![A-Za-z0-9])", f.name)
        return bool(named) or word in f.relative_to(folder).parts[:-1]

    matching = [f for f in files if in_split(f, split)]
    if matching:
        return matching, f"{folder.name}-{split}"
    split_named = any(in_split(f, w) for f in files for w in _SPLIT_WORDS)
    if split_required or split_named:
        names = [str(f.relative_to(folder)) for f in files[:10]]
        raise DataError(
            f"{key}: no file in {folder} belongs to split {split!r} (files: {names}); set "
            f"{'data.eval_split' if key == 'data.eval_split' else 'data.split'} to the prefix of the files "
            "to read, or point the path at one file."
        )
    return files, folder.name


def _looks_like_hub_name(path: str) -> bool:
    return bool(_HUB_NAME.match(path)) and not path.lower().endswith(_FILE_LIKE_SUFFIXES)


def load_table(
    path: str, config_name: str | None, split: str, key: str, split_required: bool = False
) -> Table:
    """Raw rows of a local file, a folder (the files of `split`) or a Hugging Face data set."""
    local = Path(path).expanduser()
    if local.is_file():
        if split_required:
            raise DataError(
                f"{key}: {path} is a single file and has no splits; set data.eval_path to the evaluation "
                "file, or hold rows out with data.eval_size."
            )
        if local.suffix not in FILE_SUFFIXES:
            raise DataError(
                f"{key}: {path} has extension {local.suffix!r}, which posttrain cannot read; convert it to "
                f"one of {list(FILE_SUFFIXES)} (a .json file may be a JSON list or JSON lines)."
            )
        return _read_files(local.stem, [local])
    if local.is_dir():
        files, source = _split_files(local, split, key, split_required)
        return _read_files(source, files)
    if _looks_like_hub_name(path):
        return _hub_table(path, config_name, split, key)
    raise DataError(
        f"{key}: no such file or folder: {path} (looked in {Path.cwd()}). Fix the path; a Hugging Face "
        "data set name is recognised only in the `org/name` form, e.g. openai/gsm8k."
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a connection; without this check an offline machine spends
    ~25 s in `load_dataset`'s retries before failing."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_table(path: str, config_name: str | None, split: str, key: str) -> Table:
    fix = (
        "Use a local file (data.path: train.jsonl) or a reasoning-gym task (data.generator: chain_sum) "
        "instead, or check the name, data.name and the split."
    )
    if not _hub_offline() and not _hub_reachable():
        raise DataError(
            f"{key}: {path!r} is not a local file, so it was taken as a Hugging Face data set, but the Hub "
            "cannot be reached (this machine may be offline). If the data set is in your Hugging Face cache, "
            f"set HF_HUB_OFFLINE=1. {fix}"
        )
    try:
        ds = datasets.load_dataset(path, config_name, split=split)
    except Exception as exc:  # the Hub raises many types (ConnectionError, DatasetNotFoundError, ValueError)
        raise DataError(
            f"{key}: could not load the Hugging Face data set {path!r} (config {config_name!r}, split "
            f"{split!r}): {exc}. The name may be wrong, or the machine may be offline. {fix}"
        ) from exc
    return Table(f"{path}:{split}", ds.column_names, len(ds), lambda idx: ds.select(idx).to_list())
