"""Modem call audio: ALSA capture through a real ``arecord``, the PCM port's first-sample stamp,
and the A76xx through-connect at ringback confirmed (or refuted) from the recording.

The ALSA "sound card" is alsa-lib's ``file`` plugin over the ``null`` PCM, reading its capture
samples from a FIFO (``infile``), declared in an ``~/.asoundrc`` written for the test: the
test's thread plays the card, writing 20 ms of samples every 20 ms from the moment arecord
opens the device, so the capture runs in real time with known content and a known first
sample time.  No sound card, no kernel module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from probe.config.model import Expectations, ModemConfig, ProbeIdentity
from probe.dial.modem import ModemDialer
from probe.dial.modem_audio import AlsaRecorder, WavSink
from probe.results.document import build_result, validate_result
from probe.results.measure import classify, timings
from probe.results.timeline import CallRecord, Ev
from probe.sim.modem import SCENARIOS, ModemEmulator, scenario, sim_audio

pytestmark = pytest.mark.skipif(shutil.which("arecord") is None,
                                reason="arecord missing: make setup installs alsa-utils")
PROBE = ProbeIdentity("test-probe", "Lab")
EXPECT = Expectations(max_post_dial_delay_ms=1000, max_ring_s=0.5, hold_s=0.4,
                      require_media=True)
CARD = "probecard"
CHUNK = 160  # samples per write: 20 ms, arecord's period (--period-time=20000)


class SoundCard:
    """The capture side of a USB sound card wired to the modem's audio output."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.first_sample_ns: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sound-card", daemon=True)
        ringback, _ = sim_audio()
        # what the line carries: ringback (1 s of 425 Hz, 4 s off) over a little line noise,
        # which makes every stretch of samples unique (the WAV is located in it exactly)
        noise = np.random.default_rng(5).integers(-60, 60, len(ringback))
        self.signal = (ringback.astype(np.int32) + noise).astype(np.int16)

    def captured_at(self, samples: bytes) -> int:
        """When the card captured the first of ``samples`` (monotonic ns)."""
        at = self.signal.astype("<i2").tobytes().find(samples[:64])
        assert at >= 0 and at % 2 == 0 and self.first_sample_ns is not None
        return self.first_sample_ns + at // 2 * 125_000

    def start(self) -> SoundCard:
        self._thread.start()
        return self

    def _run(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)  # blocks until arecord opens the device
        t0 = self.first_sample_ns = time.monotonic_ns()
        try:
            while not self._stop.is_set():
                due = t0 + (self.samples + CHUNK) * 125_000  # a chunk exists once captured
                time.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
                k = np.arange(self.samples, self.samples + CHUNK) % len(self.signal)
                os.write(fd, self.signal[k].astype("<i2").tobytes())
                self.samples += CHUNK
        except BrokenPipeError:  # arecord closed the device: this capture is over
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # still waiting for a reader: open it to release it
            with contextlib.suppress(OSError):
                os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        self._thread.join(timeout=2)


@pytest.fixture
def card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoundCard]:
    fifo = tmp_path / "card.fifo"
    os.mkfifo(fifo)
    (tmp_path / ".asoundrc").write_text(
        f'pcm.{CARD} {{\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{fifo}"\n  format "raw"\n}}\n')
    monkeypatch.setenv("HOME", str(tmp_path))  # alsa-lib reads ~/.asoundrc
    sound = SoundCard(fifo).start()
    yield sound
    sound.close()


