"""Recordings for ops: what the caller heard on a failed or degraded call, bounded, compressed.

A result says *that* a call went wrong; its recording lets a person hear *how* (a wrong greeting,
dead air, a queue message).  After the result is committed, the daemon commits the recording as
a bulk outbox row (:meth:`probe.uplink.forwarder.Forwarder.submit_bulk`), so it survives outages and
power cuts like the result but never goes before it, for ``hotline-probe/v1/<probe-id>/recording``:

* payload: FLAC made by ``sox`` (lossless, about half of 8 kHz PCM); the WAV itself
  (``audio/wav``) when sox is missing or fails, logged once at warning;
* MQTT 5 Content Type ``audio/flac`` or ``audio/wav``; User Properties ``result_id`` (the
  result's UUID), ``duration_s`` (of the audio sent, e.g. "12.345") and ``truncated`` = "true"
  when only the first seconds fitted ``[mqtt] recording_max_kib``.  No Message Expiry Interval:
  a recording must not silently expire in the broker.

Only calls worth hearing are uploaded (:func:`worth_uploading`): the expectations were not met,
or the target's diagnosis is ``degraded`` or ``down``.
"""

from __future__ import annotations

import io
import logging
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from probe.uplink.mqtt import RECORDING

log = logging.getLogger("probe.results.recording")

FLAC = "audio/flac"
WAV = "audio/wav"
SOX_TIMEOUT_S = 30.0  # a minute of 8 kHz audio takes milliseconds; a hung sox must not hang us
WAV_HEADER_BYTES = 44  # what Python's wave module writes before the frames (PCM, no extra chunks)
#: Verdicts of the diagnosis for which the recording goes to ops even if this call met its
#: expectations (another channel of the target failed, or the audio was poor).
UPLOAD_VERDICTS = frozenset({"degraded", "down"})
#: A first cut of a recording too long for the bound aims this far below it: the compressed
#: size is only roughly proportional to the duration.
_CUT_MARGIN = 0.95

_sox_warned = threading.Event()  # sox missing or failing is logged once at warning, then debug


class BulkSink(Protocol):
    def submit_bulk(self, leaf: str, payload: bytes, *, content_type: str,
                    user_properties: tuple[tuple[str, str], ...] = ()) -> int | None: ...


@dataclass(frozen=True)
class Recording:
    """One recording as it is published."""

    payload: bytes
    content_type: str  # FLAC or WAV
    duration_s: float  # of the audio in ``payload``
    truncated: bool  # only the first ``duration_s`` of a longer recording fitted the bound

    def user_properties(self, result_id: str) -> tuple[tuple[str, str], ...]:
        props = [("result_id", result_id), ("duration_s", f"{self.duration_s:.3f}")]
        if self.truncated:
            props.append(("truncated", "true"))
        return tuple(props)


@dataclass(frozen=True)
class _Pcm:
    """The frames of a PCM WAV, and its format."""

    channels: int
    sampwidth: int
    rate: int
    frames: bytes

    @property
    def frame_size(self) -> int:
        return self.sampwidth * self.channels

    @property
    def nframes(self) -> int:
        return len(self.frames) // self.frame_size

    @property
    def duration_s(self) -> float:
        return self.nframes / self.rate

    def head(self, nframes: int) -> _Pcm:
        return _Pcm(self.channels, self.sampwidth, self.rate,
                    self.frames[:max(0, nframes) * self.frame_size])

    def wav(self) -> bytes:
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(self.channels)
            w.setsampwidth(self.sampwidth)
            w.setframerate(self.rate)
            w.writeframes(self.frames)
        return out.getvalue()


def worth_uploading(doc: dict[str, Any]) -> bool:
    """Whether ops should hear this call: expectations not met, or the diagnosis says the
    target is degraded or down."""
    diagnosis = doc.get("diagnosis") or {}
    return doc["expectations"]["met"] is False or diagnosis.get("verdict") in UPLOAD_VERDICTS


