"""Remote commands and reloads, against the real daemon, a real broker and a SIPp hotline;
plus property tests: no command payload and no config file can crash the probe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.config.model import Target, load_config, parse_config
from probe.dial.progress import Step
from probe.errors import ConfigError
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.uplink.commands import SCHEMAS, CommandHandler, RateLimit, Request, parse
from tests.commanding import CommandSender, replies

PROBE = "p-cmd"


def write_config(path: Path, broker: LocalBroker, uri: str, names: tuple[str, ...]) -> None:
    probe_config.write_config(
        path.parent, name=path.name, probe_id=PROBE, site="Command lab",
        probe={"max_jitter_s": 0}, mqtt=probe_config.broker_section(broker),
        targets=[probe_config.sip_target(name, uri, interval_s=3600, hold_s=0.3)
                 for name in names])


@pytest.mark.slow
def test_commands_over_mqtt(tmp_path: Path, broker: LocalBroker) -> None:
    config = tmp_path / "probe.toml"
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=10) as hotline, \
            Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#") as sub:
        write_config(config, broker, hotline.uri, ("support",))
        daemon = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ops = CommandSender(broker, PROBE)
        try:
            sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), 20)

            ops.send("run", json.dumps({"target": "support"}), correlation=b"c-run")
            sub.wait_for(lambda msgs: len(replies(sub, b"c-run")) == 2, timeout=20)
            accepted, done = replies(sub, b"c-run")
            assert accepted == {"command": "run", "ok": True, "accepted": True}
            assert done["ok"] and done["result"]["outcome"] == "answered"

            ops.send("health", b"", correlation=b"c-health")
            sub.wait_for(lambda msgs: replies(sub, b"c-health"), timeout=5)
            health = replies(sub, b"c-health")[0]["health"]
            assert health["probe_id"] == PROBE
            assert health["channels"]["sip"]["last_success"]["target"] == "support"

            for name, payload, corr, reason in [
                ("reboot", b"{}", b"c-unknown", "unknown command"),
                ("run", b"{not json", b"c-json", "not JSON"),
                ("run", b'{"target": "support", "rm": "-rf"}', b"c-extra", "Additional"),
                ("run", b'{"target": "nope"}', b"c-target", "no target named"),
                ("run", b"x" * 5000, b"c-big", "over the 4096-byte limit"),
            ]:
                ops.send(name, payload, correlation=corr)
                sub.wait_for(lambda msgs, c=corr: replies(sub, c), timeout=5)
                reply = replies(sub, corr)[0]
                assert not reply["ok"] and reason in reply["reason"], reply

            ops.send("silence", b"", correlation=b"c-silence")  # the logging indicator stands in
            sub.wait_for(lambda msgs: replies(sub, b"c-silence"), timeout=5)
            assert replies(sub, b"c-silence")[0] == {"command": "silence", "ok": True}

            # Reload: an invalid file is rejected and the old configuration kept...
            good = config.read_text()
            config.write_text(good.replace('interval_s = 3600', 'interval_s = "hourly"'))
            ops.send("reload", b"", correlation=b"c-reload-bad")
            sub.wait_for(lambda msgs: replies(sub, b"c-reload-bad"), timeout=5)
            bad = replies(sub, b"c-reload-bad")[0]
            assert not bad["ok"] and any("interval_s" in p for p in bad["problems"])
            # ...a valid one with a new target applies at once, over SIGHUP too.
            write_config(config, broker, hotline.uri, ("support", "sales"))
            daemon.send_signal(signal.SIGHUP)
            sub.wait_for(lambda msgs: any(m.topic.endswith("/result") and m.json()["target"]
                                          == "sales" for m in msgs), timeout=20)
            assert daemon.poll() is None  # nothing above took the daemon down
        finally:
            ops.close()
            daemon.send_signal(signal.SIGTERM)
            out, _ = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, out[-3000:]


def test_rate_limit_allows_a_burst_then_one_per_period() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, every_s=10, clock=lambda: now[0])
    assert [limit.allow() for _ in range(4)] == [True, True, True, False]
    now[0] = 9.0
    assert not limit.allow()
    now[0] = 10.5
    assert limit.allow()
    assert not limit.allow()


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.sampled_from(sorted(SCHEMAS)), st.text(max_size=30)),
       payload=st.one_of(st.binary(max_size=300),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                      lambda c: st.lists(c) | st.dictionaries(st.text(), c),
                                      max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_no_command_payload_crashes_the_parser(name: str, payload: bytes) -> None:
    args, problem = parse(name, payload)
    assert (args is None) != (problem is None)
    if args is not None:
        assert name in SCHEMAS and isinstance(args, dict)


toml_values = st.one_of(st.integers(-10, 10**6), st.text(max_size=20), st.booleans(),
                        st.floats(allow_nan=False), st.lists(st.text(max_size=5), max_size=3))


class Lines:
    """The commands' controls (probe/uplink/commands.py Controls) of a probe with one SIP line,
    busy or not, whose queued calls are kept here; its reload fails on demand."""

    def __init__(self, targets: tuple[Target, ...], busy: bool = False) -> None:
        self.targets, self.busy = targets, busy
        self.queued: list[dict] = []
        self.reload_problems: list[tuple[str, str]] = []
        self.silenced = 0

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def line_busy(self, channel: str) -> bool:
        return channel == "sip" and self.busy

    def run_now(self, target: Target, channel: str, **job) -> bool:
        if channel != "sip":
            return False
        self.queued.append({"target": target.name, "channel": channel, **job})
        return True

    def reload(self) -> list[tuple[str, str]]:
        return self.reload_problems

    def health(self) -> dict:
        return {"probe_id": PROBE, "queued": len(self.queued)}

    def silence(self) -> None:
        self.silenced += 1


def test_the_handler_carries_out_commands_on_its_controls(tmp_path: Path) -> None:
    """Each command, as the control socket hands it over (replies to a sink): what it asks of
    the controls, and what it answers."""
    config = load_config(probe_config.write_config(tmp_path, targets=[
        probe_config.sip_target("support", "sip:support@127.0.0.1"),
        {"name": "sales", "number": "+33472000390", "channels": ["gsm"]}],
        modems={"gsm": {"port": "loop://"}}))
    lines = Lines(config.targets, busy=True)
    # No publish function: every reply goes to its request's sink.  Rate: room for them all.
    handler = CommandHandler(lines, rate=RateLimit(burst=20, every_s=3600))
    answers: list[dict] = []
    steps: list[Step] = []

    def command(name: str, args: dict | None = None, **request) -> dict:
        answers.clear()
        handler.handle(Request(name, sink=answers.append, origin="test", **request),
                       json.dumps(args or {}).encode())
        (answer,) = answers
        return answer

    assert command("run", {"target": "nobody"}) == {
        "command": "run", "ok": False, "reason": "no target named 'nobody'"}
    assert command("run", {"target": "support", "channel": "gsm"}) == {
        "command": "run", "ok": False, "reason": "target 'support' has no gsm channel"}
    assert command("run", {"target": "sales"}) == {
        "command": "run", "ok": False, "reason": "no gsm line"}
    assert lines.queued == []
    # The SIP line is busy: the call is queued behind it, and the requester is told so.
    assert command("run", {"target": "support"}, progress=steps.append, document=True) == {
        "command": "run", "ok": True, "accepted": True}
    assert [step.name for step in steps] == ["queued"]
    assert "waiting for the sip line" in steps[0].text
    (job,) = lines.queued
    assert (job["target"], job["channel"], job["document"]) == ("support", "sip", True)
    assert job["progress"] is not None and job["expired"]() is False
    job["reply"]({"ok": True, "result": {"id": "r1"}})  # the worker's answer, when it ended
    assert answers[-1] == {"command": "run", "ok": True, "result": {"id": "r1"}}
    lines.busy = False
    command("run", {"target": "support"}, progress=steps.append)
    assert len(steps) == 1 and len(lines.queued) == 2  # an idle line: no "queued" step

    assert command("health") == {"command": "health", "ok": True,
                                 "health": {"probe_id": PROBE, "queued": 2}}
    assert command("silence") == {"command": "silence", "ok": True} and lines.silenced == 1
    assert command("reload") == {"command": "reload", "ok": True}
    lines.reload_problems = [("targets[0].interval_s", "must be at least 10")]
    assert command("reload") == {
        "command": "reload", "ok": False, "reason": "invalid configuration, old one kept",
        "problems": ["targets[0].interval_s: must be at least 10"]}
    assert handler.received == 9 and handler.rejected == 0


@settings(max_examples=200, deadline=None)
@given(probe=st.dictionaries(st.sampled_from(["id", "site", "state_dir", "max_jitter_s", "x"]),
                             toml_values),
       target=st.dictionaries(st.sampled_from(["name", "sip_uri", "number", "channels",
                                               "interval_s", "dtmf", "expect"]), toml_values))
def test_no_config_crashes_validation(probe: dict, target: dict) -> None:
    """Any document either parses or raises ConfigError naming keys, never anything else."""
    try:
        parse_config({"probe": probe, "targets": [target]}, environ=dict(os.environ))
    except ConfigError as exc:
        assert exc.problems and all(isinstance(k, str) and r for k, r in exc.problems)


def test_watchdog_is_pinged_over_a_real_notify_socket(tmp_path: Path) -> None:
    import socket

    from probe.daemon.systemd import Notifier

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        notifier = Notifier(str(path), "20000000")
        assert notifier.watchdog_interval_s == 10.0
        notifier.ready("testing 3 targets")
        notifier.watchdog()
        assert server.recv(100) == b"READY=1\nSTATUS=testing 3 targets"
        assert server.recv(100) == b"WATCHDOG=1"
    assert not Notifier(None, None).watchdog()  # outside systemd: a no-op


@pytest.mark.slow
def test_daemon_notifies_systemd_ready_and_pings_the_watchdog(tmp_path: Path,
                                                              broker: LocalBroker) -> None:
    import socket

    config = tmp_path / "probe.toml"
    sock_path = tmp_path / "notify"
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50)) as hotline, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock_path))
        server.settimeout(20)
        write_config(config, broker, hotline.uri, ("support",))
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
        daemon = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            messages = []
            deadline = time.monotonic() + 20
            while messages.count(b"WATCHDOG=1") < 3 and time.monotonic() < deadline:
                messages.append(server.recv(200))
            assert messages[0].startswith(b"READY=1")
            assert messages.count(b"WATCHDOG=1") >= 3
            daemon.send_signal(signal.SIGTERM)
            while b"STOPPING=1" not in messages and time.monotonic() < deadline:
                messages.append(server.recv(200))
            assert b"STOPPING=1" in messages
        finally:
            daemon.kill()
            daemon.wait(10)


def test_asyncapi_document_matches_the_code() -> None:
    """The AsyncAPI file next to the result schema names the topics and commands the code
    uses."""
    import yaml

    from probe.uplink.mqtt import HEALTH, RECORDING, RESULT, STATUS, TOPIC_ROOT

    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "probe" / "schema"
                          / "asyncapi.yaml").read_text())
    addresses = {c["address"] for c in doc["channels"].values()}
    for leaf in (STATUS, RESULT, HEALTH, RECORDING, "cmd-reply", "cmd/{command}"):
        assert f"{TOPIC_ROOT}/{{probeId}}/{leaf}" in addresses
    command = doc["channels"]["command"]["parameters"]["command"]
    assert sorted(command["enum"]) == sorted(SCHEMAS)
    assert doc["components"]["messages"]["result"]["payload"]["$ref"] == "result-v1.json"
