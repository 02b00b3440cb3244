"""Requests to posttrain's own HTTP servers (``vllm-serve``, ``retriever serve``), retried with back-off.

    answer = send(session, "POST", url + "/search", what="a search", server="Retrieval server",
                  retries=3, backoff=1.0, timeout=30, json=body)
    wait_until_up(session, url + "/health", timeout=60, first_delay=0.1, max_delay=2.0)

A connection error, a timeout, a 5xx answer or a status in ``retry_statuses`` is retried after
``backoff``, 2x, 4x, ... seconds, ``retries`` times; then :class:`Unanswered`. Any other 4xx answer
means the request itself is wrong, and sending it again would not help: :class:`Refused`, at once.
Each client turns these into its own error, which says how to start the server and resume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class Unanswered(Exception):
    """No usable answer after every attempt (or before the deadline); ``last`` says what went wrong."""

    def __init__(self, last: str, attempts: int):
        super().__init__(last)
        self.last, self.attempts = last, attempts


class Refused(Exception):
    """The server answered with a 4xx: the request is wrong; ``detail`` is the server's message."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


def error_detail(response) -> str:
    """The server's error message: FastAPI's ``detail`` field, else the start of the body."""
    try:
        return str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):
        return response.text[:500] or str(response.reason)


def send(
    session,
    method: str,
    url: str,
    *,
    what: str,
    server: str,
    retries: int,
    backoff: float,
    timeout: Any,
    retry_statuses: tuple[int, ...] = (),
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
):
    """The answer (status < 400) to one request, retried as the module docstring says.

    ``what`` names the request and ``server`` the server in the retry warnings; ``timeout`` and
    ``kwargs`` go to ``session.request``; ``sleep`` waits between attempts (tests pass a recorder).
    """
    import requests

    for attempt in range(retries + 1):
        try:
            answer = session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:  # refused, reset, timed out
            last = f"{type(exc).__name__}: {exc}"
        else:
            if answer.status_code < 400:
                return answer
            if answer.status_code < 500 and answer.status_code not in retry_statuses:
                raise Refused(answer.status_code, error_detail(answer))
            last = f"HTTP {answer.status_code}: {error_detail(answer)}"
        if attempt < retries:
            wait = backoff * 2**attempt
            logger.warning(
                "%s at %s: %s failed (%s); retry %d of %d in %.1f s",
                server,
                url,
                what,
                last,
                attempt + 1,
                retries,
                wait,
            )
            sleep(wait)
    raise Unanswered(last, retries + 1)


def wait_until_up(
    session,
    url: str,
    timeout: float,
    *,
    first_delay: float,
    max_delay: float,
    read: Callable[[Any], Any] = lambda answer: answer,
    on_wait: Callable[[float], None] | None = None,
):
    """Poll ``GET url`` until it answers 2xx and ``read(answer)`` does not raise ValueError; that value.

    Waits ``first_delay``, doubled up to ``max_delay``, between polls; ``on_wait(seconds left)`` is
    called before the first wait. :class:`Unanswered` once ``timeout`` seconds have passed.
    """
    import requests

    deadline = time.monotonic() + timeout
    delay, last, waited = first_delay, "no answer", False
    while True:
        try:
            answer = session.get(url, timeout=min(5.0, timeout))
            if answer.ok:
                return read(answer)
            last = f"HTTP {answer.status_code}"
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unanswered(last, 0)
        if on_wait is not None and not waited:
            on_wait(remaining)
            waited = True
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, max_delay)
