"""What every ``posttrain`` entry point shares: logging set-up, and errors turned into one message.

    from posttrain.console import run_command
    sys.exit(run_command(lambda: main(sys.argv[1:])))

``run_command`` runs a command; a :class:`~posttrain.errors.PosttrainError` (bad recipe, data, model,
reward plugin, output folder) prints one line saying what is wrong and how to fix it and gives exit
status 2; ``POSTTRAIN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from posttrain.errors import PosttrainError


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def run_command(fn: Callable[[], object]) -> int:
    """Run ``fn``; turn a PosttrainError into one readable message and exit status 2."""
    setup_logging()
    try:
        fn()
    except PosttrainError as exc:
        if os.environ.get("POSTTRAIN_DEBUG"):
            raise
        print(f"\nposttrain: error: {exc}", file=sys.stderr)
        return 2
    return 0