def arecord_children() -> list[int]:
    """arecord processes this test process started and has not reaped (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
            if comm == "arecord" and int(rest.split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


def gsm_dialer(modem: ModemEmulator, **config: object) -> ModemDialer:
    cfg = ModemConfig(kind="gsm", port=modem.url, **config)  # type: ignore[arg-type]
    return ModemDialer(cfg, poll_s=0.025, reopen_wait_s=0.5, sync_timeout_s=0.15,
                       sim_wait_s=3.0)


def place(d: ModemDialer, tmp_path: Path, expect: Expectations = EXPECT) -> CallRecord:
    return d.call("+33472000390", expect, target="support", audio_path=tmp_path / "call.wav")


def wav_facts(path: Path) -> tuple[tuple[int, int, int], int]:
    with wave.open(str(path), "rb") as w:
        return (w.getnchannels(), w.getsampwidth(), w.getframerate()), w.getnframes()


# -- ALSA -------------------------------------------------------------------------------------
def test_the_null_pcm_captures_without_a_sound_card(tmp_path: Path) -> None:
    """alsa-lib's ``null`` PCM works here (no card); it is not paced, so ``-d`` bounds it."""
    sink = WavSink(tmp_path / "null.wav")
    recorder = AlsaRecorder("null", sink, max_s=1)
    recorder.start()
    assert recorder.proc is not None
    recorder.proc.wait(5)
    recorder.stop()
    sink.close()
    assert recorder.returncode == 0 and recorder.error is None
    assert wav_facts(sink.path) == ((1, 2, 8000), 8000)
    assert not arecord_children()


def test_alsa_capture_records_the_whole_call(card: SoundCard, tmp_path: Path) -> None:
    # SIM800: no audio of its own; its speaker output goes to a USB sound card
    with ModemEmulator("sim800", scenario("answered", pdd_ms=200, ring_ms=300)) as modem, \
            gsm_dialer(modem, alsa_device=CARD) as d:
        record = place(d, tmp_path)
        assert modem.idle
    assert not arecord_children()  # stopped and reaped
    assert classify(record) == "answered"
    facts = record.facts["modem"]
    assert facts["audio_source"] == f"alsa:{CARD}" and "audio_error" not in facts
    fmt, frames = wav_facts(tmp_path / "call.wav")
    assert fmt == (1, 2, 8000) and frames == record.facts["audio_frames"]
    # started at dial (just before ATD), stopped at the end of the call
    dial, early = record.first(Ev.DIAL), record.first(Ev.EARLY_MEDIA)
    end = record.first(Ev.END)
    assert dial and early and end and card.first_sample_ns is not None
    # the card captured from before the dial; the WAV starts with the ATD (within a sample)
    assert card.first_sample_ns < dial.t_ns
    assert 0 <= (early.t_ns - dial.t_ns) / 1e6 <= 1
    with wave.open(str(tmp_path / "call.wav"), "rb") as w:
        raw = w.readframes(frames)
    assert abs(card.captured_at(raw) - early.t_ns) / 1e6 <= 25  # its first sample, stamped
    duration_ms = frames / 8
    assert abs(duration_ms - (end.t_ns - early.t_ns) / 1e6) <= 80, duration_ms
    # early media included: the ringback is in the WAV before the answer
    answer = record.first(Ev.ANSWER)
    assert answer is not None and record.first(Ev.MEDIA_START) is not None
    samples = np.frombuffer(raw, "<i2").astype(float)
    before = samples[:round((answer.t_ns - early.t_ns) / 125_000)]
    assert len(before) > 2000 and np.sqrt(np.mean(before ** 2)) > 1000
    doc = build_result(record, EXPECT, PROBE)
    validate_result(doc)
    assert doc["audio"]["duration_ms"] == round(duration_ms)
    assert doc["audio"]["early_media_at_ms"] is not None
    assert {"check": "media_received", "met": True, "limit": "audio frames > 0",
            "measured": frames} in doc["expectations"]["checks"]


@pytest.mark.parametrize("name", ["busy", "unplugged"])
def test_alsa_capture_is_stopped_when_the_call_fails(name: str, card: SoundCard,
                                                     tmp_path: Path) -> None:
    with ModemEmulator("generic", scenario(name, pdd_ms=200, unplug_after_ms=350)) as modem, \
            gsm_dialer(modem, alsa_device=CARD) as d:
        record = place(d, tmp_path)
    assert classify(record) == ("busy" if name == "busy" else "modem_error")
    assert not arecord_children()
    _, frames = wav_facts(tmp_path / "call.wav")
    end, early = record.first(Ev.END), record.first(Ev.EARLY_MEDIA)
    assert end and early and abs(frames / 8 - (end.t_ns - early.t_ns) / 1e6) <= 80


