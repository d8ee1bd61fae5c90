"""What an operator meets (issue 16): exit codes automation can tell apart, human output in
words (never Python's None/True/False), and the MQTT 5 contract (Content Type, Response Topic,
Message Expiry) against a real mosquitto."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.properties import Properties

from probe import cli
from probe.audio import cli as audio_cli
from probe.config.model import Target
from probe.demo.script import results_table
from probe.exitcodes import (
    EXIT_HOTLINE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_UNJUDGED,
    EXIT_USAGE,
    combined_exit_code,
    result_exit_code,
)
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import GREETING_WAV, HotlineBehaviour, SippHotline
from probe.uplink.commands import CommandHandler, Request
from probe.uplink.mqtt import Publisher
from tests.commanding import CommandSender, reply_messages

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT / "tests" / "ops" / "data").glob("*.json"))
PYTHON_WORDS = re.compile(r"\b(None|True|False)\b")
PROBE = "p-op"


def probe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def sip_config(tmp_path: Path, uri: str, **sip: Any) -> Path:
    return probe_config.write_config(
        tmp_path, probe={"max_jitter_s": 0}, sip=sip or None,
        targets=[probe_config.sip_target("support", uri, interval_s=3600, hold_s=0.5,
                                         max_ring_s=3)])


# ------------------------------------------------------------------------------ exit codes


def test_result_exit_codes() -> None:
    def doc(outcome: str, met: bool, verdict: str | None = None) -> dict[str, Any]:
        return {"outcome": outcome, "expectations": {"met": met},
                "diagnosis": {"verdict": verdict} if verdict else None}

    assert result_exit_code(doc("answered", True, "ok")) == EXIT_OK
    assert result_exit_code(doc("busy", False, "down")) == EXIT_HOTLINE_FAILED
    assert result_exit_code(doc("unreachable", False, "unknown")) == EXIT_UNJUDGED
    assert result_exit_code(doc("failed", False)) == EXIT_UNJUDGED
    assert combined_exit_code([0, 0]) == EXIT_OK
    assert combined_exit_code([0, 3, 1]) == EXIT_HOTLINE_FAILED
    assert combined_exit_code([0, 3]) == EXIT_UNJUDGED
    for recorded in RESULTS:  # the real daemon's documents map onto the codes
        assert result_exit_code(json.loads(recorded.read_text())) in (0, 1, 3)


@pytest.mark.slow
def test_call_and_run_once_exit_0_when_the_hotline_answers(tmp_path: Path) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=100), calls=2) as hotline:
        config = sip_config(tmp_path, hotline.uri)
        call = probe("call", "support", "-c", str(config))
        once = probe("run", "--once", "-c", str(config))
    assert call.returncode == EXIT_OK, call.stderr[-2000:]
    assert "support over sip: answered — OK" in call.stdout
    assert not PYTHON_WORDS.search(call.stdout), call.stdout
    assert once.returncode == EXIT_OK, once.stdout[-2000:] + once.stderr[-2000:]


@pytest.mark.slow
def test_call_and_run_once_exit_1_when_the_hotline_is_busy(tmp_path: Path) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50, final=486), calls=2) \
            as hotline:
        config = sip_config(tmp_path, hotline.uri)
        call = probe("call", "support", "-c", str(config))
        once = probe("run", "--once", "-c", str(config))
    assert call.returncode == EXIT_HOTLINE_FAILED, call.stdout + call.stderr[-2000:]
    assert "busy" in call.stdout and not PYTHON_WORDS.search(call.stdout), call.stdout
    assert once.returncode == EXIT_HOTLINE_FAILED, once.stdout[-2000:]


def test_call_and_run_once_exit_3_when_the_sip_stack_cannot_start(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        config = sip_config(tmp_path, "sip:hotline@127.0.0.1:9",
                            local_port=taken.getsockname()[1])
        call = probe("call", "support", "-c", str(config))
        once = probe("run", "--once", "-c", str(config))
    assert call.returncode == EXIT_UNJUDGED, call.stderr[-2000:]
    assert "could not place the call" in call.stderr and "Traceback" not in call.stderr
    assert once.returncode == EXIT_UNJUDGED, once.stdout[-2000:] + once.stderr[-2000:]


def test_unknown_target_suggests_the_nearest_and_exits_2(tmp_path: Path) -> None:
    config = sip_config(tmp_path, "sip:hotline@127.0.0.1:9")
    proc = probe("call", "suport", "-c", str(config))
    assert proc.returncode == EXIT_USAGE
    assert "no target named 'suport' (did you mean 'support'?" in proc.stderr, proc.stderr
    assert probe("run", "--once", "-c", str(tmp_path / "missing.toml")).returncode == EXIT_USAGE


def _crash(*_: Any, **__: Any) -> Any:
    raise RuntimeError("boom")


@pytest.mark.parametrize("argv", [["call", "support"], ["run", "--once"], ["analyze", "x.wav"]])
def test_a_crash_is_one_line_and_exit_70(argv: list[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception: exit 70 (EX_SOFTWARE), one line; -v adds the traceback."""
    wav = tmp_path / "x.wav"
    wav.write_bytes((GREETING_WAV).read_bytes())
    config = sip_config(tmp_path, "sip:hotline@127.0.0.1:9")
    monkeypatch.setattr("probe.dial.runner.prepare_state_dir", _crash)
    monkeypatch.setattr("probe.daemon.run.run_daemon", _crash)
    monkeypatch.setattr("probe.audio.analysis.analyze", _crash)
    args = [*argv[:-1], str(wav)] if argv[0] == "analyze" else [*argv, "-c", str(config)]
    assert cli.main(args) == EXIT_SOFTWARE
    err = capsys.readouterr().err
    assert err.strip() == ("probe: internal error: RuntimeError: boom "
                           "(probe -v ... shows the traceback)")
    assert cli.main(["-v", *args]) == EXIT_SOFTWARE
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["call"], ["run"], ["analyze"], ["check-config"],
                                     ["prompts", "list"], ["prompts", "remove"]])
