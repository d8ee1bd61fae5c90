"""systemd ``Type=notify`` without a dependency: READY, STOPPING, STATUS and WATCHDOG pings.

The protocol is one datagram per message to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a
leading ``@`` means the abstract namespace).  Outside systemd there is no socket and every call is
a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("probe.daemon.systemd")


class Notifier:
    def __init__(self, socket_path: str | None = None, watchdog_usec: str | None = None) -> None:
        self.socket_path = socket_path
        usec = int(watchdog_usec) if watchdog_usec and watchdog_usec.isdigit() else 0
        #: How often to ping: half of WatchdogSec (systemd's own advice); None without watchdog.
        self.watchdog_interval_s: float | None = usec / 2e6 if usec else None

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"), os.environ.get("WATCHDOG_USEC"))

    def send(self, message: str) -> bool:
        if not self.socket_path:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
