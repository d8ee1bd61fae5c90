"""Real SIP test calls on loopback: SIPp plays the hotline, ``probe call --json`` is the caller.

Every test runs the real command in its own process (pjsua2 allows one endpoint per process and
its shutdown is part of what is tested), parses the result it printed, validates it against the
shipped JSON Schema, and checks that SIPp saw the call it scripted (exit code 0) — so a timing or
an outcome is never right for the wrong call.

Timings are imposed by SIPp's ``<pause>`` and measured by the probe on its monotonic clock.  Each
is checked twice: the probe's figure against what SIPp actually put on the wire (its message
trace), within :data:`TOLERANCE_MS` — the probe's own accuracy; and SIPp's figure against the
imposed delay, within :data:`SIPP_SLACK_MS` — SIPp runs its pauses a few ms late (its 10 ms timer
cycle), more on a loaded machine, and that lateness is the hotline's, not the probe's error.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from probe.results.document import validate_result
from probe.sim import probe_config
from probe.sim.hotline import NEVER_ANSWER, HotlineBehaviour, SippHotline

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE_MS = 20  # probe's measured delay vs the same delay on the wire (SIPp's trace)
SIPP_SLACK_MS = 100  # SIPp's actual delay vs the imposed one (late pauses on a busy machine)
CALL_TIMEOUT_S = 30  # bound on one `probe call` process
CRASH_MARKERS = ("Assertion", "Segmentation", "Traceback", "core dumped")


class CallRun(NamedTuple):
    doc: dict[str, Any]  # the JSON result, validated
    proc: subprocess.CompletedProcess[str]
    sipp_rc: int | None  # None when no hotline ran
    wire: dict[str, float]  # SIPp's trace: ms after the INVITE arrived (see wire_times)


def write_config(tmp_path: Path, uri: str, *, expect: dict[str, Any] | None = None,
                 target: dict[str, Any] | None = None, sip: dict[str, Any] | None = None) -> Path:
    """A probe configuration with one SIP target ``hot`` calling ``uri`` from 127.0.0.1."""
    hot = {"name": "hot", "sip_uri": uri, "channels": ["sip"], **(target or {}),
           "expect": {"hold_s": 1, "max_ring_s": 3, **(expect or {})}}
    return probe_config.write_config(tmp_path, sip=sip, targets=[hot])


def probe_call(config: Path, target: str = "hot") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", "call", target, "-c", str(config),
                           "--json"], capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                          cwd=ROOT)


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    """The process ended by itself (no signal) and pjsua2's shutdown did not crash or assert."""
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}\n{proc.stderr[-3000:]}"
    for marker in CRASH_MARKERS:
        assert marker not in proc.stderr, proc.stderr[-3000:]


