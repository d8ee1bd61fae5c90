"""The daemon's local control socket: ``probe call`` hands its call to a running daemon.

While ``probe run`` holds the SIP port and the modems, a second process could not place a call
(pjsip: "Address already in use"; the modem port is locked).  So the daemon listens on a Unix
socket, ``[probe] control_socket`` (default ``<state_dir>/control.sock``, mode 0660 inside the
0750 state directory: the probe's user and group may command it), and ``probe call`` tries it
first.  The daemon places the call on its own line — after the call in progress, if any — and
publishes its result as it does every result.

One request per connection, one JSON line::

    {"command": "run", "args": {"target": "support", "channel": "sip"}}

answered with JSON lines until the final answer, then the daemon closes the connection::

    {"progress": {"name": "ringing", "text": "ringing after 0.05 s (180 Ringing)", "at_s": 0.05}}
    {"command": "run", "ok": true, "accepted": true}
    {"command": "run", "ok": true, "result": {...summary}, "document": {...the result}}

The commands, their checks and their answers are those of the MQTT command path (the same
:class:`~probe.uplink.commands.CommandHandler`); the socket adds the streamed progress and, for
``run``, the whole result document.  An answer with ``"accepted": true`` is the only one that
is not final.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.config.model import MAX_SOCKET_PATH
from probe.dial.progress import Progress, Step

if TYPE_CHECKING:
    from probe.uplink.commands import CommandHandler

log = logging.getLogger("probe.daemon.control")

SOCKET_MODE = 0o660
MAX_REQUEST = 8192  # bytes of the request line; a command's payload is at most 4096
REQUEST_TIMEOUT_S = 5.0  # the request line comes at once, or the connection is dropped
SEND_TIMEOUT_S = 10.0  # a requester that stops reading is dropped (its call goes on)
CONNECT_TIMEOUT_S = 5.0


class ControlSocketTaken(Exception):
    """Another daemon answers on the control socket already."""


def reachable(path: Path) -> bool:
    """Whether the path fits in a Unix socket address (the kernel's limit, 107 bytes)."""
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH


def _connect(path: Path) -> socket.socket | None:
    """A socket connected to the daemon on ``path``; None when none listens there (no file, a
    stale one, or a path too long to be a socket).  Other errors (PermissionError) propagate."""
    if not reachable(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def answers(path: Path) -> bool:
    """Whether a daemon is listening on ``path`` now (a stale socket file refuses)."""
    try:
        sock = _connect(path)
    except OSError:
        return False
    if sock is None:
        return False
    sock.close()
    return True


class ControlServer:
    """Accepts on the control socket in its thread; each connection is served by its own
    thread, which waits for the final answer (a call may wait minutes for its line)."""

    def __init__(self, path: Path, handler: CommandHandler) -> None:
        self.path = path
        self.handler = handler
        self.stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._sessions: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> ControlServer:
        """Listen; :class:`ControlSocketTaken` when a live daemon answers there already."""
        if answers(self.path):
            raise ControlSocketTaken(f"another probe daemon answers on {self.path}")
        self.path.unlink(missing_ok=True)  # a socket file left by a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(self.path))
            os.chmod(self.path, SOCKET_MODE)  # before listen(): no one connects before this
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        sock.settimeout(1.0)  # accept() wakes up to notice a stop
        self._inode = os.stat(self.path).st_ino
        self._sock = sock
        self.thread.start()
        log.info("control socket %s: probe call hands its calls to this daemon", self.path)
        return self

    def stop(self) -> None:
        """Stop listening; the answers already given (a call cut short by the stop) are sent
        first, each session closes within a second or two."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for session in self._sessions:
            session.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:  # only our own socket: a daemon started since may have taken the path
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        assert self._sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                log.exception("control socket: accept failed")
                continue
            session = threading.Thread(target=self._session, args=(conn,),
                                       name="control-session", daemon=True)
            session.start()
            self._sessions = [t for t in self._sessions if t.is_alive()] + [session]

    def _session(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(REQUEST_TIMEOUT_S)
            answers: queue.Queue[dict[str, Any]] = queue.Queue()
            try:
                name, args = _request(_read_line(conn))
            except (OSError, ValueError) as exc:
                answers.put({"ok": False, "reason": f"not a request: {exc}"})
            else:
                from probe.uplink.commands import Request

                # The handler and the line's worker only queue what they say (the worker is
                # inside the SIP stack's callbacks: a slow reader must never hold the call up);
                # this thread writes it out.
                self.handler.handle(
                    Request(name=name, sink=answers.put, document=True, origin="control socket",
                            progress=lambda step: answers.put({"progress": step.as_json()})),
                    json.dumps(args).encode())
            conn.settimeout(SEND_TIMEOUT_S)
            self._write(conn, answers)

    def _write(self, conn: socket.socket, answers: queue.Queue[dict[str, Any]]) -> None:
        """Send the answers as they come, up to the final one.  At a stop, a call not yet
        started never answers: closing the connection tells the requester."""
        while True:
            try:
                answer = answers.get(timeout=1.0)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:  # the requester left (Ctrl-C): the call goes on, unwatched
                return
            if "progress" not in answer and not answer.get("accepted"):
                return  # the final answer


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"request over {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0]


def _request(line: bytes) -> tuple[str, dict[str, Any]]:
    doc = json.loads(line)  # ValueError when it is not JSON
    if not isinstance(doc, dict) or not isinstance(doc.get("command"), str) \
            or not isinstance(doc.get("args", {}), dict):
        raise ValueError('expected {"command": "<name>", "args": {...}}')
    return doc["command"], doc.get("args", {})


# ----------------------------------------------------------------------------- the requester


def request(path: Path, command: str, args: dict[str, Any],
            progress: Progress | None = None) -> dict[str, Any] | None:
    """Send ``command`` to the daemon on ``path`` and return its final answer; None when no
    daemon listens there.  ``progress`` is told the steps the daemon streams meanwhile.

    :class:`PermissionError` when a daemon is there but this user may not command it."""
    connected = _connect(path)
    if connected is None:
        return None
    with connected as sock:
        sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        sock.settimeout(None)  # a call queued behind another may take minutes
        for line in sock.makefile("rb"):
            message = json.loads(line)
            if "progress" in message:
                if progress is not None:
                    progress(Step.from_json(message["progress"]))
            elif not message.get("accepted"):
                return dict(message)
    return {"ok": False, "reason": "the daemon closed the connection before the call ended "
            "(was it stopped?)"}
