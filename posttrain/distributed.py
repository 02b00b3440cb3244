"""Multi-process runs: agree on precision with ``accelerate launch``, and re-launch ``posttrain train``.

    accelerate launch --config_file accelerate_configs/zero2.yaml --num_processes 2 \\
        -m posttrain.train recipes/quickstart.yaml --max_steps 2
    # the same run, started by posttrain itself (it re-launches through accelerate):
    posttrain train recipes/quickstart.yaml --max_steps 2 \\
        --run.accelerate_config accelerate_configs/zero2.yaml --run.num_processes 2

Precision: when a run is launched by accelerate, the accelerate YAML's ``mixed_precision`` decides
``trainer.bf16`` / ``trainer.fp16`` (DeepSpeed refuses a run where the two disagree). A recipe that
sets them explicitly to something else is an error that names both fixes (:func:`reconcile_precision`).

Failures: when one process exits with an error, ``accelerate launch`` (torchrun's elastic agent under
it, for DDP and DeepSpeed alike) stops the others at once and exits non-zero; measured on CPU, the
whole launch ends within a second of the failing rank's exit. A process that hangs without exiting
holds the others in their next collective until the process group's timeout: measured on CPU, 10 min
under DeepSpeed (its default; the DEEPSPEED_TIMEOUT variable, in minutes) and 30 min under DDP (gloo's).
Not shortened here: legitimate waits are long too (the other ranks wait in a collective while the
main process runs ``eval.before``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from posttrain.errors import ConfigError

logger = logging.getLogger(__name__)

# Set by `accelerate launch` in every process it starts (all launchers, one process included).
ACCELERATE_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
# Set by torchrun / the DeepSpeed launcher in every worker; the accelerate variable covers its simple
# one-process launcher; ours covers a child of `relaunch` whatever the launcher does.
LAUNCHED_ENV = ("LOCAL_RANK", ACCELERATE_PRECISION_ENV, "POSTTRAIN_LAUNCHED")
# The accelerate YAMLs shipped with the repository (present in a source checkout).
SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "accelerate_configs"
# Precision flags of GRPOConfig that an accelerate `mixed_precision` value maps onto.
PRECISION_KEYS = ("bf16", "fp16")
# After Ctrl-C, how long each step of stopping the launcher waits (torchrun's agent gives its workers 30 s).
STOP_GRACE_S = 40.0


def accelerate_precision() -> str | None:
    """The ``mixed_precision`` of the current ``accelerate launch`` ('no', 'bf16', 'fp16', 'fp8'), or None."""
    value = os.environ.get(ACCELERATE_PRECISION_ENV)
    return value.strip().lower() if value else None


def reconcile_precision(
    kwargs: dict[str, Any], user_trainer: dict[str, Any], launched: str | None
) -> dict[str, Any]:
    """The GRPOConfig ``kwargs`` with bf16/fp16 following the accelerate launch's precision.

    ``user_trainer`` holds only the precision keys the recipe (or a flag) set explicitly; ``launched``
    is :func:`accelerate_precision`. Not launched: ``kwargs`` unchanged. Launched: bf16/fp16 follow
    ``launched`` ('bf16' -> bf16, 'fp16' -> fp16, 'no'/'fp8' -> neither, so accelerate's own value
    applies), unless an explicit key disagrees, which raises :class:`ConfigError`.

        >>> reconcile_precision({"bf16": False, "use_cpu": True}, {}, "bf16")
        {'bf16': True, 'use_cpu': True, 'fp16': False}
    """
    if launched is None:
        return kwargs
    wanted = {key: launched == key for key in PRECISION_KEYS}
    explicit = {key: bool(user_trainer[key]) for key in PRECISION_KEYS if user_trainer.get(key) is not None}
    clashes = [key for key, value in explicit.items() if value != wanted[key]]
    if clashes:
        raise ConfigError(_clash_message(launched, explicit, clashes))
    if not explicit:
        logger.info(
            "Precision from the accelerate config (mixed_precision: %s): bf16=%s, fp16=%s.",
            launched,
            wanted["bf16"],
            wanted["fp16"],
        )
    return {**kwargs, **wanted}


def _clash_message(launched: str, explicit: dict[str, bool], clashes: list[str]) -> str:
    # The precision the recipe asks for, as an accelerate value, for the "change the YAML" fix.
    recipe_wants = next((key for key in PRECISION_KEYS if explicit.get(key)), "no")
    quoted = "'no'" if recipe_wants == "no" else recipe_wants
    sets = " and ".join(f"trainer.{key}: {str(explicit[key]).lower()}" for key in clashes)
    flags = " ".join(f"--trainer.{key} {str(launched == key).lower()}" for key in clashes)
    return (
        f"Your accelerate config says mixed_precision: {launched} but the recipe sets {sets}; either set "
        f"`mixed_precision: {quoted}` in the accelerate YAML (or pass `--mixed_precision {recipe_wants}` to "
        f"accelerate launch), or pass {flags} (or drop the key from the recipe to follow the accelerate config)."
    )


def launched_by_launcher() -> bool:
    """True inside a process started by accelerate launch, torchrun, DeepSpeed or :func:`relaunch`."""
    return any(os.environ.get(name) for name in LAUNCHED_ENV)


def should_relaunch(run_cfg: Any) -> bool:
    """True when the recipe names an accelerate config and this process was not started by a launcher."""
    return bool(getattr(run_cfg, "accelerate_config", None)) and not launched_by_launcher()


def shipped_configs() -> list[str]:
    """``accelerate_configs/*.yaml`` of the source checkout, as paths to print."""
    if not SHIPPED_CONFIGS.is_dir():
        return []
    return [f"accelerate_configs/{p.name}" for p in sorted(SHIPPED_CONFIGS.glob("*.yaml"))]


def resolve_accelerate_config(name: str) -> Path:
    """The accelerate YAML for ``name``: a path, or a shipped config by name (``zero2``, ``zero2.yaml``)."""
    path = Path(name).expanduser()
    candidates = [path]
    if not path.is_absolute():
        candidates += [
            SHIPPED_CONFIGS.parent / path,
            SHIPPED_CONFIGS / path,
            SHIPPED_CONFIGS / f"{path}.yaml",
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = shipped_configs()
    listing = f" Shipped configs: {', '.join(shipped)}." if shipped else ""
    raise ConfigError(
        f"Accelerate config not found: {name} (run.accelerate_config). Pass the path of an accelerate YAML "
        f"or the name of a shipped one (e.g. zero2).{listing}"
    )


def launch_command(
    recipe_path: str, argv: list[str], accelerate_config: str, num_processes: int | None
) -> list[str]:
    """The ``accelerate launch ... -m posttrain.train RECIPE argv...`` command, with this interpreter."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "-m", "posttrain.train", str(recipe_path), *argv]


def relaunch(recipe_path: str, argv: list[str], run_cfg: Any) -> int:
    """Run this recipe through ``accelerate launch`` with ``run_cfg.accelerate_config``; its exit code.

    The launch shares this terminal: its output appears here, and Ctrl-C stops it (see :func:`_stop`).
    """
    config = resolve_accelerate_config(run_cfg.accelerate_config)
    cmd = launch_command(recipe_path, argv, str(config), run_cfg.num_processes)
    logger.info("Launching: accelerate launch %s", " ".join(cmd[3:]))
    # Marks the children as launched even under a launcher that sets none of the usual variables, so a
    # child never launches again.
    env = {**os.environ, "POSTTRAIN_LAUNCHED": "1"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = _stop(proc)
    # A launcher ended by a signal: report it the way a shell does (128 + the signal number).
    return 128 - code if code < 0 else code


def _stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S, typed: bool | None = None) -> int:
    """Stop the launcher after a Ctrl-C here; its exit code.

    A Ctrl-C ``typed`` in the terminal (default: whether this process is in the terminal's foreground
    process group) has reached the launcher and its workers too, and torchrun's agent then stops its
    workers within 30 s: wait for that first rather than signal it again mid-shutdown. Otherwise (a
    SIGINT sent to this process alone) pass it on at once. Then SIGTERM, then SIGKILL; another Ctrl-C
    skips to the next step.
    """
    typed = _in_foreground() if typed is None else typed
    steps = (None, signal.SIGINT) if typed else (signal.SIGINT,)
    for sig in (*steps, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=grace_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return proc.wait()


def _in_foreground() -> bool:
    """True if this process runs in the foreground of a terminal, where Ctrl-C signals the whole group."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):  # no terminal, stdin closed or replaced
        return False