def parse_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout.strip(), (
        f"no result printed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    validate_result(doc)
    return doc


def run_scenario(tmp_path: Path, behaviour: HotlineBehaviour | None, *,
                 uri: str | None = None, **config: Any) -> CallRun:
    """One `probe call hot --json` against a SIPp hotline playing ``behaviour``.

    Without a behaviour, ``uri`` is called with no hotline at all.  Checks what every call must
    satisfy (clean exit, a schema-valid result, SIPp saw its scripted call) and returns the rest
    for the test to judge."""
    if behaviour is None:
        assert uri is not None
        proc = probe_call(write_config(tmp_path, uri, **config))
        assert_clean_exit(proc)
        return CallRun(parse_result(proc), proc, None, {})
    with SippHotline(behaviour, timeout_s=CALL_TIMEOUT_S) as hotline:
        proc = probe_call(write_config(tmp_path, hotline.uri, **config))
        sipp_rc = hotline.wait(10)
        messages = hotline.messages()
        trace = f"SIPp errors:\n{hotline.errors()}\nSIP messages:\n{messages}"
    assert_clean_exit(proc)
    doc = parse_result(proc)
    assert sipp_rc == 0, f"SIPp exit {sipp_rc}: the call did not go as scripted\n{trace}"
    return CallRun(doc, proc, sipp_rc, wire_times(messages))


_TRACE_ENTRY = re.compile(r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
                          r"UDP message (sent|received)[^\n]*\n\s*([^\r\n]+)", re.M)


def wire_times(messages: str) -> dict[str, float]:
    """When the hotline actually sent what it was told to, from SIPp's ``-trace_msg`` log.

    ms after the first INVITE arrived: ``provisional`` (first 18x sent), ``final`` (first final
    response sent), ``bye`` (first BYE sent or received)."""
    entries = [(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp() * 1000, way, line)
               for stamp, way, line in _TRACE_ENTRY.findall(messages)]
    invites = [t for t, way, line in entries if way == "received" and line.startswith("INVITE")]
    if not invites:
        return {}
    patterns = {"provisional": ("sent", r"SIP/2\.0 18\d"), "final": ("sent", r"SIP/2\.0 [2-6]\d\d"),
                "bye": (None, r"BYE ")}
    wire = {}
    for name, (direction, pattern) in patterns.items():
        for t, way, line in entries:
            if direction in (None, way) and re.match(pattern, line):
                wire[name] = t - invites[0]
                break
    return wire


def near(measured: float | None, expected: float, tolerance: float = TOLERANCE_MS) -> bool:
    return measured is not None and abs(measured - expected) <= tolerance


def assert_timed(what: str, measured: int | None, on_wire: float, imposed: float) -> None:
    """The probe measured what was on the wire, and the hotline did (about) what it was told."""
    assert near(measured, on_wire), f"{what}: probe {measured} ms, on the wire {on_wire:.1f} ms"
    assert near(on_wire, imposed, SIPP_SLACK_MS), (
        f"{what}: SIPp took {on_wire:.1f} ms for an imposed {imposed} ms")


def events(doc: dict[str, Any]) -> list[str]:
    return [e["event"] for e in doc["timeline"]]


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in doc["expectations"]["checks"] if c["check"] == name]
    return found


def wav_facts(path: str) -> tuple[int, int, int, int]:
    """(rate, channels, sample width, duration ms) of a WAV file."""
    with wave.open(path, "rb") as w:
        return (w.getframerate(), w.getnchannels(), w.getsampwidth(),
                round(w.getnframes() * 1000 / w.getframerate()))


# ------------------------------------------------------------------------------- answered calls


@pytest.mark.slow
@pytest.mark.parametrize(("pdd_ms", "ring_ms"), [(300, 1200), (100, 500), (700, 300)])
def test_answered_after_ringing_measures_the_imposed_delays(tmp_path: Path, pdd_ms: int,
                                                            ring_ms: int) -> None:
    hold_s = 1.5
    doc, proc, _, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=pdd_ms, ring_ms=ring_ms), expect={"hold_s": hold_s})
    t = doc["timings_ms"]
    assert doc["outcome"] == "answered"
    assert doc["sip"]["final_code"] == 200
    assert doc["sip"]["provisional"] == [180]
    assert doc["sip"]["attempts"] == 1
    assert doc["sip"]["hangup_reason"] == "hold_done"
    assert doc["sip"]["ended_by"] == "probe"
    assert_timed("post-dial delay", t["post_dial_delay"], wire["provisional"], pdd_ms)
    assert_timed("time to answer", t["time_to_answer"], wire["final"], pdd_ms + ring_ms)
    assert_timed("ring duration", t["ring_duration"], wire["final"] - wire["provisional"],
                 ring_ms)
    assert near(t["talk_duration"], hold_s * 1000, 50), t  # the probe's own hold timer
    assert t["call_duration"] == pytest.approx(t["time_to_answer"] + t["talk_duration"], abs=1)
    assert events(doc)[:4] == ["dial", "progress", "answer", "media_start"]
    assert events(doc)[-2:] == ["hangup", "end"]

    rtp = doc["rtp"]
    assert rtp["codec"] == "PCMU/8000"
    assert rtp["packets_received"] > 0.8 * hold_s * 50  # 20 ms packets
    assert rtp["packets_lost"] == 0

    audio = doc["audio"]
    assert Path(audio["file"]).is_file()
    assert Path(audio["file"]).parent == tmp_path / "state" / "audio"
    rate, channels, width, duration_ms = wav_facts(audio["file"])
    assert (rate, channels, width) == (8000, 1, 2)
    assert near(duration_ms, t["talk_duration"], 100), (duration_ms, t)
    assert audio["duration_ms"] == duration_ms
    assert audio["early_media_at_ms"] is None
    assert doc["expectations"]["met"] is True
    assert proc.returncode == 0