def test_every_help_names_its_exit_codes(command: list[str]) -> None:
    proc = probe(*command, "--help")
    assert proc.returncode == 0 and "exit codes:" in proc.stdout, proc.stdout
    assert "70" in proc.stdout


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_subcommand_says_what_it_does_and_its_exit_codes() -> None:
    """Read from the parser itself, so a command added later is held to it too."""
    commands = dict(_commands(cli._parser()))
    assert {("call",), ("line",), ("prompts", "show"), ("ops", "migrate")} <= set(commands)
    for path, sub in commands.items():
        text = sub.format_help()
        assert sub.description, f"probe {' '.join(path)} --help: no description"
        assert "exit codes:" in text and re.search(r"^  70 ", text, re.M), \
            f"probe {' '.join(path)} --help names no exit codes:\n{text}"


# ------------------------------------------------------------------------------ human output


@pytest.mark.parametrize("recorded", RESULTS, ids=lambda p: p.stem)
def test_human_output_has_no_python_words(recorded: Path) -> None:
    """Every human rendering of a real result (recorded from the daemon) is in words."""
    doc = json.loads(recorded.read_text())
    outputs = [cli.summarize(doc), results_table([doc])]
    if doc.get("analysis"):
        outputs.append(audio_cli.summarize({"zone": None, "tones": [], "dtmf": [],
                                            **doc["analysis"]}))
    for text in outputs:
        assert not PYTHON_WORDS.search(text), text


def test_summary_says_what_was_heard() -> None:
    doc = json.loads((ROOT / "tests" / "ops" / "data" / "sip-answered.json").read_text())
    heard = [line for line in cli.summarize(doc).splitlines() if "heard:" in line]
    assert heard and "MOS 4.41 (itu-t-g107/delay-assumed)" in heard[0], heard


# ------------------------------------------------------------------------------ prompts


