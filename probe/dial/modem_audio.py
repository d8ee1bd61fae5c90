"""Modem audio into the call's WAV: 8 kHz, 16-bit, mono, like the SIP recorder's.

* :class:`WavSink` — thread-safe appender; ``u8()`` converts V.253 unsigned 8-bit linear
  samples (``AT+VSM=1,8000``), ``s16()`` takes little-endian signed 16-bit PCM as is.
* :class:`PcmReader` — one thread reading a modem's PCM voice port (SIM7600 USB interface 04,
  Quectel ``AT+QPCMV=1,0``, Huawei voice port) into a :class:`WavSink` while voice is on.
* :class:`AlsaRecorder` — ``arecord`` (Debian ``alsa-utils``) on an ALSA capture device, for
  modems that give no audio of their own (SIM800 and generic modems wired to a USB sound card,
  ``alsa_device`` in ``[modems.*]``): started before ``ATD``, stopped at the end of the call.
* :func:`hear_answer` — where the network may through-connect at ringback (SIMCom A76xx on LTE
  CS fallback), the recording says when the far end really answered: the ringback stops and
  speech starts.

First sample on the monotonic clock
-----------------------------------
Readers stamp every read with ``clock()`` on arrival.  A read that brings the stream up to
``n`` samples says the first sample was captured at ``arrival - n / 8000`` *or earlier* (data
is only ever late, never early); the smallest such bound is the estimate
(:class:`FirstSample`), never earlier than the capture was started.  Over a call the
least-delayed read wins, so scheduling jitter of the reader does not move the stamp.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from probe.at.errors import ModemGone
from probe.at.port import Transport, open_url

log = logging.getLogger("probe.modem.audio")
RATE = 8000
ARECORD = "arecord"


class FirstSample:
    """Monotonic-clock estimate of a stream's first sample (see the module docstring)."""

    def __init__(self, rate: int = RATE, width: int = 2) -> None:
        self.rate = rate
        self.width = width
        self.bytes = 0
        self.ns: int | None = None
        self.not_before: int | None = None  # when the capture was started

    def arrived(self, size: int, t_ns: int) -> None:
        self.bytes += size
        bound = t_ns - (self.bytes // self.width) * 1_000_000_000 // self.rate
        if self.not_before is not None:
            bound = max(bound, self.not_before)  # a device faster than real time (null)
        if self.ns is None or bound < self.ns:
            self.ns = bound


class WavSink:
    """The call's WAV.  A file that cannot be written (a full disk) ends the recording where
    the disk did, never the call: ``error`` says why, ``frames`` how much was kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wav: wave.Wave_write | None = None
        self._lock = threading.Lock()
        self._odd = b""
        self.frames = 0
        self.error: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            self._failed(exc)
            return
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        self._wav = wav

    def s16(self, data: bytes) -> None:
        with self._lock:
            data = self._odd + data
            cut = len(data) - len(data) % 2
            self._odd = data[cut:]
            if self._wav is not None and cut:
                try:
                    self._wav.writeframes(data[:cut])
                except OSError as exc:  # the reader thread and the call go on without it
                    self._failed(exc)
                    return
                self.frames += cut // 2

    def u8(self, data: bytes) -> None:
        pcm = b"".join(((b - 128) << 8).to_bytes(2, "little", signed=True) for b in data)
        self.s16(pcm)

    def close(self) -> None:
        with self._lock:
            if self._wav is not None:
                try:
                    self._wav.close()
                except OSError as exc:  # the header's sizes could not be written
                    self._failed(exc)
                self._wav = None

    def _failed(self, exc: OSError) -> None:
        """Stop recording (once): what the disk took stays, the rest of the call is not kept."""
        if self.error is None:
            self.error = f"{self.path}: {exc.strerror or exc}"
            log.warning("recording cut after %d frames: %s", self.frames, self.error)
        wav, self._wav = self._wav, None
        if wav is not None:
            with contextlib.suppress(OSError):  # wave still holds the file: let it go
                wav.close()


class PcmReader:
    """Reads ``url`` into ``sink`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, url: str, sink: WavSink, *, baud: int = 115200,
                 clock: Callable[[], int] | None = None) -> None:
        import time

        self.url = url
        self.sink = sink
        self.baud = baud
        self.clock = clock or time.monotonic_ns
        self.first = FirstSample()
        self._port: Transport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def open(self) -> None:
        """Open the port before the call (reading starts at :meth:`start`)."""
        try:
            self._port = open_url(self.url, self.baud)
        except ModemGone as exc:
            self.error = str(exc)
            log.warning("audio port: %s", exc)

    def start(self) -> None:
        if self._port is None or self._thread is not None:
            return
        self.first.not_before = self.clock()
        self._thread = threading.Thread(target=self._run, name="modem-pcm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        port = self._port
        assert port is not None
        while not self._stop.is_set():
            try:
                data = port.read(1)
                if data and port.in_waiting:
                    data += port.read(port.in_waiting)
            except Exception as exc:  # unplugged mid-call: the WAV keeps what came
                self.error = str(exc)
                return
            if data:
                self.first.arrived(len(data), self.clock())
                self.sink.s16(data)

    def stop(self) -> None:
        self._stop.set()
        cancel = getattr(self._port, "cancel_read", None)  # pyserial: wake the reader now
        if cancel is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                cancel()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None


class AlsaRecorder:
    """``arecord`` capturing ``device`` (``hw:1,0``, ``plughw:CARD=Device,DEV=0``...) as raw
    8 kHz S16_LE mono on a pipe, into ``sink``; every read is stamped (:class:`FirstSample`).

    ``max_s`` bounds the capture inside arecord itself (``-d``): if the probe died without
    stopping it, arecord still ends.  :meth:`stop` is idempotent and always reaps the process:
    SIGINT (arecord closes the device cleanly), SIGKILL if it has not exited within a second.
    """

    def __init__(self, device: str, sink: WavSink, *, max_s: int,
                 clock: Callable[[], int] | None = None, binary: str = ARECORD) -> None:
        import time

        self.device = device
        self.sink = sink
        self.max_s = max(1, int(max_s))
        self.clock = clock or time.monotonic_ns
        self.binary = binary
        self.first = FirstSample()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.returncode: int | None = None
        self._stopping = False
        self.running = threading.Event()  # the first samples arrived
        self._lock = threading.Lock()
        self._held = bytearray()  # samples captured before the dial, until begin_at()
        self.origin_ns: int | None = None
        self.dropped = 0  # samples captured before the dial, left out of the WAV

    @property
    def command(self) -> list[str]:
        return [self.binary, "-q", "-D", self.device, "-t", "raw", "-f", "S16_LE", "-r",
                str(RATE), "-c", "1", "--period-time=20000", "--buffer-time=200000",
                "-d", str(self.max_s)]

    def start(self) -> None:
        if self.proc is not None:
            return
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.first.not_before = self.clock()
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self._stderr,
                                         start_new_session=True)
        except OSError as exc:  # no arecord: alsa-utils not installed
            self.error = f"cannot run {self.binary}: {exc.strerror or exc}"
            log.warning("ALSA capture %s: %s", self.device, self.error)
            self._stderr.close()
            self._stderr = None
            return
        self._thread = threading.Thread(target=self._run, name="alsa-capture", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _run(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 8192)
            except OSError as exc:
                self.error = self.error or str(exc)
                return
            if not data:
                return  # arecord exited (stopped, -d reached, or failed)
            self.first.arrived(len(data), self.clock())
            with self._lock:
                if self.origin_ns is None:
                    self._held += data
                else:
                    self.sink.s16(data)
            self.running.set()

    def begin_at(self, t_ns: int) -> None:
        """The call starts at ``t_ns`` (the ATD write): the WAV starts there too; what was
        captured before it is left out."""
        with self._lock:
            if self.origin_ns is not None:
                return
            data = bytes(self._held)
            self._held.clear()
            if self.first.ns is not None:
                early = -(-(t_ns - self.first.ns) * RATE // 1_000_000_000)  # ceil
                self.dropped = max(0, min(early, len(data) // 2))
                data = data[self.dropped * 2:]
            self.origin_ns = t_ns
            self.sink.s16(data)

    @property
    def first_sample_ns(self) -> int | None:
        """The WAV's first sample on the monotonic clock (after :meth:`begin_at`)."""
        if self.first.ns is None:
            return None
        return self.first.ns + self.dropped * 1_000_000_000 // RATE

    def wait_running(self, timeout_s: float) -> bool:
        """Wait until samples flow (device open, first period captured), at most
        ``timeout_s``; False when they do not (the call goes on without waiting more)."""
        if self.proc is None:
            return False
        return self.running.wait(timeout_s)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or self._stopping:
            return
        self._stopping = True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                log.warning("arecord (pid %d) ignored SIGINT: killed", proc.pid)
                proc.kill()
                proc.wait()
        elif proc.returncode != 0:  # it ended by itself before the call did: a failure
            self.error = self.error or f"arecord exited with status {proc.returncode}"
        self.returncode = proc.returncode
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            if self.origin_ns is None:  # never dialled: keep what there is
                self.origin_ns = self.first.ns or 0
                self.sink.s16(bytes(self._held))
                self._held.clear()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read(2000).decode(errors="replace").strip()
            self._stderr.close()
            self._stderr = None
            if text and (self.error or not self.first.bytes):
                self.error = (f"arecord -D {self.device}: {text.splitlines()[-1]} "
                              f"({self.error or 'no samples'})")
        if self.error or not self.first.bytes:
            log.warning("ALSA capture %s: %s", self.device, self.error or "no samples")


@dataclass(frozen=True)
class AnswerCheck:
    """What the recording says about the answer (see :func:`hear_answer`)."""

    confirmed: bool | None  # True: speech; False: ringback to the end; None: cannot tell
    through_connected: bool  # ringback heard after the modem said "answered"
    answer_ns: int | None  # monotonic: speech onset after the last ringback burst
    ringback_end_ns: int | None
    ringback_bursts: int


RINGBACK_MIN_S = 0.3  # shorter steady tones are not counted as ringback bursts
TC_MARGIN_S = 0.1  # ringback must outlast the UART's answer by this much


def hear_answer(path: Path, first_sample_ns: int, uart_answer_ns: int, *,
                use_model: bool = True) -> AnswerCheck:
    """Did the far end answer, and when?  For modems that may say "answered" at ringback.

    Ringback bursts are the steady-tone segments (:mod:`probe.audio.tones`) of at least
    :data:`RINGBACK_MIN_S` whose components fit the ringback tone of any country's plan
    (:func:`probe.audio.progress.tone_score`; the cadence cannot be checked on one or two
    bursts, the frequency can).  Speech is :func:`probe.audio.speech.detect_speech` with every
    steady tone masked.  The answer is the start of the first speech after the last ringback
    burst.  Ringback heard after the UART's answer means the network through-connected.
    """
    import numpy as np

    from probe.audio.frames import analyse_frames
    from probe.audio.plans import all_specs
    from probe.audio.progress import tone_score
    from probe.audio.speech import detect_speech
    from probe.audio.tones import find_tone_segments
    from probe.audio.wavio import load_for_analysis

    x = load_for_analysis(path).samples
    frames = analyse_frames(x)
    segments = find_tone_segments(x, frames)
    tones = {spec.tone.expr: spec.tone for spec in all_specs() if spec.kind == "ringback"}
    ringback = [seg for seg in segments if seg.duration >= RINGBACK_MIN_S
                and any(tone_score(seg, tone) is not None for tone in tones.values())]
    mask = np.zeros(frames.count, bool)
    for seg in segments:
        mask[frames.index(seg.start):frames.index(seg.end) + 1] = True
    speech = detect_speech(x, frames, mask, use_model=use_model)
    uart_s = (uart_answer_ns - first_sample_ns) / 1e9
    last_end = max((seg.end for seg in ringback), default=None)
    through = any(seg.end > uart_s + TC_MARGIN_S for seg in ringback)
    after = [sp for sp in speech.segments if last_end is None or sp.end > last_end]
    onset = None if not after else max(after[0].start, last_end or 0.0)
    if through:
        confirmed: bool | None = onset is not None
    else:
        confirmed = True if speech.segments else None
    return AnswerCheck(
        confirmed=confirmed, through_connected=through,
        answer_ns=first_sample_ns + round(onset * 1e9) if onset is not None and through
        else None,
        ringback_end_ns=first_sample_ns + round(last_end * 1e9) if last_end is not None
        else None,
        ringback_bursts=len(ringback))
