"""What both HTTP servers (the retriever, the rollout server) need to refuse bad requests.

Bodies are read up to a limit and refused past it (413) without being held in memory whole; a server
bound beyond loopback requires a shared token for every request that changes its state (the rollout
server's weight pushes, sleep and wake-up), sent as ``Authorization: Bearer <token>`` and read by the
clients from ``POSTTRAIN_SERVER_TOKEN``.
"""

from __future__ import annotations

import hmac
import os

TOKEN_ENV = "POSTTRAIN_SERVER_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BodyTooLarge(Exception):
    """The request body is over the server's limit."""


async def read_body(request, limit: int) -> bytes:
    """``request``'s body, refused past ``limit`` bytes (declared or counted while reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK


def authorized(request, token: str | None) -> bool:
    """True when no token is required or the request carries it (compared in constant time)."""
    if not token:
        return True
    sent = request.headers.get("authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def client_headers() -> dict[str, str]:
    """The token header a client sends when ``POSTTRAIN_SERVER_TOKEN`` is set."""
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}
