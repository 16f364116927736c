"""Free TCP ports on 127.0.0.1 for the services the tests start themselves."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports.

    Every socket stays open until all are picked, so the kernel cannot hand the same port out twice:
    picked one at a time (bind, read, close), two of a Ray head's nine ports once came out equal and
    ``ray start`` failed.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    """One free port (for a service that needs only one)."""
    return free_ports(1)[0]
