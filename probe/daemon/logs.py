"""Structured logs on stdout for journald: one JSON object per line (or plain text on a tty).

journald gives every line of a service's stdout the unit's default priority (info) unless the
line starts with a syslog ``<N>`` prefix (``SyslogLevelPrefix=yes``, systemd's default), so
under systemd - ``$JOURNAL_STREAM`` names our stdout - each line is prefixed with its level's
priority and ``journalctl -p warning`` finds the warnings.  Elsewhere (a terminal, a pipe, a
test) nothing is prefixed.

Secrets never reach a log line: configuration objects hide them in their repr, and nothing logs a
password or key; the formatter adds no environment or config dump of its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from probe.clock import rfc3339

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

#: syslog priorities (RFC 5424) of the logging levels.
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                   logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The priority of a level, custom levels rounded to the next standard one down."""
    return next((p for level, p in sorted(SYSLOG_PRIORITY.items(), reverse=True)
                 if levelno >= level), 7)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": rfc3339(seconds=record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class SyslogPrefix(logging.Formatter):
    """Another formatter's lines, each with the ``<N>`` priority prefix journald reads (every
    line of a multi-line text record: journald reads each line on its own)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def journal_stream(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Is ``stream`` the journal's own stream?  systemd sets ``$JOURNAL_STREAM`` to the
    ``device:inode`` of the stream it connected; comparing it with the stream's (as systemd
    advises) leaves a child whose stdout was redirected elsewhere unprefixed."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file behind it (a test's StringIO)
        return False
    return device.isdigit() and inode.isdigit() and (int(device), int(inode)) == (
        st.st_dev, st.st_ino)


def configure_logging(fmt: str = "json", *, verbose: bool = False,
                      stream: TextIO | None = None) -> None:
    stream = stream if stream is not None else sys.stdout
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    if journal_stream(stream):
        formatter = SyslogPrefix(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    paho_level = logging.INFO if not verbose else logging.DEBUG
    logging.getLogger("probe.uplink.mqtt.paho").setLevel(paho_level)


class Recurring:
    """A failure that repeats (a broker away for hours, retried every 30 s): the first one at
    ``level``, then one line at INFO at most every ``every_s`` seconds with the count so far,
    the rest at DEBUG - so the journal says it once loudly and then keeps count, quietly.

    ``ended()`` when it stops failing returns (failures, seconds) for the recovery line.
    """

    def __init__(self, logger: logging.Logger, *, level: int = logging.WARNING,
                 every_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.level = level
        self.every_s = every_s
        self.clock = clock
        self.count = 0
        self._first_at = 0.0
        self._logged_at = 0.0

    def failed(self, msg: str, *args: Any, level: int | None = None, **extra: Any) -> None:
        """One more failure; ``level`` instead of the default for the first one."""
        now = self.clock()
        self.count += 1
        if self.count == 1:
            self._first_at = self._logged_at = now
            level = self.level if level is None else level
        elif now - self._logged_at >= self.every_s:
            level, self._logged_at = logging.INFO, now
            msg += " (still failing: %d attempts in %.0f s)"
            args = (*args, self.count, now - self._first_at)
        else:
            level = logging.DEBUG
        self.logger.log(level, msg, *args, extra={"attempt": self.count, **extra})

    def ended(self) -> tuple[int, float]:
        """It works again: (failures in a row, seconds since the first), and a fresh count."""
        count, since = self.count, (self.clock() - self._first_at if self.count else 0.0)
        self.count = 0
        return count, since
