"""Checkpoints that cannot be half-written, and the newest complete one to resume from.

A checkpoint is written into ``<output_dir>/.staging/checkpoint-N``, closed with a manifest (every
file's size and SHA-256, :data:`MANIFEST`) and only then renamed to ``<output_dir>/checkpoint-N``; a
rename within one file system is atomic, so a ``checkpoint-N`` folder is either complete or absent,
whenever the process is killed. ``--resume`` takes the newest folder whose files still match its
manifest and names every newer one it skipped and why (:func:`latest_complete`). A disk that fills up
during a save leaves the earlier checkpoints as they were and stops the run with the folder and the
space needed (:class:`CheckpointSpaceError`).

    from posttrain.checkpoints import latest_complete
    path, skipped = latest_complete("runs/demo")
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from posttrain.errors import OutputDirError, PosttrainError

logger = logging.getLogger(__name__)

MANIFEST = "posttrain_manifest.json"
STAGING = ".staging"
PREFIX = "checkpoint-"


class CheckpointSpaceError(PosttrainError):
    """The disk filled up while a checkpoint was written; the earlier checkpoints are intact."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: str | Path, step: int) -> Path:
    """Record every file of ``folder`` (size, SHA-256); written last, it marks the folder complete."""
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)
    }
    path = folder / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def check(folder: str | Path, checksums: bool = True) -> str | None:
    """None when ``folder`` matches its manifest, else why not (in words)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        return "no manifest (not written by posttrain, or cut off while writing)"
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable manifest ({e})"
    for name, meta in files.items():
        p = folder / name
        if not p.exists():
            return f"{name} is missing"
        if p.stat().st_size != meta["size"]:
            return f"{name} has {p.stat().st_size} bytes, the manifest says {meta['size']}"
        if checksums and _sha256(p) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _step(path: Path) -> int:
    try:
        return int(path.name[len(PREFIX) :])
    except ValueError:
        return -1


def latest_complete(output_dir: str | Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete checkpoint of a run and the newer ones skipped, each with the reason.

    A folder without any manifest is accepted only when no checkpoint of the run has one and it holds
    ``trainer_state.json`` (written by a plain Trainer or an earlier posttrain), with a warning."""
    out = Path(output_dir)
    folders = sorted(
        (p for p in out.glob(f"{PREFIX}*") if p.is_dir() and _step(p) >= 0), key=_step, reverse=True
    )
    legacy = not any((p / MANIFEST).exists() for p in folders)
    skipped: list[tuple[str, str]] = []
    for folder in folders:
        if legacy and (folder / "trainer_state.json").exists():
            logger.warning("Resuming from %s, which has no manifest: its files cannot be verified.", folder)
            return str(folder), skipped
        reason = check(folder)
        if reason is None:
            return str(folder), skipped
        skipped.append((folder.name, reason))
    return None, skipped


def resume_point(output_dir: str | Path) -> str:
    """``latest_complete`` for ``--resume``: logs what was skipped, raises when nothing is left."""
    path, skipped = latest_complete(output_dir)
    for name, reason in skipped:
        logger.warning("Not resuming from %s: %s.", name, reason)
    if path is None:
        found = (
            f"no complete checkpoint ({'; '.join(f'{n}: {r}' for n, r in skipped)})"
            if skipped
            else "no checkpoint-* folder"
        )
        raise OutputDirError(
            f"--resume was given but {output_dir} holds {found}. Run without --resume to start afresh, "
            "or point --output_dir at the run to resume."
        )
    logger.info("Resuming from %s.", path)
    return path


def staging_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / STAGING


def clear_staging(run_dir: str | Path) -> None:
    """Remove what a killed save left behind (never a published checkpoint)."""
    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)


def publish(run_dir: str | Path, step: int) -> Path:
    """Seal ``.staging/checkpoint-<step>`` with its manifest and move it into the run folder."""
    staged = staging_dir(run_dir) / f"{PREFIX}{step}"
    target = Path(run_dir) / f"{PREFIX}{step}"
    write_manifest(staged, step)
    if target.exists():  # the same step saved again (a resumed run's first save): replace it whole
        old = staging_dir(run_dir) / f"old-{PREFIX}{step}"
        target.replace(old)
        staged.replace(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.replace(target)
    _fsync_dir(Path(run_dir))
    return target


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def folder_size(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def space_error(run_dir: str | Path, step: int, error: OSError) -> CheckpointSpaceError | None:
    """The message for a save that ran out of disk space (None for any other OSError)."""
    if error.errno != errno.ENOSPC:
        return None
    previous, _ = latest_complete(run_dir)
    need = folder_size(previous) if previous else 0
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    size = (
        f"about {need / 2**30:.2f} GiB (the size of the last checkpoint)" if need else "the checkpoint's size"
    )
    return CheckpointSpaceError(
        f"No space left on the device while writing {PREFIX}{step} into {run_dir}; {kept}. Free {size} "
        f"there (or set save_total_limit), then continue with --resume."
    )


def save_atomically(trainer, trial, write) -> None:
    """Run ``write(folder)`` (the Trainer's own save and posttrain's state) into the staging folder, then
    publish it and apply ``save_total_limit`` to the published checkpoints only, so that the newest
    complete checkpoint is never the one deleted. Every process takes part (DeepSpeed writes shards on
    each); the main process stages and publishes."""
    from transformers.trainer import rotate_checkpoints

    run_dir = trainer._get_output_dir(trial=trial)
    step = trainer.state.global_step
    main = trainer.args.should_save
    if main:
        clear_staging(run_dir)
    trainer.accelerator.wait_for_everyone()
    stage = staging_dir(run_dir)
    trainer._get_output_dir = lambda trial=None: str(stage)  # the Trainer writes <stage>/checkpoint-N
    try:
        write(str(stage / f"{PREFIX}{step}"))
    except OSError as e:
        if main:
            clear_staging(run_dir)
        error = space_error(run_dir, step, e)
        if error is None:
            raise
        raise error from e
    finally:
        del trainer._get_output_dir
    trainer.accelerator.wait_for_everyone()
    if main:
        publish(run_dir, step)
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=False,
        )
        clear_staging(run_dir)
    trainer.accelerator.wait_for_everyone()
