"""The AT port: one reader thread, a FIFO of commands with per-command timeouts, URCs to a queue.

::

    caller threads ── command() ──► FIFO ──► write "AT...\\r" (t = write completed)
                                              │
    transport ──► reader thread: read, stamp monotonic ns ──► Router ──► the command's response
                                                                     └─► urcs (queue.Queue[Urc])

The reader never blocks on anything but the transport; callers never read the transport.
The transport is injected (pyserial ``Serial`` or anything with ``read(n)``, ``write(b)``,
``in_waiting``, ``flush()``, ``close()``); :func:`open_url` opens one from a pyserial URL.

Example (the emulator stands in for a modem)::

    with AtPort(open_url(url)) as at:
        at.command("ATE0")
        rssi = at.command("AT+CSQ").first("+CSQ:")     # "+CSQ: 20,99"
        urc = at.urcs.get(timeout=5)                    # Urc("clcc", "+CLCC: 1,0,3,...", t_ns)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from probe.at.errors import CmeError, CmsError, CommandFailed, ModemGone, ModemTimeout, redact
from probe.at.lines import Line
from probe.at.router import Pending, Router
from probe.at.urc import Urc, UrcTable

log = logging.getLogger("probe.at")

READ_TIMEOUT_S = 0.05  # bounds how long close() waits for the reader, not event stamps
#: Unsolicited results kept while nobody reads them (the port stays open between calls): a
#: chatty or broken modem must not grow memory without limit.  Far more than a call produces.
URC_QUEUE_MAX = 1000


class Transport(Protocol):
    in_waiting: int

    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def open_url(url: str, baud: int = 115200) -> Transport:
    """Open a pyserial URL (``/dev/ttyUSB2``, ``rfc2217://h:p``, ``loop://``, ``spy://...``).

    Raises :class:`ModemGone` when the port does not exist or cannot be opened (unplugged,
    re-enumerating, held by ModemManager)."""
    import termios

    import serial  # imported here: nothing opens a port at import time

    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=READ_TIMEOUT_S,
                                     write_timeout=2.0, exclusive=True)
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        # termios.error: unplugged between pyserial's open() and its tcsetattr/tcflush, which
        # pyserial does not wrap (and termios.error is no OSError).
        raise ModemGone(f"cannot open {url}: {exc}") from exc


@dataclass(frozen=True)
class Response:
    command: str
    lines: list[Line]
    final: str
    sent_ns: int  # monotonic ns when the command's write completed
    final_ns: int

    @property
    def text(self) -> list[str]:
        return [line.text for line in self.lines]

    def first(self, prefix: str) -> str | None:
        """The payload of the first line starting with ``prefix`` (prefix stripped)."""
        for line in self.lines:
            if line.text.upper().startswith(prefix.upper()):
                return line.text[len(prefix):].strip()
        return None

    def all(self, prefix: str) -> list[str]:
        return [line.text[len(prefix):].strip() for line in self.lines
                if line.text.upper().startswith(prefix.upper())]


class AtPort:
    """An AT modem on ``transport``; see the module docstring."""

    def __init__(self, transport: Transport, *, urcs: UrcTable | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, dle: bool = False,
                 name: str = "modem", urc_queue_max: int = URC_QUEUE_MAX) -> None:
        self.transport = transport
        self.clock = clock
        self.name = name
        self.urcs: queue.Queue[Urc] = queue.Queue(maxsize=urc_queue_max)
        self.urcs_dropped = 0  # the oldest unread URCs dropped to keep the queue bounded
        self.router = Router(urcs or UrcTable.with_extra(), self._on_urc, dle=dle)
        self.gone: BaseException | None = None
        self._fifo: deque[Pending] = deque()
        self._fifo_cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self.listeners: list[Callable[[Urc], None]] = []
        self.bytes_read = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> AtPort:
        self._reader = threading.Thread(target=self._read_loop, name=f"at-reader-{self.name}",
                                        daemon=True)
        self._reader.start()
        return self

    def close(self) -> None:
        self._stop.set()
        cancel = getattr(self.transport, "cancel_read", None)  # pyserial: wake the reader now
        if cancel is not None:
            with contextlib.suppress(Exception):
                cancel()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        with contextlib.suppress(Exception):  # closing a vanished port may fail: it is gone
            self.transport.close()

    def __enter__(self) -> AtPort:
        return self.start() if self._reader is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------
    def command(self, command: str, timeout: float = 5.0, *, check: bool = True,
                prefix: str | None = None, accept: Callable[[str], bool] | None = None,
                stream_sink: Callable[[bytes], None] | None = None,
                queue_timeout: float = 30.0) -> Response:
        """Send ``command`` (CR appended) and wait for its final result.

        ``timeout`` counts from when the write completed.  With ``check`` (default) a final
        result other than OK/CONNECT raises :class:`CommandFailed` (:class:`CmeError`,
        :class:`CmsError`); the response is returned either way otherwise.
        """
        pending = self.submit(command, queue_timeout=queue_timeout, stream_sink=stream_sink,
                              prefix=prefix, accept=accept)
        return self.finish(pending, timeout, check=check)

    def use(self, urcs: UrcTable, *, dle: bool | None = None) -> None:
        """Switch the URC table (after the profile is known) and V.253 DLE shielding."""
        with self.router.lock:
            self.router.urcs = urcs
            if dle is not None:
                self.router.framer.dle = dle

    def submit(self, command: str, *, queue_timeout: float = 30.0,
               stream_sink: Callable[[bytes], None] | None = None, prefix: str | None = None,
               accept: Callable[[str], bool] | None = None) -> Pending:
        """Send ``command`` and return at once; :meth:`finish` waits for its final result.

        For commands whose final result takes long (V.253 ``ATD`` waits for the answer):
        the caller keeps handling URCs meanwhile.  No other command is sent until
        :meth:`finish` (the FIFO stays held)."""
        pending = Pending(command, prefix=prefix, accept=accept, stream_sink=stream_sink)
        self._enter_fifo(pending, queue_timeout)
        try:
            self._send(pending)
        except BaseException:
            self._leave_fifo(pending)
            raise
        return pending

    def finish(self, pending: Pending, timeout: float, *, check: bool = False) -> Response:
        """Wait up to ``timeout`` for a submitted command's final result, then release it."""
        try:
            if not pending.done.wait(timeout):
                with self.router.lock:
                    if self.router.pending is pending:
                        self.router.pending = None
                if pending.final is None:
                    self._check_alive()
                    raise ModemTimeout(pending.command, timeout)
        finally:
            self._leave_fifo(pending)
        if pending.final is None:
            raise ModemGone(f"{self.name}: port lost during {redact(pending.command)!r}: "
                            f"{self.gone}")
        assert pending.sent_ns is not None
        response = Response(pending.command, pending.lines, pending.final.text,
                            pending.sent_ns, pending.final.t_ns)
        if check:
            raise_for(response)
        return response

    def write_raw(self, data: bytes) -> int:
        """Write bytes outside any command (``<DLE>!`` to stop a stream); the write's t_ns."""
        self._check_alive()
        with self._write_lock:
            self._write(data)
            return self.clock()

    def _enter_fifo(self, pending: Pending, queue_timeout: float) -> None:
        self._check_alive()
        with self._fifo_cond:
            self._fifo.append(pending)
            ok = self._fifo_cond.wait_for(lambda: self._fifo[0] is pending, queue_timeout)
            if not ok:
                self._fifo.remove(pending)
                self._fifo_cond.notify_all()
                raise ModemTimeout(pending.command, queue_timeout)

    def _leave_fifo(self, pending: Pending) -> None:
        with self._fifo_cond:
            if pending in self._fifo:
                self._fifo.remove(pending)
            self._fifo_cond.notify_all()

    def _send(self, pending: Pending) -> None:
        self._check_alive()
        with self.router.lock:
            self.router.pending = pending  # before the write: an instant answer is not missed
        data = (pending.command + "\r").encode("ascii")
        with self._write_lock:
            try:
                self._write(data)
            except ModemGone:
                with self.router.lock:
                    self.router.pending = None
                raise
            pending.sent_ns = self.clock()

    def _write(self, data: bytes) -> None:
        import termios

        import serial

        try:
            self.transport.write(data)
            self.transport.flush()
        except (serial.SerialException, OSError, termios.error) as exc:
            # termios.error (no OSError): unplugged after the write went out and before
            # pyserial's flush() (tcdrain) returned: the port is as gone as on a failed write.
            self._lost(exc)
            raise ModemGone(f"{self.name}: write failed: {exc}") from exc

    def _check_alive(self) -> None:
        if self.gone is not None:
            raise ModemGone(f"{self.name}: port lost: {self.gone}")

    # -- the reader -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        import serial

        transport = self.transport
        while not self._stop.is_set():
            try:
                data = transport.read(1)
                if data:
                    waiting = transport.in_waiting
                    if waiting:
                        data += transport.read(waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # pyserial on unplug: "device reports readiness to read but returned no
                # data"; TypeError/AttributeError: pyserial internals after close().
                if not self._stop.is_set():
                    self._lost(exc)
                return
            if not data:
                continue
            t_ns = self.clock()
            self.bytes_read += len(data)
            try:
                self.router.feed(data, t_ns)
            except Exception:  # a parser bug must not kill the only reader silently
                log.exception("%s: routing %s failed", self.name, redact(repr(data[:64])))

    def _lost(self, exc: BaseException) -> None:
        if self.gone is not None:
            return
        self.gone = exc
        log.warning("%s: port lost: %s", self.name, exc)
        with self.router.lock:
            pending, self.router.pending = self.router.pending, None
        if pending is not None:
            pending.done.set()
        self._on_urc(Urc("gone", str(exc), self.clock()))

    def _on_urc(self, urc: Urc) -> None:
        if urc.name == "unknown":  # a late echo of AT+CPIN="..." lands here: redacted
            log.debug("%s: unsolicited %r", self.name, redact(urc.text))
        self._enqueue(urc)
        for listener in self.listeners:
            listener(urc)

    def _enqueue(self, urc: Urc) -> None:
        """Queue ``urc``; when full, drop the oldest: the newest says what the modem is doing
        now (and "gone" must always get through).  Only the reader thread puts."""
        while True:
            try:
                self.urcs.put_nowait(urc)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):  # a reader may have emptied it meanwhile
                    self.urcs.get_nowait()
                    self.urcs_dropped += 1
                    if self.urcs_dropped in (1, 10, 100) or self.urcs_dropped % 10_000 == 0:
                        log.warning("%s: %d unread unsolicited results dropped (queue of %d "
                                    "full)", self.name, self.urcs_dropped, self.urcs.maxsize)

    def drain_urcs(self) -> list[Urc]:
        out: list[Urc] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.urcs.get_nowait())
        return out


def raise_for(response: Response) -> None:
    final = response.final
    if final == "OK" or final.startswith("CONNECT") or final == "VCON":
        return
    for kind, cls in (("+CME ERROR:", CmeError), ("+CMS ERROR:", CmsError)):
        if final.upper().startswith(kind):
            detail = final[len(kind):].strip()
            code = int(detail) if detail.isdigit() else None
            raise cls(response.command, final, code, detail)
    raise CommandFailed(response.command, final)


def fields(payload: str) -> list[Any]:
    """``1,0,"abc",129`` -> ``[1, 0, "abc", 129]`` (numbers as int, quotes removed)."""
    out: list[Any] = []
    for raw in _split_quoted(payload):
        item = raw.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            out.append(item[1:-1])
        elif item.lstrip("-").isdigit():
            out.append(int(item))
        else:
            out.append(item)
    return out


def _split_quoted(payload: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in payload:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts
