"""Recordings reach ops: a failed call's audio goes, as FLAC, after its result, through the outbox,
to a real mosquitto (probe.sim.broker), encoded and decoded by the real sox."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import time
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from probe.results.recording import FLAC, WAV, encode_recording, submit_recording, worth_uploading
from probe.sim.broker import LocalBroker, Message, Subscriber
from probe.uplink.forwarder import Forwarder
from probe.uplink.mqtt import Publisher
from probe.uplink.outbox import Outbox
from tests.waiting import wait_until

RATE = 8000
TREE = "hotline-probe/v1/p1/#"
RESULT = "hotline-probe/v1/p1/result"
RECORDING = "hotline-probe/v1/p1/recording"


def write_wav(path: Path, seconds: float, seed: int = 1) -> Path:
    """A call-like 16-bit 8 kHz recording: a warbling tone with some line noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    x += 0.02 * rng.standard_normal(len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).clip(-32768, 32767).astype("<i2").tobytes())
    return path


def result_doc(wav: Path | None, *, met: bool, verdict: str | None = "ok") -> dict[str, Any]:
    """The fields of a result document that decide about its recording."""
    return {"id": str(uuid.uuid4()), "expectations": {"met": met, "checks": []},
            "diagnosis": None if verdict is None else {"verdict": verdict},
            "audio": None if wav is None else {"file": str(wav), "duration_ms": None}}


def pcm_frames(audio: bytes, kind: str) -> bytes:
    """The 16-bit samples of a FLAC or WAV payload, decoded by sox."""
    done = subprocess.run(["sox", "-t", kind, "-", "-t", "s16", "-"], input=audio,
                          capture_output=True, check=True, timeout=30)
    return done.stdout


def wav_frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def user_properties(message: Message) -> dict[str, str]:
    assert message.properties is not None
    return dict(getattr(message.properties, "UserProperty", []))


@contextmanager
def forwarding(broker: LocalBroker, outbox: Outbox) -> Iterator[Forwarder]:
    """The daemon's publishing side: outbox → forwarder → publisher → broker."""
    forwarder = Forwarder(outbox)
    publisher = Publisher(probe_id="p1", host=broker.host, port=broker.port,
                          on_delivery=forwarder.delivered, reconnect_delay_s=(0.2, 0.5))
    forwarder.start(publisher)
    try:
        yield forwarder
    finally:
        forwarder.stop()
        publisher.close()


def _topics(messages: list[Message]) -> list[str]:
    return [m.topic for m in messages if m.topic in (RESULT, RECORDING)]


# -- which calls ------------------------------------------------------------------------------


@pytest.mark.parametrize(("met", "verdict", "wanted"), [
    (False, "ok", True), (False, None, True), (True, "degraded", True), (True, "down", True),
    (True, "ok", False), (True, "unknown", False), (True, None, False)])
def test_failed_or_degraded_calls_are_worth_hearing(met: bool, verdict: str | None,
                                                    wanted: bool) -> None:
    assert worth_uploading(result_doc(None, met=met, verdict=verdict)) is wanted


def test_nothing_is_queued_without_a_recording_a_failure_or_a_bound(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "r.wav", 1)
    box = Outbox(tmp_path / "o.db")
    forwarder = Forwarder(box)  # not started: only its outbox is used
    assert submit_recording(forwarder, result_doc(wav, met=True), 1 << 20) is None
    assert submit_recording(forwarder, result_doc(None, met=False), 1 << 20) is None
    assert submit_recording(forwarder, result_doc(tmp_path / "gone.wav", met=False),
                            1 << 20) is None
    assert submit_recording(forwarder, result_doc(wav, met=False), 0) is None  # 0: disabled
    assert box.depth().count == 0


# -- against mosquitto and sox ----------------------------------------------------------------


def test_failed_calls_recording_arrives_after_its_result_as_lossless_flac(
        tmp_path: Path, broker: LocalBroker) -> None:
    wav = write_wav(tmp_path / "r.wav", 20)
    doc = result_doc(wav, met=False)
    box = Outbox(tmp_path / "o.db")
    with Subscriber(broker.host, broker.port, TREE) as sub, forwarding(broker, box) as fwd:
        fwd.submit("result", doc)
        assert submit_recording(fwd, doc, 1024 * 1024) is not None
        messages = sub.wait_for(lambda msgs: RECORDING in _topics(msgs), timeout=10)
    assert _topics(messages) == [RESULT, RECORDING]
    recording = messages[-1]
    assert recording.retain is False
    assert recording.properties is not None
    assert recording.properties.ContentType == FLAC
    assert not hasattr(recording.properties, "MessageExpiryInterval")  # it must not expire
    assert user_properties(recording) == {"result_id": doc["id"], "duration_s": "20.000"}
    assert recording.payload[:4] == b"fLaC"
    assert len(recording.payload) < 0.9 * wav.stat().st_size
    assert pcm_frames(recording.payload, "flac") == wav_frames(wav)  # lossless: 20.000 s again
    # As sent by the probe: QoS 1, not retained (mosquitto logs the PUBLISH as it came in).
    assert re.search(rf"Received PUBLISH from p1 \(d0, q1, r0, m\d+, '{RECORDING}', \.\.\. "
                     rf"\({len(recording.payload)} bytes\)\)", broker.log_text())
    assert box.depth().count == 0  # acknowledged: gone from the outbox