@pytest.mark.slow
def test_early_media_is_recorded_before_the_answer(tmp_path: Path) -> None:
    pdd_ms, ring_ms, hold_s = 250, 1000, 1
    doc, proc, _, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=pdd_ms, ring_ms=ring_ms, provisional=183),
        expect={"hold_s": hold_s})
    t = doc["timings_ms"]
    assert doc["outcome"] == "answered"
    assert doc["sip"]["final_code"] == 200
    assert 183 in doc["sip"]["provisional"]
    assert doc["sip"]["early_media"] is True
    assert_timed("post-dial delay", t["post_dial_delay"], wire["provisional"], pdd_ms)
    assert_timed("time to answer", t["time_to_answer"], wire["final"], pdd_ms + ring_ms)
    assert near(doc["audio"]["early_media_at_ms"], t["post_dial_delay"]), doc["audio"]
    assert events(doc).index("early_media") < events(doc).index("answer")
    _, _, _, duration_ms = wav_facts(doc["audio"]["file"])
    # early media (~ring_ms) and the talk time are both in the recording
    assert duration_ms > t["talk_duration"] + ring_ms * 0.8, (duration_ms, t)
    assert doc["rtp"]["packets_received"] > 0
    assert proc.returncode == 0


# ------------------------------------------------------------------------------- refusals


@pytest.mark.slow
@pytest.mark.parametrize(("code", "outcome"), [
    (486, "busy"), (480, "unavailable"), (503, "congestion"), (404, "not_found"),
])
def test_final_refusal_from_the_hotline(tmp_path: Path, code: int, outcome: str) -> None:
    pdd_ms, ring_ms = 200, 300
    doc, proc, _, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=pdd_ms, ring_ms=ring_ms, final=code))
    t = doc["timings_ms"]
    assert doc["outcome"] == outcome
    assert doc["sip"]["final_code"] == code
    assert doc["sip"]["final_from_network"] is True
    assert doc["sip"]["ended_by"] == "hotline"
    assert doc["sip"]["hangup_reason"] is None
    assert_timed("post-dial delay", t["post_dial_delay"], wire["provisional"], pdd_ms)
    assert_timed("ring duration", t["ring_duration"], wire["final"] - wire["provisional"],
                 ring_ms)
    assert t["time_to_answer"] is None and t["talk_duration"] is None
    assert doc["rtp"] is None and doc["audio"] is None
    assert check(doc, "answered")["met"] is False
    assert doc["expectations"]["met"] is False
    assert proc.returncode == 1


@pytest.mark.slow
def test_refusal_without_provisional_times_the_final_response(tmp_path: Path) -> None:
    doc, proc, _, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=150, ring_ms=100, provisional=None, final=486))
    t = doc["timings_ms"]
    assert doc["outcome"] == "busy"
    assert doc["sip"]["provisional"] == []
    # INVITE -> final when nothing came before
    assert_timed("post-dial delay", t["post_dial_delay"], wire["final"], 250)
    assert t["ring_duration"] is None
    assert proc.returncode == 1