def test_alsa_device_that_cannot_capture(tmp_path: Path) -> None:
    with ModemEmulator("sim800", scenario("answered", pdd_ms=100, ring_ms=100)) as modem, \
            gsm_dialer(modem, alsa_device="no_such_pcm") as d:
        record = place(d, tmp_path)
    assert classify(record) == "answered"  # the call is what is measured; audio is extra
    assert record.facts["audio_frames"] == 0
    assert "no_such_pcm" in record.facts["modem"]["audio_error"]
    assert not arecord_children()
    check = next(c for c in build_result(record, EXPECT, PROBE)["expectations"]["checks"]
                 if c["check"] == "media_received")
    assert check["met"] is False


# -- PCM port ---------------------------------------------------------------------------------
def test_pcm_first_sample_is_stamped(tmp_path: Path) -> None:
    with ModemEmulator("sim7600", scenario("answered", pdd_ms=100, ring_ms=150),
                       audio_port=True) as modem, \
            gsm_dialer(modem, audio_port=modem.audio_url) as d:
        record = place(d, tmp_path)
        start = modem.marks["pcm_start"]
    media = record.first(Ev.MEDIA_START)
    assert media is not None and abs(media.t_ns - start) / 1e6 <= 5
    assert "through_connected" not in record.facts["modem"]  # SIM7600: no need to check


# -- A76xx through-connect at ringback ----------------------------------------------------------
def test_through_connect_answer_is_taken_from_the_audio(tmp_path: Path) -> None:
    sc = SCENARIOS["through_connect"]  # UART "answered" at 250 ms, real answer at 1700 ms
    expect = Expectations(max_post_dial_delay_ms=1000, max_ring_s=5, hold_s=2.2,
                          require_media=True)
    with ModemEmulator("a76xx", sc, audio_port=True) as modem, \
            gsm_dialer(modem, audio_port=modem.audio_url) as d:
        record = place(d, tmp_path, expect)
        marks = dict(modem.marks)
        assert modem.idle
    facts = record.facts["modem"]
    assert facts["through_connected"] is True and facts["answer_confirmed"] is True
    assert facts["answer_source"] == "audio"
    answer = record.first(Ev.ANSWER)
    assert answer is not None and answer.detail["source"] == "audio"
    assert abs(answer.detail["uart_t_ns"] - marks["uart_answer"]) / 1e6 <= 20
    error_ms = (answer.t_ns - marks["answer"]) / 1e6
    assert abs(error_ms) <= 100, error_ms
    early = record.first(Ev.EARLY_MEDIA)  # the ringback the network put through
    assert early is not None and early.t_ns < answer.t_ns
    doc = build_result(record, expect, PROBE)
    validate_result(doc)
    assert doc["outcome"] == "answered"
    assert doc["modem"]["through_connected"] is True
    assert doc["modem"]["answer_confirmed"] is True
    t = timings(record)
    dial = record.first(Ev.DIAL)
    assert dial is not None and t.time_to_answer_ms is not None
    assert abs(t.time_to_answer_ms - (marks["answer"] - dial.t_ns) / 1e6) <= 100


def test_through_connect_without_an_answer_is_no_answer(tmp_path: Path) -> None:
    sc = scenario("through_connect", ring_ms=None)  # rings on; the UART said "answered"
    expect = Expectations(max_post_dial_delay_ms=1000, max_ring_s=5, hold_s=1.3,
                          require_media=True)
    with ModemEmulator("a76xx", sc, audio_port=True) as modem, \
            gsm_dialer(modem, audio_port=modem.audio_url) as d:
        record = place(d, tmp_path, expect)
        assert modem.idle
    facts = record.facts["modem"]
    assert facts["through_connected"] is True and facts["answer_confirmed"] is False
    assert not record.has(Ev.ANSWER) and record.has(Ev.EARLY_MEDIA)
    doc = build_result(record, expect, PROBE)
    validate_result(doc)
    assert doc["outcome"] == "no_answer" and doc["timings_ms"]["time_to_answer"] is None
    assert doc["expectations"]["met"] is False
