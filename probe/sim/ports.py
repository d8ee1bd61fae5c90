"""Free loopback ports for the stand-ins (SIPp hotlines, mosquitto)."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port the kernel just told us is free.  Racy by nature (the port is free now, the
    stand-in binds it a moment later): callers that start a server retry on failure."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
