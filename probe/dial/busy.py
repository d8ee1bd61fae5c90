"""Who holds a port that a local ``probe call`` needs: the SIP port of ``[sip]``, or a modem's
serial port.  Usually the probe daemon (when it does not answer on its control socket, e.g. it
runs another configuration), sometimes another SIP client or a terminal program.

Linux only, by ``/proc``: ``/proc/net/{udp,tcp}[6]`` name the socket's inode, ``/proc/<pid>/fd``
the processes that have it (or the device) open.  Processes of other users are not readable
without root; the message then says how to find them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from probe.config.model import SipAccount

PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # its command line, cut short


def sip_port_busy(account: SipAccount) -> str | None:
    """Who holds the SIP port, as a sentence; None when it is free (or "any port")."""
    port = account.local_port
    if not port or not _in_use(account.local_address, port, account.transport):
        return None
    where = f"{account.transport} {account.local_address}:{port}"
    holders = socket_holders(account.transport, port)
    hint = f"sudo ss -lnp{account.transport[0]} 'sport = :{port}'"
    return f"the SIP port {where} (sip.local_port) is in use by {_who(holders, hint)}"


def serial_port_busy(port: str, key: str) -> str | None:
    """Who holds the modem's serial ``port`` (pyserial's exclusive lock), as a sentence; None
    when it is free, is a URL, or cannot be opened at all (the call itself then says why)."""
    if "://" in port:
        return None
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock pyserial's exclusive=True takes
    except BlockingIOError:
        return (f"the modem port {port} ({key}) is in use by "
                f"{_who(device_holders(port), f'sudo fuser -v {port}')}")
    finally:
        os.close(fd)  # closing drops our lock, if we got it
    return None


def _in_use(address: str, port: int, transport: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def socket_holders(transport: str, port: int) -> list[Holder]:
    """The processes (that this user may see) with a ``transport`` socket bound to ``port``."""
    inodes: set[str] = set()
    for table in (f"{transport}", f"{transport}6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            # TCP: the listener (0A) holds the port; UDP sockets are all "bound" (07)
            if int(local.rsplit(":", 1)[1], 16) == port and (transport != "tcp" or state == "0A"):
                inodes.add(f"socket:[{inode}]")
    return _holders(inodes)


def device_holders(path: str) -> list[Holder]:
    """The processes (that this user may see) with the device at ``path`` open."""
    return _holders({os.path.realpath(path)})


def _holders(targets: set[str]) -> list[Holder]:
    found: list[Holder] = []
    if not targets:
        return found
    me = os.getpid()
    for proc in PROC.iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            if any(os.readlink(fd) in targets for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace").strip()
                found.append(Holder(int(proc.name), command[:120]))
        except OSError:  # another user's process, or one that just ended
            continue
    return found


def _who(holders: list[Holder], hint: str) -> str:
    if not holders:
        return f"another process (not visible to this user: {hint} names it)"
    return ", ".join(f"pid {h.pid} ({h.command})" for h in holders)