def test_prompts_list_show_remove(tmp_path: Path) -> None:
    prompts = str(tmp_path / "prompts")
    assert probe("prompts", "list", "--prompts", prompts).stdout.startswith("no reference")
    assert probe("prompts", "add", "welcome", str(GREETING_WAV), "--prompts",
                 prompts).returncode == 0
    listed = probe("prompts", "list", "--prompts", prompts)
    assert listed.returncode == 0 and re.search(r"^welcome +\d+\.\d\d s, peak", listed.stdout,
                                                re.M), listed.stdout
    shown = probe("prompts", "show", "welcome", "--prompts", prompts)
    assert shown.returncode == 0 and "welcome.wav" in shown.stdout
    missing = probe("prompts", "show", "welcom", "--prompts", prompts)
    assert missing.returncode == EXIT_USAGE and "did you mean 'welcome'?" in missing.stderr
    removed = probe("prompts", "remove", "welcome", "--prompts", prompts)
    assert removed.returncode == 0 and not (tmp_path / "prompts" / "welcome.wav").exists()
    assert probe("prompts", "remove", "welcome", "--prompts", prompts).returncode == EXIT_USAGE


# ------------------------------------------------------------------------------ MQTT contract


def _content_types(sub: Subscriber) -> dict[str, set[str | None]]:
    seen: dict[str, set[str | None]] = {}
    for m in sub.messages:
        seen.setdefault(m.topic.rsplit("/", 1)[-1], set()).add(
            getattr(m.properties, "ContentType", None))
    return seen


WILL_SCRIPT = """
import os, sys
from probe.uplink.mqtt import Publisher
pub = Publisher(probe_id=sys.argv[1], host=sys.argv[2], port=int(sys.argv[3]))
assert pub.wait_connected(10)
pub.publish("result", {"id": "r1"}).wait(10)
os._exit(0)  # no DISCONNECT: the broker publishes the last will
"""


def test_every_json_message_carries_its_content_type(broker: LocalBroker) -> None:
    with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#") as sub:
        subprocess.run([sys.executable, "-c", WILL_SCRIPT, PROBE, broker.host,
                        str(broker.port)], check=True, timeout=30, cwd=ROOT)
        sub.wait_for(lambda msgs: any(b"connection lost" in m.payload for m in msgs), 15)
        with Publisher(probe_id=PROBE, host=broker.host, port=broker.port) as pub:
            assert pub.wait_connected(10)
            pub.publish("health", {"uptime_s": 1}, retain=True).wait(10)
            pub.publish("result", b'{"id": "r2"}').wait(10)  # bytes: the outbox's path
        sub.wait_for(lambda msgs: sum(b"offline" in m.payload for m in msgs) >= 2, 15)
    seen = _content_types(sub)
    assert seen["status"] == {"application/json"}, seen  # birth, will, planned stop
    assert seen["health"] == {"application/json"}, seen
    # A dict gets one; bytes as given (the forwarder sets it for outbox rows, test below).
    assert "application/json" in seen["result"], seen


def test_forwarded_results_carry_their_content_type(tmp_path: Path, broker: LocalBroker) -> None:
    from probe.uplink.forwarder import Forwarder
    from probe.uplink.outbox import Outbox

    with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/result") as sub, \
            Publisher(probe_id=PROBE, host=broker.host, port=broker.port) as pub:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        forwarder = Forwarder(outbox)
        forwarder.start(pub)
        try:
            forwarder.submit("result", {"id": "r3"})
            sub.wait_for(lambda msgs: msgs, 15)
        finally:
            forwarder.stop()
    assert _content_types(sub)["result"] == {"application/json"}


class _Controls:
    """The commands' controls (probe/uplink/commands.py Controls) of a probe with no lines."""

    def target(self, name: str) -> Target | None:
        return None

    def line_busy(self, channel: str) -> bool:
        return False

    def run_now(self, target: Target, channel: str, **job: Any) -> bool:
        return False

    def reload(self) -> list[tuple[str, str]]:
        return []

    def health(self) -> dict[str, Any]:
        return {"probe_id": PROBE}

    def silence(self) -> None:
        pass


