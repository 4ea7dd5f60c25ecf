"""Whether anything answers at a cluster's address: one TCP connect of a few seconds.

Ray's clients wait far longer for an address where nothing listens (the job client ≈ 35 s,
`ray.init` more than 10 minutes) and then end in a traceback; a user who mistyped the
address, or whose cluster is down, should hear it in seconds.
"""
from __future__ import annotations

import socket
import urllib.parse

CONNECT_TIMEOUT_S = 3.0


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT` or `scheme://HOST[:PORT]` (http 80, https 443); None if neither."""
    url = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:  # a port that is not a number
        return None
    return (url.hostname, port) if url.hostname and port else None


def unreachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when something accepts a connection at the address; otherwise why not, in words."""
    where = host_port(address)
    if where is None:
        return "not an address of the form HOST:PORT"
    try:
        socket.create_connection(where, timeout=timeout_s).close()
    except OSError as e:
        return f"nothing answered at {where[0]}:{where[1]} ({e.strerror or type(e).__name__})"
    return None
