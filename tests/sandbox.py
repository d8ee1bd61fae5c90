"""The probe unit's system-call sandbox, applied here to one process tree, without systemd.

systemd enforces ``SystemCallFilter=``, ``SystemCallErrorNumber=``, ``ProtectClock=`` and
``RestrictAddressFamilies=`` with a seccomp filter it builds with libseccomp before it executes
the service.  This builds the same filter from the unit file itself (the groups expanded by
``systemd-analyze syscall-filter``, as systemd 252 defines them) and loads it before
executing a command, so the tests can run the real probe inside what the unit allows:

    python -m tests.sandbox -- probe run -c probe.toml --once

Not emulated: the file system and device settings (``ProtectSystem=``, ``DeviceAllow=``: the
tests check those as text) and the argument filters of ``RestrictNamespaces=`` and
``LockPersonality=`` (they refuse flags the probe never uses).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["UNIT", "allowed_syscalls", "command", "families", "load", "unit_settings"]

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy/systemd/hotline-probe.service"

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Key=value`` lines of the unit's [Service] section, every assignment of a key kept."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """systemd's groups (``@system-service`` ...) and what each lists (names and groups)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for item in items:
        names |= expand(groups[item], groups) if item.startswith("@") else {item}
    return names


def allowed_syscalls(settings: dict[str, list[str]]) -> set[str]:
    """The allow-list, as systemd reads the unit: the first ``SystemCallFilter=`` lists what is
    allowed, each later ``~`` one takes away from it; ``ProtectClock=`` takes away @clock."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        allowed = allowed - names if deny else allowed | names
    if settings.get("ProtectClock", ["no"])[-1] == "yes":
        allowed -= expand(["@clock"], groups)
    return allowed


def families(settings: dict[str, list[str]]) -> list[int]:
    names = " ".join(settings.get("RestrictAddressFamilies", [])).split()
    return [int(getattr(socket, name)) for name in names]


def load(settings: dict[str, list[str]] | None = None) -> None:
    """Load the unit's filter into this process (inherited by its children, kept across exec)."""
    settings = settings if settings is not None else unit_settings()
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    code = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
    ctx = lib.seccomp_init(scmp_act_errno(code))  # what is not allowed fails with EPERM
    if not ctx:
        raise OSError("seccomp_init failed")
    for name in sorted(allowed_syscalls(settings)):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0 or name == "socket":
            continue  # not a call of this architecture; socket: by address family, below
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None) != 0:
            raise OSError(f"seccomp rule for {name} refused")
    socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
    for family in families(settings):
        cmp = (ArgCmp * 1)(ArgCmp(0, SCMP_CMP_EQ, family, 0))
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, socket_nr, 1, cmp) != 0:
            raise OSError("seccomp socket rule refused")
    if lib.seccomp_load(ctx) != 0:
        raise OSError(ctypes.get_errno(), "seccomp_load failed")


def command(*argv: str) -> list[str]:
    """``argv`` run inside the unit's sandbox (for subprocess)."""
    return [sys.executable, "-m", "tests.sandbox", "--", *argv]


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:]
    load()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()