def test_response_topic_is_honoured_when_it_is_the_probes_own(broker: LocalBroker) -> None:
    own = f"hotline-probe/v1/{PROBE}/cmd-reply"
    publishers: list[Publisher] = []
    handler = CommandHandler(
        _Controls(), lambda doc, props: publishers[0].publish("cmd-reply", doc, properties=props),
        probe_id=PROBE)
    with Subscriber(broker.host, broker.port, "#") as sub, \
            Publisher(probe_id=PROBE, host=broker.host, port=broker.port,
                      subscriptions=("cmd/+",), on_message=handler.receive) as pub:
        publishers.append(pub)
        assert pub.wait_connected(10)
        time.sleep(0.5)  # the SUBSCRIBE follows the CONNACK
        ops = CommandSender(broker, PROBE, client_id="ops-op")
        try:
            ops.send("health", correlation=b"own", ResponseTopic=own)
            ops.send("health", correlation=b"foreign", ResponseTopic="ops/inbox")
            sub.wait_for(lambda msgs: reply_messages(sub, b"own")
                         and reply_messages(sub, b"foreign"), 10)
        finally:
            ops.close()
    (mine,) = reply_messages(sub, b"own")
    (theirs,) = reply_messages(sub, b"foreign")
    assert mine.topic == own and "response_topic" not in mine.json()
    assert mine.properties.ContentType == "application/json"
    assert theirs.topic == own, "a foreign Response Topic is never written (the ACL)"
    assert "not honoured: 'ops/inbox'" in theirs.json()["response_topic"]
    assert not [m for m in sub.messages if m.topic == "ops/inbox"]


def test_an_expired_command_is_not_executed(broker: LocalBroker) -> None:
    """mosquitto drops a command whose Message Expiry passes while the probe is away; one that
    arrives carries the remaining seconds, and a run queued past them is not started."""
    received: list[tuple[str, Any]] = []

    def on_message(topic: str, payload: bytes, properties: Properties | None) -> None:
        received.append((topic, getattr(properties, "MessageExpiryInterval", None)))

    with Publisher(probe_id=PROBE, host=broker.host, port=broker.port,
                   subscriptions=("cmd/+",), on_message=on_message) as pub:
        assert pub.wait_connected(10)
        time.sleep(0.5)
    # the probe is away; its session (clean start off) keeps commands
    ops = CommandSender(broker, PROBE, client_id="ops-op")
    try:
        ops.send("health", correlation=b"short", MessageExpiryInterval=1)
        ops.send("reload", correlation=b"long", MessageExpiryInterval=120)
    finally:
        ops.close()
    time.sleep(2.5)
    with Publisher(probe_id=PROBE, host=broker.host, port=broker.port,
                   subscriptions=("cmd/+",), on_message=on_message) as pub:
        assert pub.wait_connected(10)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    assert [t.rsplit("/", 1)[-1] for t, _ in received] == ["reload"], received
    assert 110 <= received[0][1] <= 120
    assert Request("run", deadline=time.monotonic() - 1).expired()
    assert not Request("run", deadline=time.monotonic() + 60).expired()
    assert not Request("run").expired()


@pytest.mark.parametrize("scenario", ["idle", "off-hook", "ringing", "reversed", "cut", "low",
                                      "dead-board"])
def test_probe_line_human_output_has_no_python_words(scenario: str, tmp_path: Path) -> None:
    config = probe_config.write_config(
        tmp_path, targets=[probe_config.sip_target("support", "sip:x@127.0.0.1:9")],
        line={})
    proc = probe("line", "--sim", scenario, "--seconds", "0.3", "-c", str(config))
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert proc.stdout and not PYTHON_WORDS.search(proc.stdout), proc.stdout


# ------------------------------------------------------------------------------ progress