def test_a_recording_longer_than_the_bound_is_cut_to_its_first_seconds(
        tmp_path: Path, broker: LocalBroker) -> None:
    wav = write_wav(tmp_path / "long.wav", 120)
    doc = result_doc(wav, met=True, verdict="degraded")
    bound = 64 * 1024
    with Subscriber(broker.host, broker.port, RECORDING) as sub, \
            forwarding(broker, Outbox(tmp_path / "o.db")) as fwd:
        submit_recording(fwd, doc, bound)
        (message,) = sub.wait_for(lambda msgs: len(msgs) == 1, timeout=10)
    props = user_properties(message)
    assert props["truncated"] == "true"
    assert len(message.payload) <= bound
    frames = pcm_frames(message.payload, "flac")
    seconds = len(frames) / 2 / RATE
    assert f"{seconds:.3f}" == props["duration_s"]
    # Cut on the compressed size: more than the 4.1 s that would fit as PCM, close to the bound.
    assert (bound - 44) / 2 / RATE < seconds < 120
    assert len(message.payload) > 0.8 * bound
    assert frames == wav_frames(wav)[:len(frames)]  # the first seconds, untouched
    # Not truncated when it fits: no "truncated" property at all.
    short = encode_recording(write_wav(tmp_path / "short.wav", 2), bound)
    assert not short.truncated
    assert [k for k, _ in short.user_properties("x")] == ["result_id", "duration_s"]


def test_broker_down_the_recording_waits_in_the_outbox_and_follows_the_results(
        tmp_path: Path, broker: LocalBroker) -> None:
    """Queued while the broker is away, kept across a restart of the probe (a new Outbox on the
    same file), delivered once the broker is back: every result first, then the recording."""
    failed = result_doc(write_wav(tmp_path / "r.wav", 5), met=False)
    later = result_doc(None, met=True)
    path = tmp_path / "outbox.sqlite3"
    broker.stop()
    box = Outbox(path)
    with forwarding(broker, box) as fwd:
        fwd.submit("result", failed)
        submit_recording(fwd, failed, 1024 * 1024)
        fwd.submit("result", later)  # made after the recording, sent before it
        assert box.depth().count == 3
    box.close()  # the probe stops with everything still waiting on disk

    broker.start()
    box = Outbox(path)
    with Subscriber(broker.host, broker.port, TREE) as sub, forwarding(broker, box):
        messages = sub.wait_for(lambda msgs: RECORDING in _topics(msgs), timeout=15)
        assert _topics(messages) == [RESULT, RESULT, RECORDING]
        assert [m.json()["id"] for m in messages if m.topic == RESULT] == [failed["id"],
                                                                            later["id"]]
        assert user_properties(messages[-1])["result_id"] == failed["id"]
    assert box.depth().count == 0  # close() waited for the PUBACKs: every row acknowledged


def test_a_refused_recording_holds_back_only_the_recordings(tmp_path: Path) -> None:
    """A broker whose ACL predates recordings refuses them (0x87): results keep flowing without
    waiting out the back-off, and the recording stays in the outbox for a later try."""
    acl = ("topic write hotline-probe/v1/p1/status\ntopic write hotline-probe/v1/p1/result\n"
           "topic read hotline-probe/v1/#\n")
    failed = result_doc(write_wav(tmp_path / "r.wav", 2), met=False)
    box = Outbox(tmp_path / "o.db")
    with LocalBroker(acl=acl) as broker, Subscriber(broker.host, broker.port, TREE) as sub, \
            forwarding(broker, box) as fwd:
        fwd.refused_backoff_s = 600.0
        fwd.submit("result", failed)
        submit_recording(fwd, failed, 1 << 20)
        sub.wait_for(lambda msgs: _topics(msgs) == [RESULT], timeout=5)
        wait_until(lambda: fwd.refused == 1, timeout=5)
        fwd.submit("result", result_doc(None, met=True))  # not held back by the refusal
        messages = sub.wait_for(lambda msgs: _topics(msgs) == [RESULT, RESULT], timeout=5)
        # the second result's row goes when its PUBACK comes, which may follow the subscriber
        # seeing it: wait for that; the recording's row must stay
        wait_until(lambda: box.depth().count == 1, timeout=5)
        time.sleep(0.5)
        assert fwd.sent == 3  # result, recording, result: the recording waits out its back-off
    assert RECORDING not in _topics(messages)