@pytest.mark.slow
def test_rings_past_the_limit_then_the_probe_cancels(tmp_path: Path) -> None:
    pdd_ms = 200
    doc, proc, sipp_rc, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=pdd_ms, final=NEVER_ANSWER), expect={"max_ring_s": 2})
    t = doc["timings_ms"]
    assert sipp_rc == 0  # SIPp received the CANCEL it expects
    assert doc["outcome"] == "no_answer"
    assert doc["sip"]["hangup_reason"] == "max_ring"
    assert doc["sip"]["ended_by"] == "probe"
    assert doc["sip"]["final_code"] == 487
    assert doc["sip"]["final_from_network"] is False  # pjsua ends the call at its CANCEL
    assert_timed("post-dial delay", t["post_dial_delay"], wire["provisional"], pdd_ms)
    assert near(t["ring_duration"], 2000, 50), t  # the probe's own ring limit
    ring = check(doc, "ring_duration_ms")
    assert ring["met"] is False and ring["limit"] == 2000
    assert proc.returncode == 1


# ------------------------------------------------------------------------------- authentication


@pytest.mark.slow
def test_digest_challenge_is_answered_with_the_configured_credentials(tmp_path: Path) -> None:
    doc, proc, *_ = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=200, ring_ms=300, challenge=("probe", "secret")),
        sip={"username": "probe", "password": "secret"})
    assert doc["outcome"] == "answered"
    assert doc["sip"]["attempts"] == 2
    assert doc["sip"]["final_code"] == 200
    assert events(doc)[:4] == ["dial", "challenge", "dial", "progress"]
    assert doc["timeline"][1]["code"] == 401
    # timings run from the first INVITE: the auth round trip is part of the caller's wait
    assert doc["timings_ms"]["post_dial_delay"] >= 200
    assert proc.returncode == 0


@pytest.mark.slow
def test_wrong_password_is_refused_as_auth_failed(tmp_path: Path) -> None:
    doc, proc, *_ = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=200, ring_ms=300, challenge=("probe", "secret")),
        sip={"username": "probe", "password": "not-the-secret"})
    assert doc["outcome"] == "auth_failed"
    assert doc["sip"]["attempts"] == 2
    assert doc["sip"]["final_code"] == 403
    assert doc["sip"]["final_from_network"] is True
    assert proc.returncode == 1
    assert "not-the-secret" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------- media


@pytest.mark.slow
@pytest.mark.parametrize("require_media", [True, False])
def test_answered_without_rtp(tmp_path: Path, require_media: bool) -> None:
    doc, proc, *_ = run_scenario(tmp_path, HotlineBehaviour(pdd_ms=100, ring_ms=200, audio=None),
                                 expect={"require_media": require_media})
    assert doc["outcome"] == "answered"
    assert doc["rtp"]["packets_received"] == 0
    assert doc["rtp"]["packets_sent"] > 0  # our side did send
    if require_media:
        media = check(doc, "media_received")
        assert media["met"] is False and media["measured"] == 0
        assert doc["expectations"]["met"] is False
        assert proc.returncode == 1
    else:
        assert "media_received" not in [c["check"] for c in doc["expectations"]["checks"]]
        assert doc["expectations"]["met"] is True
        assert proc.returncode == 0


# ------------------------------------------------------------------------------- endings


@pytest.mark.slow
def test_the_hotline_hangs_up_first(tmp_path: Path) -> None:
    hangup_after_ms = 800
    doc, proc, _, wire = run_scenario(
        tmp_path, HotlineBehaviour(pdd_ms=100, ring_ms=200, hangup_after_ms=hangup_after_ms),
        expect={"hold_s": 5})
    t = doc["timings_ms"]
    assert doc["outcome"] == "answered"
    assert doc["sip"]["ended_by"] == "hotline"
    assert doc["sip"]["hangup_reason"] is None
    assert "remote_hangup" in events(doc) and "hangup" not in events(doc)
    assert_timed("talk duration", t["talk_duration"], wire["bye"] - wire["final"],
                 hangup_after_ms)
    assert proc.returncode == 0


