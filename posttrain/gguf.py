"""Convert a GGUF file once into a plain, trainable Hugging Face model folder in the cache.

transformers loads a GGUF by dequantizing it to fp32 but keeps the model marked as quantized, and such
a model can be neither trained (TRL, peft) nor saved. So each GGUF is converted once: loaded with
transformers, stripped of its quantizer markers (:func:`clear_quantization`) and saved as safetensors
under :func:`cache_dir` (``$POSTTRAIN_CACHE``, else ``~/.cache/posttrain``). The folder is written to
a temporary sibling and renamed into place, so an interrupted run never leaves a half folder, and a
file lock keeps two processes (e.g. the ranks of one launch) from converting the same model at once.
The converted folder is then loaded like any other; :func:`posttrain.models.resolve_model_path`
decides which GGUF to convert and where::

    from pathlib import Path
    from posttrain.gguf import convert_local_gguf
    folder = convert_local_gguf(Path("model.Q4_K_M.gguf"))   # cache_dir()/models/model.Q4_K_M-<hash>
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from posttrain.cache import cache_dir, short_hash
from posttrain.errors import ModelError
from posttrain.locking import exclusive

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


def convert_local_gguf(gguf: Path) -> str:
    """Convert a local ``.gguf`` file into ``cache_dir()/models/<stem>-<hash>`` (once); return that folder."""
    if not gguf.is_file():
        others = sorted(p.name for p in gguf.parent.glob("*.gguf")) if gguf.parent.is_dir() else []
        hint = f" GGUF files there: {', '.join(others)}." if others else ""
        raise ModelError(f"GGUF file {str(gguf)!r} does not exist.{hint}")
    gguf = gguf.resolve()
    stat = gguf.stat()
    # The folder name changes when the file is replaced, so a stale conversion is never reused.
    key = short_hash(f"{gguf}\0{stat.st_mtime_ns}\0{stat.st_size}")
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    return convert_gguf(str(gguf.parent), gguf.name, target, source=str(gguf))


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion."""
    # Conversions appear by an atomic rename, so a folder with a config and weights is complete.
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


LoadError = Callable[[str, str, Exception], Exception]
"""``(source, repo, error) -> exception``: what to raise when transformers cannot load the GGUF."""


def _cannot_load(source: str, repo: str, exc: Exception) -> Exception:
    return ModelError(f"Could not load a model from {repo!r}: {exc}")


def convert_gguf(
    repo: str,
    filename: str,
    target: Path,
    source: str,
    revision: str | None = None,
    load_error: LoadError = _cannot_load,
) -> str:
    """Convert ``repo/filename`` into ``target`` unless it is there already; return ``target``.

    The model is written to a temporary sibling and renamed into place, so an interrupted run never
    leaves a half folder; a lock file keeps two processes from converting the same model at once.
    ``load_error`` builds the message when the GGUF cannot be loaded (the caller knows whether the
    repository was a hub id, and says so).
    """
    if is_complete(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock", "converting this model"):
        if is_complete(target):  # another process finished while we waited
            return str(target)
        # Holding the lock, any leftover from a killed conversion of this model is ours to remove.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _export_gguf(repo, filename, tmp, source=source, revision=revision, load_error=load_error)
            _make_readable(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return str(target)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a private folder; a cache shared by several users needs the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for child in folder.iterdir():
        child.chmod(0o666 & ~umask)


def _export_gguf(
    repo: str, filename: str, out: Path, *, source: str, revision: str | None, load_error: LoadError
) -> None:
    """Load a GGUF with transformers (dequantized to fp32) and save it as a plain HF folder."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    logger.info("Converting GGUF %s into a trainable fp32 model folder (once; ~30 s for 135M) ...", source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, gguf_file=filename, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            repo, gguf_file=filename, revision=revision, dtype=torch.float32
        )
    except OSError as exc:
        raise load_error(source, repo, exc) from exc
    except (ValueError, NotImplementedError) as exc:
        raise ModelError(f"Cannot convert GGUF {source}: {exc}") from exc
    clear_quantization(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    provenance = {"source": source, "gguf_file": filename, "transformers": transformers.__version__}
    (out / "posttrain_conversion.json").write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("Converted %s in %.1f s", source, time.monotonic() - start)


def clear_quantization(model: PreTrainedModel) -> None:
    """Drop the GGUF quantizer markers: the weights are already dequantized fp32 tensors.

    Without this transformers refuses to fine-tune ("purely quantized models"), peft refuses LoRA,
    and ``save_pretrained`` refuses to serialise.
    """
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
