"""Typed AT errors.  Each is a :class:`~probe.errors.ProbeError` *and* the builtin callers know.

::

    ProbeError
    └── AtError                                  (RuntimeError)
        ├── ModemTimeout                         (TimeoutError)  no final result in time
        ├── ModemGone                            (ConnectionError) port closed, USB unplugged
        └── CommandFailed                        the final result was not OK
            ├── CmeError  (+CME ERROR: <n>)      .code: int | None, .text
            └── CmsError  (+CMS ERROR: <n>)
"""

from __future__ import annotations

import re

from probe.errors import ProbeError

# Commands whose arguments are secrets (SIM PIN/PUK, facility and password changes): their
# arguments never reach a message, a log line or a result.
_SECRET_ARGS = re.compile(r"(\+C(?:PIN2?|PWD|LCK)\s*=\s*)(.+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``AT+CPIN="1234"`` -> ``AT+CPIN=<redacted>``; other text unchanged."""
    return _SECRET_ARGS.sub(lambda m: m[1] + "<redacted>", text)


class AtError(ProbeError, RuntimeError):
    """Something went wrong talking AT to a modem."""


class ModemTimeout(AtError, TimeoutError):
    """A command got no final result code within its timeout."""

    def __init__(self, command: str, timeout_s: float) -> None:
        self.command = command = redact(command)
        self.timeout_s = timeout_s
        super().__init__(f"{command!r}: no final result within {timeout_s:g} s")


class ModemGone(AtError, ConnectionError):
    """The port went away (USB unplug, re-enumeration, closed pty): close, back off, reopen."""


class CommandFailed(AtError):
    """A command ended with a final result other than ``OK``/``CONNECT``.

    ``final`` is the final result line as received (``ERROR``, ``NO CARRIER``, ``BUSY``...).
    """

    def __init__(self, command: str, final: str) -> None:
        self.command = command = redact(command)
        self.final = final
        super().__init__(f"{command!r} -> {final}")


class CmeError(CommandFailed):
    """``+CME ERROR: <n>`` (mobile equipment error; ``AT+CMEE=1`` numeric, ``=2`` verbose)."""

    def __init__(self, command: str, final: str, code: int | None, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(command, final)


class CmsError(CmeError):
    """``+CMS ERROR: <n>`` (message service error)."""
