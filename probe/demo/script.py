"""``make demo``: the whole chain on one machine, with local stand-ins for the outside world.

Starts a mosquitto on a free loopback port (the central broker), three SIPp hotlines on loopback
— one that rings and answers with a spoken greeting, one busy, one that rings and never answers —
then runs the probe's real daemon path (``probe run --once``) against them, and prints every
message a central subscriber receives over MQTT, then a table of the results as ops see them.

At a terminal it ends with the console: the ops service keeps running on the demo's data, with
a ``demo`` user made for the run, until Ctrl-C.  Without one (CI, a pipe) it returns by itself.
Either way, everything it starts is stopped before it returns.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from probe.daemon.run import Daemon
from probe.demo import fleet
from probe.demo.board import run_board_demo
from probe.human import words
from probe.sim.broker import LocalBroker, Message, Subscriber
from probe.sim.hotline import NEVER_ANSWER, HotlineBehaviour, SippHotline
from probe.sim.modem import ModemEmulator, scenario
from probe.sim.probe_config import broker_section, sip_target, write_config

HOTLINES: dict[str, tuple[str, HotlineBehaviour]] = {
    "support": ("rings 2 s, answers with a greeting",
                HotlineBehaviour(pdd_ms=400, ring_ms=2000)),
    "sales": ("busy", HotlineBehaviour(pdd_ms=250, ring_ms=600, final=486)),
    "after-hours": ("rings and nobody answers", HotlineBehaviour(pdd_ms=300, final=NEVER_ANSWER)),
}

# The GSM call: a SIM7600 emulator behind a real pseudo-terminal (probe/sim/modem.py).
MOBILE = ("mobile", "+33472000390", "rings 1.5 s over GSM (emulated SIM7600), answers",
          scenario("answered", pdd_ms=800, ring_ms=1500))

EXPECT = {"max_post_dial_delay_ms": 3000, "max_ring_s": 5, "hold_s": 4}


def run_demo(out: Any = None, *, serve: bool | None = None) -> int:
    """The demo; 0 when every call and every ops judgement came out as expected, else 1.
    ``serve``: keep the console up until Ctrl-C afterwards (default: when stdin and ``out``
    are a terminal — nobody is there to press Ctrl-C otherwise)."""
    out = out or sys.stdout
    if serve is None:
        serve = sys.stdin.isatty() and _isatty(out)
    logging.getLogger("probe").setLevel(logging.WARNING)
    # ops reports its incidents below, in the demo's own words; its log lines would interleave
    logging.getLogger("probe.ops").setLevel(logging.ERROR)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    say = _printer(out)
    started = time.monotonic()
    # Two stacks: the central side (work dir, broker, ops) outlives the stand-ins, so the
    # console can show the demo's data after the board demo; the stand-ins stop as before.
    with ExitStack() as central, ExitStack() as stack:
        work = Path(central.enter_context(tempfile.TemporaryDirectory(prefix="probe-demo-")))
        broker = central.enter_context(LocalBroker())
        say(f"central broker: mosquitto on {broker.host}:{broker.port}")
        ops = fleet.start_ops(work, broker)
        central.callback(ops.stop)
        say(f"central ops service: SQLite in {work / 'ops'}, API and console at "
            f"http://127.0.0.1:{ops.http_port}/ (consuming $share/ops/hotline-probe/v1/+/result)")
        targets = []
        for name, (what, behaviour) in HOTLINES.items():
            hotline = stack.enter_context(SippHotline(behaviour))
            say(f"hotline {name!r}: SIPp at {hotline.uri} — {what}")
            targets.append(sip_target(name, hotline.uri, interval_s=900, **EXPECT))
        name, number, what, script = MOBILE
        modem = stack.enter_context(ModemEmulator("sim7600", script, audio_port=True,
                                                  directory=work))
        say(f"hotline {name!r}: {number} through a modem at {modem.url} — {what}")
        targets.append({"name": name, "number": number, "channels": ["gsm"],
                        "expect": {**EXPECT, "hold_s": 3}})
        config_path = write_config(
            work, probe_id="demo-probe", site="Demo branch office", targets=targets,
            mqtt=broker_section(broker),
            modems={"gsm": {"port": modem.url, "audio_port": modem.audio_url}},
            header="# Written by `probe demo`: the probe's configuration for the local "
                   "stand-ins.\n")
        say(f"probe config: {config_path}\n")
        say("central ops subscriber on hotline-probe/v1/# receives:")
        assert broker.port is not None  # started: it has its port
        subscriber = stack.enter_context(
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#",
                       on_message=lambda m: say("  " + _one_line(m))))
        daemon = Daemon(str(config_path), once=True)
        daemon.run()
        subscriber.wait_for(lambda msgs: sum(m.topic.endswith("/result") for m in msgs)
                            >= len(HOTLINES) + 1, timeout=10)
        results = [m.json() for m in subscriber.messages if m.topic.endswith("/result")]
        say("\n" + results_table(results))
        say("\nmore branch offices, for the central view:")
        subscriber.quiet()  # the fleet's own messages are not printed one by one
        fleet_results = fleet.run_fleet(say, stack, work, broker)
        open_keys = fleet.report(say, ops, len(results) + fleet_results)
        stack.close()  # the hotlines, the modem, the subscriber: done
        # The probe board (status LED, buzzer, silence button, line voltage) on gpiozero mock
        # pins with a simulated line: probe/demo/board.py.
        say("\nthe probe board: LED, buzzer and line (gpiozero mock pins, simulated line):")
        board_ok = run_board_demo(say, daemon.verdicts.status())  # its LED's own verdicts
        say(f"\ndemo finished in {time.monotonic() - started:.1f} s.")
        if serve:
            serve_console(say, ops)
    say("everything the demo started is stopped.")
    ok = {r["target"]: r["outcome"] for r in results} == {
        "support": "answered", "sales": "busy", "after-hours": "no_answer",
        MOBILE[0]: "answered"}
    # orders: down at three sites; Nantes: its own line; sales / after-hours: their only site
    # says so; support answers wherever a line works: no incident.
    ok = ok and open_keys == {"hotline:orders", "probe:nantes:analog", "hotline:sales",
                              "hotline:after-hours"}
    return 0 if ok and board_ok else 1


def serve_console(say: Any, ops: Any, stop: threading.Event | None = None) -> None:
    """Keep the ops service up on the demo's data, with a ``demo`` operator whose password is
    made here and printed once, until SIGINT / SIGTERM (or ``stop``)."""
    from probe.ops import auth
    from probe.ops.db import transaction

    password = secrets.token_urlsafe(12)
    with transaction(ops.sessions) as session:
        auth.create_user(session, "demo", password, "operator")
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        say(f"\nthe console, on the demo's data: http://127.0.0.1:{ops.http_port}/\n"
            f"  log in as demo, password {password}  (role operator; this run only)\n"
            "press Ctrl-C to stop.")
        # A bounded wait: the signal handler runs in this thread, between two waits.
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("\nstopping.")


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def results_table(results: list[dict[str, Any]]) -> str:
    header = ("target", "channel", "outcome", "met", "PDD ms", "answer ms", "rang ms", "final",
              "RTP rx", "loss", "verdict", "causes")
    rows = [header]
    for r in results:
        t, sip, rtp = r["timings_ms"], r["sip"] or {}, r["rtp"] or {}
        diagnosis = r.get("diagnosis") or {}
        rows.append((r["target"], r["channel"], r["outcome"],
                     "yes" if r["expectations"]["met"] else "no",
                     _cell(t["post_dial_delay"]), _cell(t["time_to_answer"]),
                     _cell(t["ring_duration"]),
                     _cell(sip.get("final_code") if sip else (r.get("modem") or {}).get("result")),
                     _cell(rtp.get("packets_received")), _cell(rtp.get("loss_ratio")),
                     _cell(diagnosis.get("verdict")),
                     ", ".join(c["code"] for c in diagnosis.get("causes", [])) or "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    table = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                      for row in rows)
    remedies = [f"  {r['target']}/{r['channel']}: {c['summary']} -> {c['actor']}: {c['remedy']}"
                for r in results for c in (r.get("diagnosis") or {}).get("causes", [])
                if c["scope"] != "meta"]
    return table + ("\n\nwhat to do:\n" + "\n".join(remedies) if remedies else "")


def _cell(value: Any) -> str:
    return words(value)


def _one_line(message: Message) -> str:
    leaf = message.topic.rsplit("/", 1)[-1]
    try:
        doc = message.json()
    except ValueError:
        return f"{message.topic}: {message.payload!r}"
    if leaf == "result":
        return (f"{message.topic}: {doc['target']} → {doc['outcome']} "
                f"(id {doc['id'][:8]}…, {len(json.dumps(doc))} bytes)")
    retained = " [retained]" if message.retain else ""
    if leaf == "status" and doc.get("state") == "online" and "targets" in doc:
        verdicts = "; ".join(f"{name} {v['verdict']}" + (f" ({', '.join(v['causes'])})"
                                                          if v["causes"] else "")
                             for name, v in doc["targets"].items()) or "no verdict yet"
        probe = "ok" if doc["probe"]["ok"] else f"faults {doc['probe']['faults']}"
        return f"{message.topic}{retained}: online (boot {doc['boot']}); {verdicts}; probe {probe}"
    if leaf == "health":
        outbox = doc["outbox"]
        channels = ", ".join(f"{name} {c['state']}" for name, c in doc["channels"].items())
        clock = "synced" if doc["clock_synced"] else "not synchronised"
        return (f"{message.topic}{retained}: outbox {outbox['count']} waiting, "
                f"{outbox['dropped']} dropped; {channels}; clock {clock}")
    return f"{message.topic}{retained}: {json.dumps(doc)}"


def _printer(out: Any):
    def say(text: str) -> None:
        print(text, file=out, flush=True)
    return say
