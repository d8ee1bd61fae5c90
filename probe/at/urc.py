"""Unsolicited result codes: named regexes, and the event a URC becomes.

A URC is any line the modem sends that is not part of the response to the command in flight.
The table names each shape once (python-gsmmodem habit), so routing and the dialer talk about
``"clcc"`` or ``"cend"``, never about raw strings.  Profiles add their vendor URCs to
:data:`STANDARD`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# name -> regex (fullmatch on the stripped line).  Named groups become Urc.fields.
STANDARD: dict[str, str] = {
    "ring": r"RING",
    "cring": r"\+CRING: ?(?P<type>.*)",
    "clip": r"\+CLIP: ?(?P<rest>.*)",
    "no_carrier": r"NO CARRIER",
    "busy": r"BUSY",
    "no_answer": r"NO ANSWER",
    "no_dialtone": r"NO DIAL ?TONE",
    # Voice modems that report the answer as an unsolicited CONNECT (with a rate on some) and
    # the end as HANGUP (ZTE, older Huawei firmware); a CONNECT that answers a command is that
    # command's final result, never this URC (probe.at.router).
    "connect": r"CONNECT(?: (?P<rate>\d+))?",
    "hangup": r"HANGUP(?:: ?(?P<id>\d+))?",
    "clcc": r"\+CLCC: ?(?P<id>\d+),(?P<dir>\d),(?P<stat>\d+),(?P<mode>\d+),(?P<mpty>\d)"
            r"(?P<rest>.*)",
    "creg": r"\+C(?P<domain>G|E)?REG: ?(?P<stat>\d)(?P<rest>(?:,\"?[0-9A-Fa-f]*\"?)*(?:,\d+)?)",
    "cpin": r"\+CPIN: ?(?P<state>.+)",
    "cfun": r"\+CFUN: ?(?P<fun>\d+)",
    "colp": r"\+COLP: ?(?P<rest>.*)",
    "ciev": r"\+CIEV: ?(?P<rest>.*)",
    "cmti": r"\+CMTI: ?(?P<rest>.*)",
    "cusd": r"\+CUSD: ?(?P<rest>.*)",
    "ready": r"RDY|Call Ready|SMS Ready|PB DONE|\+QIND: (?:PB|SMS) DONE|READY",
    "power": r"UNDER-VOLTAGE (?:WARNNING|WARNING|POWER DOWN)|OVER-VOLTAGE.*|NORMAL POWER DOWN",
}


@dataclass(frozen=True, slots=True)
class Urc:
    """One unsolicited event, stamped when its line (or DLE code) arrived.

    ``name`` is the table's name, ``"dle"`` for a V.253 DLE code (``text`` is the code),
    ``"stream_end"`` when a sample stream ended, ``"unknown"`` for an unsolicited line no
    pattern knows (kept, logged, never an error), ``"gone"`` when the port went away.
    """

    name: str
    text: str
    t_ns: int
    fields: dict[str, Any] = field(default_factory=dict)


class UrcTable:
    """Ordered named patterns; the first match wins."""

    def __init__(self, patterns: Iterable[tuple[str, str]]) -> None:
        self._patterns = [(name, re.compile(rx)) for name, rx in patterns]

    @classmethod
    def with_extra(cls, extra: dict[str, str] | None = None) -> UrcTable:
        """Vendor patterns first (they are more specific), then the standard ones."""
        return cls([*(extra or {}).items(), *STANDARD.items()])

    def match(self, text: str) -> tuple[str, dict[str, Any]] | None:
        for name, rx in self._patterns:
            m = rx.fullmatch(text)
            if m:
                return name, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._patterns]