@pytest.mark.slow
def test_sip_server_down_is_unreachable(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    doc, proc, *_ = run_scenario(tmp_path, None, uri=f"sip:hotline@127.0.0.1:{port}",
                                 expect={"max_post_dial_delay_ms": 500, "max_ring_s": 1})
    elapsed = time.monotonic() - started
    assert doc["outcome"] == "unreachable"
    assert doc["sip"]["final_from_network"] is False
    assert doc["sip"]["hangup_reason"] == "no_progress"
    assert doc["timings_ms"]["post_dial_delay"] is None
    assert proc.returncode == 1
    assert elapsed < 10, f"took {elapsed:.1f} s to give up"


# ------------------------------------------------------------------------------- DTMF


@pytest.mark.slow
def test_dtmf_sent_as_rfc4733_during_the_call(tmp_path: Path) -> None:
    doc, proc, *_ = run_scenario(tmp_path, HotlineBehaviour(pdd_ms=100, ring_ms=200),
                                 target={"dtmf": "1", "dtmf_after_s": 0.5},
                                 expect={"hold_s": 1.5})
    (dtmf,) = [e for e in doc["timeline"] if e["event"] == "dtmf"]
    (answer,) = [e for e in doc["timeline"] if e["event"] == "answer"]
    assert dtmf["reason"] == "1"
    assert near(dtmf["at_ms"] - answer["at_ms"], 500, 50)
    assert doc["outcome"] == "answered"
    assert doc["sip"]["hangup_reason"] == "hold_done"
    assert proc.returncode == 0


@pytest.mark.slow
def test_dtmf_falls_back_to_sip_info_and_reaches_the_hotline(tmp_path: Path) -> None:
    # The hotline offers no telephone-event and SIPp fails the call unless an INFO with this
    # digit arrives: its exit code 0 proves the hotline received it.
    doc, proc, *_ = run_scenario(tmp_path, HotlineBehaviour(pdd_ms=100, ring_ms=200,
                                                            dtmf_info="#"),
                                 target={"dtmf": "#", "dtmf_after_s": 0.5},
                                 expect={"hold_s": 1.5})
    (dtmf,) = [e for e in doc["timeline"] if e["event"] == "dtmf"]
    assert dtmf["reason"] == "#"
    assert doc["outcome"] == "answered"
    assert proc.returncode == 0


@pytest.mark.slow
def test_wrong_dtmf_digit_fails_the_hotline_script(tmp_path: Path) -> None:
    """The INFO check in the hotline is real: a different digit makes SIPp fail the call."""
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=200, dtmf_info="5"),
                     timeout_s=CALL_TIMEOUT_S) as hotline:
        config = write_config(tmp_path, hotline.uri, target={"dtmf": "4", "dtmf_after_s": 0.3},
                              expect={"hold_s": 1})
        proc = probe_call(config)
        sipp_rc = hotline.wait(10)
        errors = hotline.errors()
    assert_clean_exit(proc)
    parse_result(proc)
    assert sipp_rc != 0
    assert "Failed regexp match" in errors and "Signal=4" in errors, errors


# ------------------------------------------------------------------------------- usage errors


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    proc = probe_call(write_config(tmp_path, "sip:hotline@127.0.0.1:5999"), target="nope")
    assert_clean_exit(proc)
    assert proc.returncode == 2
    assert "targets" in proc.stderr and "'nope'" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_unknown_config_key_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sip:hotline@127.0.0.1:5999", expect={"max_ring": 3})
    proc = probe_call(config)
    assert_clean_exit(proc)
    assert proc.returncode == 2
    assert "targets[0].expect.max_ring: unknown key" in proc.stderr, proc.stderr
    assert proc.stdout == ""
