"""Routing: every framed line goes to exactly one place — the command in flight, or the URCs.

The rules, in order, for a line that arrives while a command is in flight::

    echo of the command (before any response line)   -> dropped
    final result code for this command               -> ends the command
    line in the command's response form (+CSQ: ...)  -> the command's response
    line a URC pattern knows                         -> URC  (even mid-response)
    anything else                                    -> the command's response

``NO CARRIER``/``BUSY``/``NO ANSWER``/``NO DIALTONE`` are final results only for the commands
that place or take a call (``ATD``, ``ATA``, ``ATO``); during any other command they are the
URCs that say a call ended.  ``CONNECT`` likewise ends only those and the commands that start a
stream (V.253 ``AT+VRX``, ``AT+VTX``, ``AT+VTR``): a voice modem that reports the answer as an
unsolicited ``CONNECT`` must not end an ``AT+CLCC`` poll in flight with it.  With no command
in flight every line is a URC (``"unknown"`` when no pattern knows it).  Pure: the reader
thread drives it; tests drive it byte by byte.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from probe.at.lines import DleEvent, Framer, Line, StreamEnd
from probe.at.urc import Urc, UrcTable

SUCCESS = re.compile(r"OK|VCON")
CONNECT = re.compile(r"CONNECT(?: .*)?")
ERROR = re.compile(r"ERROR|COMMAND NOT SUPPORT|\+CM[ES] ERROR: ?.*")
CALL_FINAL = re.compile(r"NO CARRIER|BUSY|NO ANSWER|NO DIAL ?TONE")
CALL_COMMAND = re.compile(r"AT\s*[DAO]", re.IGNORECASE)
STREAM_COMMAND = re.compile(r"AT\s*\+V(?:RX|TX|TR)\b", re.IGNORECASE)
_PREFIX = re.compile(r"AT\s*([+^$#%][A-Za-z0-9]+)", re.IGNORECASE)
_FIELD2_BARE = re.compile(r"[^,]*,\s*\d+(?:,.*)?")


def response_prefix(command: str) -> str | None:
    """``AT+CSQ`` -> ``+CSQ:``, ``AT^SYSINFO`` -> ``^SYSINFO:``; None for basic commands."""
    m = _PREFIX.match(command)
    return f"{m[1].upper()}:" if m else None


def registration_response(text: str) -> bool:
    """``+CREG: <n>,<stat>[,...]`` (response: 2nd field a bare number) vs the URC
    ``+CREG: <stat>[,"<lac>","<ci>"[,<act>]]`` (2nd field quoted, or absent)."""
    body = text.split(":", 1)[1] if ":" in text else ""
    return bool(_FIELD2_BARE.fullmatch(body.strip()))


# Response forms that a URC shares a prefix with: only lines passing the check are responses.
RESPONSE_FORMS: dict[str, Callable[[str], bool]] = {
    "+CREG:": registration_response,
    "+CGREG:": registration_response,
    "+CEREG:": registration_response,
}


@dataclass
class Pending:
    """One command on the wire, waiting for its final result."""

    command: str
    prefix: str | None = None
    accept: Callable[[str], bool] | None = None
    stream_sink: Callable[[bytes], None] | None = None  # CONNECT starts a sample stream
    lines: list[Line] = field(default_factory=list)
    final: Line | None = None
    sent_ns: int | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _echo_seen: bool = False

    def __post_init__(self) -> None:
        if self.prefix is None:
            self.prefix = response_prefix(self.command)
        if self.accept is None and self.prefix is not None:
            form = RESPONSE_FORMS.get(self.prefix)
            prefix = self.prefix
            self.accept = ((lambda t: t.upper().startswith(prefix) and form(t)) if form
                           else (lambda t: t.upper().startswith(prefix)))
        self.call = bool(CALL_COMMAND.match(self.command))
        self.connects = self.call or bool(STREAM_COMMAND.match(self.command))

    def is_final(self, text: str) -> bool:
        return bool(SUCCESS.fullmatch(text) or ERROR.fullmatch(text)
                    or (self.call and CALL_FINAL.fullmatch(text))
                    or (self.connects and CONNECT.fullmatch(text)))

    def is_echo(self, text: str) -> bool:
        return _squash(text) == _squash(self.command)


def _squash(text: str) -> str:
    return "".join(text.split()).upper()


class Router:
    """Feeds a :class:`Framer`, hands lines to :attr:`pending` or to ``on_urc``."""

    def __init__(self, urcs: UrcTable, on_urc: Callable[[Urc], None], *,
                 dle: bool = False) -> None:
        self.urcs = urcs
        self.on_urc = on_urc
        self.framer = Framer(dle=dle)
        self.pending: Pending | None = None
        self.lock = threading.Lock()  # guards pending between the reader and command callers

    def feed(self, data: bytes, t_ns: int) -> None:
        for item in self.framer.feed(data, t_ns):
            if isinstance(item, Line):
                if item.text:
                    with self.lock:
                        self._line(item)
            elif isinstance(item, DleEvent):
                self.on_urc(Urc("dle", item.code, item.t_ns))
            elif isinstance(item, StreamEnd):
                self.on_urc(Urc("stream_end", "", item.t_ns))

    def _line(self, line: Line) -> None:
        text = line.text
        p = self.pending
        if p is not None:
            if not p._echo_seen and not p.lines and p.is_echo(text):
                p._echo_seen = True  # echo on (ATE1): the command comes back first
                return
            if p.is_final(text):
                p.final = line
                self.pending = None
                if p.stream_sink is not None and text.startswith("CONNECT"):
                    self.framer.start_stream(p.stream_sink)
                p.done.set()
                return
            if p.accept is not None and p.accept(text):
                p.lines.append(line)
                return
        known = self.urcs.match(text)
        if known is not None:
            self.on_urc(Urc(known[0], text, line.t_ns, known[1]))
        elif p is not None:
            p.lines.append(line)
        else:
            self.on_urc(Urc("unknown", text, line.t_ns))
