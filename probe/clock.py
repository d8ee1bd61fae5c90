"""Is the wall clock trustworthy?  A Raspberry Pi has no RTC: until NTP syncs, it boots with the
time it last saved (or 1970), certificates look "not yet valid" and timestamps are wrong.

``clock_synced()`` asks the kernel (``adjtimex``: ``TIME_ERROR`` means unsynchronised, which is
what the kernel reports until an NTP client such as systemd-timesyncd has disciplined the clock)
and refuses any time before this release was built.  Where the kernel may not be asked - the
probe's systemd unit has ``ProtectClock=``, whose system-call filter refuses ``adjtimex`` even
to read - it reads the file systemd-timesyncd touches on each synchronisation (documented for
this in systemd-timesyncd.service(8)); without it the clock counts as not synchronised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from datetime import UTC, datetime
from pathlib import Path

TIME_ERROR = 5  # adjtimex(2) return value: clock not synchronised
#: 2026-01-01T00:00:00Z: no correct clock running this release can be earlier.
EARLIEST_SANE_EPOCH = 1_767_225_600
#: Touched by systemd-timesyncd on each successful synchronisation.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def kernel_says_synced() -> bool | None:
    """True/False from adjtimex(2); None where it cannot be asked (not Linux, or a seccomp
    filter that refuses it: EPERM)."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    libc = ctypes.CDLL(path, use_errno=True)
    timex = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
    state = libc.adjtimex(timex)
    if state < 0:
        return None
    return state != TIME_ERROR


def clock_synced(now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if now < EARLIEST_SANE_EPOCH:
        return False
    kernel = kernel_says_synced()
    return TIMESYNC_FLAG.exists() if kernel is None else kernel


def rfc3339(wall_ns: int | None = None, *, seconds: float | None = None) -> str:
    """UTC, RFC 3339 with milliseconds (``2026-11-26T10:57:44.123Z``): of ``wall_ns``
    (``time.time_ns()``), of ``seconds`` since the epoch, or of now."""
    if seconds is None:
        seconds = (time.time_ns() if wall_ns is None else wall_ns) / 1e9
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
