"""posttrain.locking.exclusive: a second holder waits (and says so) until the first releases.

pytest tests/test_locking.py -q
"""

from __future__ import annotations

import logging
import threading
import time

from posttrain.locking import exclusive


def test_a_second_holder_waits_for_the_first(tmp_path, caplog):
    lock, order = tmp_path / "entry.lock", []

    def second() -> None:
        with exclusive(lock, "building the entry"):
            order.append("second")

    with caplog.at_level(logging.INFO, logger="posttrain.locking"):
        with exclusive(lock, "building the entry"):
            worker = threading.Thread(target=second)
            worker.start()
            time.sleep(0.5)  # time for the second holder to find the lock taken
            order.append("first")
        worker.join(10)
    assert order == ["first", "second"]
    assert "Waiting for another process to finish building the entry" in caplog.text


def test_the_lock_is_released_on_an_error(tmp_path):
    lock = tmp_path / "entry.lock"
    try:
        with exclusive(lock, "x"):
            raise RuntimeError("build failed")
    except RuntimeError:
        pass
    with exclusive(lock, "x"):  # would block forever if the first holder had kept it
        pass