def on_a_terminal(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    """``probe ARGS`` with stderr on a real pseudo-terminal and stdout on a pipe, as an operator
    who pipes the JSON away runs it: (exit code, stdout, what the terminal showed)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "probe", *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)  # the child's is the only one left: EIO once it exits
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    read = {master: b"", out: b""}
    open_fds = set(read)
    deadline = time.monotonic() + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 1.0)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's other end is closed
                    chunk = b""
                if chunk:
                    read[fd] += chunk
                else:
                    open_fds.discard(fd)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        proc.kill()
        proc.stdout.close()
    return code, read[out].decode(), read[master].decode().replace("\r\n", "\n")


STEPS = [r"^dialling sip:hotline@127\.0\.0\.1:\d+…$",
         r"^ringing after 0\.\d\d s \(180 Ringing\)$",
         r"^answered after \d\.\d\d s \(rang \d\.\d\d s\)$",
         r"^hearing the call…$",
         r"^hanging up after 5\.\d\d s on the line$",
         r"^call over after \d\.\d\d s \(200 OK\)$",
         r"^analysing what was heard \(5\.\d s of audio\)…$"]


@pytest.mark.slow
def test_call_on_a_terminal_shows_each_step_and_piped_shows_none(tmp_path: Path) -> None:
    """On a terminal: one line per step, in order, with its numbers; and none of the audio
    models' own chatter (the greeting is a known prompt, so ViSQOL's TFLite model loads)."""
    from probe.audio.prompts import add_prompt

    add_prompt(tmp_path / "state" / "prompts", "welcome", GREETING_WAV)
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=300), calls=2) as hotline:
        config = probe_config.write_config(
            tmp_path, probe={"max_jitter_s": 0},
            targets=[probe_config.sip_target("support", hotline.uri, hold_s=5, max_ring_s=3),
                     probe_config.sip_target("quick", hotline.uri, hold_s=0.5, max_ring_s=3)])
        code, out, shown = on_a_terminal("call", "support", "-c", str(config), "--json")
        piped = probe("call", "quick", "-c", str(config))
    assert code == EXIT_OK, shown
    doc = json.loads(out)  # stdout is the document alone
    assert doc["analysis"]["quality"]["full_reference"]["method"] == "visqol-v3-speech-lattice"
    lines = shown.splitlines()
    at = [next((i for i, line in enumerate(lines) if re.match(step, line)), None)
          for step in STEPS]
    assert None not in at and at == sorted(at), shown
    assert "TensorFlow" not in shown and "XNNPACK" not in shown, shown
    assert piped.returncode == EXIT_OK, piped.stderr[-2000:]
    assert "dialling" not in piped.stderr and "ringing" not in piped.stderr, piped.stderr
    assert "TensorFlow" not in piped.stderr, piped.stderr


def test_call_steps_from_the_timeline() -> None:
    """What each recorded event says, once each; a stamp corrected after the fact (earlier
    than what was already reported) is not news."""
    from probe.dial.progress import CallSteps, Step
    from probe.results.timeline import CallRecord, Ev

    seen: list[Step] = []
    record = CallRecord("sip", "support", "sip:x@h", 0, 0, observer=CallSteps(seen.append,
                                                                             "sip:x@h"))
    s = 1_000_000_000
    record.add(Ev.DIAL, 1 * s, attempt=1)
    record.add(Ev.PROGRESS, 1 * s + 100_000_000, 100, "Trying")
    record.add(Ev.PROGRESS, 1 * s + 250_000_000, 180, "Ringing")
    record.add(Ev.PROGRESS, 1 * s + 260_000_000, 180, "Ringing")  # a second 180: not news
    record.add(Ev.ANSWER, 3 * s + 350_000_000, 200, "OK")
    record.add(Ev.MEDIA_START, 3 * s + 400_000_000)
    record.add(Ev.EARLY_MEDIA, 2 * s)  # stamped after the fact, earlier: not reported
    record.add(Ev.HANGUP, 13 * s + 350_000_000, reason="hold_done")
    record.add(Ev.END, 13 * s + 500_000_000, 200, "OK")
    assert [step.text for step in seen] == [
        "dialling sip:x@h…", "ringing after 0.25 s (180 Ringing)",
        "answered after 2.35 s (rang 2.10 s)", "hearing the call…",
        "hanging up after 10.00 s on the line", "call over after 12.50 s (200 OK)"]
    assert [step.at_s for step in seen] == [0.0, 0.25, 2.35, 2.4, 12.35, 12.5]
    assert Step.from_json(seen[1].as_json()) == seen[1]


# ------------------------------------------------------------------------------ no chatter


def test_native_chatter_on_fd_2_is_dropped_and_real_errors_kept(
        capfd: pytest.CaptureFixture[str]) -> None:
    from probe.audio.quality import TFLITE_CHATTER, native_stderr_without

    with native_stderr_without(TFLITE_CHATTER):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: a real error from native code\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "ERROR: a real error from native code\nafter\n"


def test_analyze_says_nothing_of_tensorflow_on_stderr(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    assert probe("prompts", "add", "welcome", str(GREETING_WAV), "--prompts",
                 str(prompts)).returncode == 0
    proc = probe("analyze", str(GREETING_WAV), "--prompts", str(prompts), "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    # ViSQOL scored the prompt: its TFLite lattice model was loaded in this process
    assert json.loads(proc.stdout)["quality"]["full_reference"]["mos"] is not None
    assert proc.stderr == "", proc.stderr


# ------------------------------------------------------------------------------ modem port

MISSING_PORT = "/dev/serial/by-id/usb-SimTech_nothing_plugged_in-if02-port0"


def gsm_config(tmp_path: Path, port: str) -> Path:
    return probe_config.write_config(
        tmp_path, modems={"gsm": {"port": port}},
        targets=[{"name": "support", "number": "+33472000390", "channels": ["gsm"],
                  "expect": {"max_ring_s": 1, "hold_s": 0.5}}])


def test_check_config_warns_about_a_modem_port_that_does_not_exist(tmp_path: Path) -> None:
    proc = probe("check-config", "-c", str(gsm_config(tmp_path, MISSING_PORT)))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert (f"warning: modems.gsm.port: {MISSING_PORT} does not exist: check the modem's USB "
            "cable, the udev rule that gives it a stable name under /dev/serial/by-id, and "
            "the path") in proc.stderr, proc.stderr
    here = probe("check-config", "-c", str(gsm_config(tmp_path, str(GREETING_WAV))))
    assert here.returncode == EXIT_OK and "warning" not in here.stderr, here.stderr


@pytest.mark.slow
def test_a_call_on_a_missing_modem_port_names_the_port_and_the_remedy(tmp_path: Path) -> None:
    """The dialer waits for a re-enumerating port (10 s), then says what check-config says."""
    proc = probe("call", "support", "-c", str(gsm_config(tmp_path, MISSING_PORT)), "--json")
    assert proc.returncode == EXIT_UNJUDGED, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert (doc["outcome"], doc["modem"]["error"], doc["modem"]["port"]) == (
        "modem_error", "modem.port_missing", MISSING_PORT)
    (cause,) = doc["diagnosis"]["causes"]
    assert cause["code"] == "modem.port_missing"
    assert cause["summary"] == (f"The gsm modem's port {MISSING_PORT} does not exist "
                                "(modems.gsm.port).")
    assert cause["remedy"] == ("Check the modem's USB cable, the udev rule that gives it a "
                               "stable name under /dev/serial/by-id, and the path in "
                               "modems.gsm.port.")
    assert "firmware and power" not in proc.stdout


@pytest.mark.slow
def test_ctrl_c_during_a_call_hangs_up_and_exits_130_without_a_traceback(
        tmp_path: Path) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=20_000), calls=1) as hotline:
        config = probe_config.write_config(
            tmp_path, probe={"max_jitter_s": 0},
            targets=[probe_config.sip_target("support", hotline.uri, interval_s=3600,
                                             hold_s=0.5, max_ring_s=30)])
        proc = subprocess.Popen([sys.executable, "-m", "probe", "call", "support", "-c",
                                 str(config), "--progress"], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "ringing" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "ringing" in seen, seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, seen + err
    assert "probe: interrupted: the call was hung up" in err
    assert "Traceback" not in seen + err
    assert "aborted" in out, out  # still measured and shown


def test_probe_version_loads_no_analysis_libraries() -> None:
    """`probe --version` (and every parser build) leaves numpy, scipy and the audio models
    unloaded: on a Pi 3 they cost a second of CPU before anything is printed."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "probe", "--version"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.startswith("hotline-probe ")
    loaded = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
    assert "probe.cli" in loaded  # the import log is read
    assert not loaded & {"numpy", "scipy", "probe.audio.analysis"}, sorted(loaded)