def recording_file(doc: dict[str, Any]) -> Path | None:
    """The result's recording on this probe, None when there is none (any more)."""
    audio = doc.get("audio") or {}
    path = Path(audio["file"]) if audio.get("file") else None
    return path if path is not None and path.is_file() else None


def submit_recording(sink: BulkSink, doc: dict[str, Any], max_bytes: int) -> int | None:
    """Commit the recording of the result ``doc`` (already committed itself) as a bulk outbox
    row when it is worth hearing; returns the row id, None when nothing was sent.

    An unreadable recording is logged and skipped: the result has gone already, and it says
    what was measured."""
    path = recording_file(doc)
    if max_bytes <= 0 or path is None or not worth_uploading(doc):
        return None
    try:
        recording = encode_recording(path, max_bytes)
    except (OSError, wave.Error, EOFError) as exc:
        log.error("recording %s of result %s not uploaded: %s", path, doc["id"], exc)
        return None
    row_id = sink.submit_bulk(RECORDING, recording.payload, content_type=recording.content_type,
                              user_properties=recording.user_properties(doc["id"]))
    if row_id is None:  # the disk could not take it (logged by the sink)
        return None
    log.info("recording of %s queued: %s, %d bytes, %.1f s%s", doc["id"], recording.content_type,
             len(recording.payload), recording.duration_s,
             " (truncated)" if recording.truncated else "")
    return row_id


def encode_recording(path: Path, max_bytes: int) -> Recording:
    """The recording at ``path`` (a PCM WAV) as FLAC (WAV without sox), at most ``max_bytes``:
    a longer one is cut to its first seconds, on the PCM, before encoding."""
    pcm = _read_pcm(path)
    payload, content_type = _encode(pcm)
    if len(payload) <= max_bytes:
        return Recording(payload, content_type, pcm.duration_s, truncated=False)
    # As a WAV, this many frames fit exactly; compressed, about as many as the measured ratio
    # allows: try that first, then the exact one, which fits (a FLAC of it almost always).
    fits_as_wav = (max_bytes - WAV_HEADER_BYTES) // pcm.frame_size
    if fits_as_wav >= pcm.nframes:  # FLAC larger than the PCM (noise): the WAV fits whole
        return Recording(pcm.wav(), WAV, pcm.duration_s, truncated=False)
    estimate = int(pcm.nframes * max_bytes / len(payload) * _CUT_MARGIN)
    for keep in sorted({estimate, fits_as_wav}, reverse=True):
        head = pcm.head(keep)
        payload, content_type = _encode(head)
        if len(payload) <= max_bytes:
            return Recording(payload, content_type, head.duration_s, truncated=True)
    head = pcm.head(fits_as_wav)
    return Recording(head.wav(), WAV, head.duration_s, truncated=True)


def _read_pcm(path: Path) -> _Pcm:
    with wave.open(str(path), "rb") as w:  # wave.Error for anything but PCM
        return _Pcm(w.getnchannels(), w.getsampwidth(), w.getframerate(),
                    w.readframes(w.getnframes()))


def _encode(pcm: _Pcm) -> tuple[bytes, str]:
    """FLAC by sox when it works, else the WAV itself."""
    wav = pcm.wav()
    try:
        done = subprocess.run(["sox", "-t", "wav", "-", "-t", "flac", "-"], input=wav,
                              capture_output=True, timeout=SOX_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        _sox_unusable(_describe(exc))
        return wav, WAV
    if not done.stdout:
        _sox_unusable("no output")
        return wav, WAV
    return done.stdout, FLAC


def _describe(exc: OSError | subprocess.SubprocessError) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        stderr = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        return f"exit status {exc.returncode}: {stderr[:200]}"
    return str(exc)


def _sox_unusable(reason: str) -> None:
    level = logging.DEBUG if _sox_warned.is_set() else logging.WARNING
    _sox_warned.set()
    log.log(level, "sox cannot encode recordings as FLAC (%s): sending them as WAV "
            "(apt-get install sox)", reason)