def test_without_sox_the_wav_itself_goes_and_it_is_said_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import probe.results.recording

    monkeypatch.setenv("PATH", str(tmp_path))  # no sox on this PATH
    recording = probe.results.recording
    monkeypatch.setattr(recording, "_sox_warned", type(recording._sox_warned)())
    wav = write_wav(tmp_path / "r.wav", 3)
    with caplog.at_level(logging.DEBUG, logger="probe.results.recording"):
        first = encode_recording(wav, 1 << 20)
        encode_recording(wav, 1 << 20)
    assert (first.content_type, first.truncated) == (WAV, False)
    assert first.payload == wav.read_bytes()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sox" in warnings[0].getMessage()
    cut = encode_recording(wav, 16 * 1024)  # a WAV is cut exactly to the bound
    assert cut.truncated and cut.content_type == WAV and len(cut.payload) <= 16 * 1024
    with wave.open(io.BytesIO(cut.payload), "rb") as w:  # read without sox, which is gone
        assert w.getnframes() == (16 * 1024 - 44) // 2
        assert w.readframes(w.getnframes()) == wav_frames(wav)[:(16 * 1024 - 44) // 2 * 2]


@pytest.mark.slow
def test_the_daemon_uploads_the_recording_of_a_call_that_missed_its_expectations(
        tmp_path: Path, broker: LocalBroker) -> None:
    """`probe run --once` against SIPp: answered, but later than the target allows."""
    import json
    import sys

    from probe.sim import probe_config
    from probe.sim.hotline import HotlineBehaviour, SippHotline

    tree = "hotline-probe/v1/p-17/#"
    with SippHotline(HotlineBehaviour(pdd_ms=400, ring_ms=300)) as hotline, \
            Subscriber(broker.host, broker.port, tree) as sub:
        config = probe_config.write_config(
            tmp_path, probe_id="p-17", site="Test branch",
            mqtt=probe_config.broker_section(broker, keepalive_s=5),
            targets=[probe_config.sip_target("support", hotline.uri, hold_s=1.5,
                                             max_post_dial_delay_ms=100)])
        proc = subprocess.run([sys.executable, "-m", "probe", "run", "-c", str(config), "--once"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr  # exit 1: the hotline missed its expectations
        messages = sub.wait_for(lambda msgs: any(m.topic.endswith("/recording") for m in msgs),
                                timeout=10)
    ours = [m for m in messages if m.topic.endswith(("/result", "/recording"))]
    assert [m.topic.rsplit("/", 1)[1] for m in ours] == ["result", "recording"]
    result, recording = ours[0].json(), ours[1]
    assert (result["outcome"], result["expectations"]["met"]) == ("answered", False)
    props = user_properties(recording)
    assert recording.properties is not None and recording.properties.ContentType == FLAC
    assert props["result_id"] == result["id"]
    seconds = len(pcm_frames(recording.payload, "flac")) / 2 / RATE
    assert abs(seconds - result["audio"]["duration_ms"] / 1000) < 0.002
    assert f"{seconds:.3f}" == props["duration_s"]
    health = [m.json() for m in messages if m.topic.endswith("/health")][-1]
    assert health["outbox"]["recordings_dropped"] == 0, json.dumps(health["outbox"])


def test_a_result_nobody_subscribed_to_is_kept_and_sent_again(tmp_path: Path) -> None:
    """PUBACK 0x10 ("no matching subscribers": the broker dropped it) is not delivery: right
    after a mosquitto restart the ops service's shared subscription is not back yet.  The row
    stays in the outbox and goes again once someone listens."""
    box = Outbox(tmp_path / "o.db")
    with LocalBroker() as broker, forwarding(broker, box) as fwd:
        fwd.unheard_backoff_s = 0.3
        fwd.submit("result", result_doc(None, met=True))
        wait_until(lambda: fwd.unheard >= 1, timeout=5)
        assert box.depth().count == 1  # kept, not deleted as delivered
        with Subscriber(broker.host, broker.port, TREE) as sub:
            messages = sub.wait_for(lambda msgs: _topics(msgs) == [RESULT], timeout=10)
            wait_until(lambda: box.depth().count == 0, timeout=5)
    assert len(_topics(messages)) == 1
