"""Framing: bytes from the port -> lines (and V.253 DLE events), each stamped on arrival.

Modems end lines with CR LF, SIMCom sometimes with CR CR LF, an echoed command ends with a bare
CR.  So CR or LF ends a line and empty lines are dropped::

    bytes   \\r \\n + C L C C : ... \\r \\r \\n O K \\r \\n
    lines         "+CLCC: ..."              "OK"

In V.253 voice mode (``dle=True``) the modem also sends DLE-shielded event codes (DLE = 0x10)
outside any line: ``<DLE>r`` ringback, ``<DLE>b`` busy, ``<DLE>d`` dial tone...  During a sample
stream (``AT+VRX`` then ``CONNECT``) every byte is audio except: ``DLE DLE`` = one 0x10 sample
byte, ``DLE ETX`` = end of the stream, ``DLE <x>`` = event ``x``.

:class:`Framer` is pure: the reader thread stamps each chunk with the monotonic clock when the
read returns and passes the stamp in, so a line's ``t_ns`` is when its terminator arrived (give
or take the read that carried it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

DLE, ETX = 0x10, 0x03
MAX_LINE = 4096  # a line longer than this (line noise, no terminator) is cut and handed on


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    t_ns: int


@dataclass(frozen=True, slots=True)
class DleEvent:
    code: str  # one character: "r" ringback, "b" busy, "d" dial tone, "s" silence, ...
    t_ns: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    t_ns: int


Item = Line | DleEvent | StreamEnd


class Framer:
    """Bytes in, :class:`Line`/:class:`DleEvent`/:class:`StreamEnd` out.

    >>> f = Framer()
    >>> [i.text for i in f.feed(b"AT\\r\\r\\nOK\\r", 1)]
    ['AT']
    >>> [i.text for i in f.feed(b"\\n", 2)]
    ['OK']
    """

    def __init__(self, *, dle: bool = False, max_line: int = MAX_LINE) -> None:
        self.dle = dle
        self.max_line = max_line
        self._buf = bytearray()
        self._after_dle = False
        self._sink: Callable[[bytes], None] | None = None

    @property
    def streaming(self) -> bool:
        return self._sink is not None

    def start_stream(self, sink: Callable[[bytes], None]) -> None:
        """From the next byte on, bytes are samples for ``sink`` until ``DLE ETX``."""
        self._sink = sink

    def feed(self, data: bytes, t_ns: int) -> Iterator[Item]:
        """Items completed by ``data``, lazily: the consumer may call :meth:`start_stream`
        between two items and the rest of the same chunk is then read as samples."""
        i, n = 0, len(data)
        while i < n:
            if self._sink is not None:
                i, item = self._stream(data, i, t_ns)
                if item is not None:
                    yield item
                continue
            byte = data[i]
            i += 1
            if self._after_dle:
                self._after_dle = False
                if byte != DLE:
                    yield DleEvent(chr(byte), t_ns)
                continue
            if self.dle and byte == DLE:
                self._after_dle = True
            elif byte in (0x0D, 0x0A):
                if self._buf:
                    yield self._line(t_ns)
            elif byte != 0:
                self._buf.append(byte)
                if len(self._buf) >= self.max_line:
                    yield self._line(t_ns)

    def _line(self, t_ns: int) -> Line:
        text = self._buf.decode("ascii", errors="replace").strip()
        self._buf.clear()
        return Line(text, t_ns)

    def _stream(self, data: bytes, i: int, t_ns: int) -> tuple[int, Item | None]:
        """Consume sample bytes from ``data[i:]`` up to the next DLE code; one item at most."""
        sink = self._sink
        assert sink is not None
        if self._after_dle:
            self._after_dle = False
            code = data[i]
            if code == DLE:
                sink(b"\x10")
                return i + 1, None
            if code == ETX:
                self._sink = None
                return i + 1, StreamEnd(t_ns)
            return i + 1, DleEvent(chr(code), t_ns)
        j = data.find(DLE, i)
        if j < 0:
            sink(data[i:])
            return len(data), None
        if j > i:
            sink(data[i:j])
        self._after_dle = True
        return j + 1, None


def dle_escape(samples: bytes) -> bytes:
    """Samples as a modem sends them in a stream: every 0x10 doubled."""
    return samples.replace(b"\x10", b"\x10\x10")
