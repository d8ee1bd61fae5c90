"""Modem audio into the call's WAV: 8 kHz, 16-bit, mono, like the SIP recorder's.

* :class:`WavSink` — thread-safe appender; ``u8()`` converts V.253 unsigned 8-bit linear
  samples (``AT+VSM=1,8000``), ``s16()`` takes little-endian signed 16-bit PCM as is.
* :class:`PcmReader` — one thread reading a modem's PCM voice port (SIM7600 USB interface 04,
  Quectel ``AT+QPCMV=1,0``, Huawei voice port) into a :class:`WavSink` while voice is on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import wave
from pathlib import Path

from probe.at.errors import ModemGone
from probe.at.port import Transport, open_url

log = logging.getLogger("probe.modem.audio")
RATE = 8000


class WavSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        self._wav: wave.Wave_write | None = wav
        self._lock = threading.Lock()
        self._odd = b""
        self.frames = 0

    def s16(self, data: bytes) -> None:
        with self._lock:
            data = self._odd + data
            cut = len(data) - len(data) % 2
            self._odd = data[cut:]
            if self._wav is not None and cut:
                self._wav.writeframes(data[:cut])
                self.frames += cut // 2

    def u8(self, data: bytes) -> None:
        pcm = b"".join(((b - 128) << 8).to_bytes(2, "little", signed=True) for b in data)
        self.s16(pcm)

    def close(self) -> None:
        with self._lock:
            if self._wav is not None:
                self._wav.close()
                self._wav = None


class PcmReader:
    """Reads ``url`` into ``sink`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, url: str, sink: WavSink, *, baud: int = 115200) -> None:
        self.url = url
        self.sink = sink
        self.baud = baud
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
                self.sink.s16(data)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None
