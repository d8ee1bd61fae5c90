"""Re-record the result documents the ops tests start from: ``python -m tests.ops.record``.

The documents in ``tests/ops/data/`` were made by the probe's real daemon calling SIPp hotlines
and the GSM modem emulator on loopback (the set-up of ``make demo``), so the ops tests ingest what
a probe really publishes, not documents written by hand beside the code that reads them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import ExitStack
from pathlib import Path

from probe.daemon.run import Daemon
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import NEVER_ANSWER, HotlineBehaviour, SippHotline
from probe.sim.modem import ModemEmulator, scenario
from probe.sim.probe_config import broker_section, sip_target, write_config

DATA = Path(__file__).parent / "data"
SIP = {
    "sip-answered": HotlineBehaviour(pdd_ms=400, ring_ms=1500),
    "sip-busy": HotlineBehaviour(pdd_ms=250, ring_ms=400, final=486),
    "sip-no-answer": HotlineBehaviour(pdd_ms=300, final=NEVER_ANSWER),
    "sip-503": HotlineBehaviour(pdd_ms=200, ring_ms=0, final=503),
}
GSM = {
    "gsm-answered": scenario("answered", pdd_ms=600, ring_ms=1000),
    "gsm-busy": scenario("busy", pdd_ms=600, ring_ms=800),
    "gsm-not-registered": scenario("not_registered"),
}
EXPECT = {"max_post_dial_delay_ms": 3000, "max_ring_s": 4, "hold_s": 2}


def record() -> list[Path]:
    logging.getLogger("probe").setLevel(logging.WARNING)
    written = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ops-record-")))
        broker = stack.enter_context(LocalBroker())
        targets = []
        for name, behaviour in SIP.items():
            hotline = stack.enter_context(SippHotline(behaviour))
            targets.append(sip_target(name, hotline.uri, interval_s=900, **EXPECT))
        config_paths = [write_config(work, probe_id="rec-sip", site="Recording office",
                                     targets=targets, mqtt=broker_section(broker))]
        for name, script in GSM.items():
            sub = work / name
            sub.mkdir()
            modem = stack.enter_context(ModemEmulator("sim7600", script, audio_port=True,
                                                      directory=sub))
            config_paths.append(write_config(
                sub, probe_id=f"rec-{name}", site="Recording office",
                targets=[{"name": name, "number": "+33472000390", "channels": ["gsm"],
                          "expect": EXPECT}],
                mqtt=broker_section(broker),
                modems={"gsm": {"port": modem.url, "audio_port": modem.audio_url}}))
        sub = stack.enter_context(Subscriber(broker.host, broker.port,
                                             "hotline-probe/v1/+/result"))
        for path in config_paths:
            Daemon(str(path), once=True).run()
        sub.wait_for(lambda msgs: len(msgs) >= len(SIP) + len(GSM), timeout=20)
        for message in sub.messages:
            doc = message.json()
            out = DATA / f"{doc['target']}.json"
            out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            written.append(out)
    return written


if __name__ == "__main__":
    for path in record():
        print(path)
