"""``make demo``'s second act: a small fleet into the central ops service, and what ops decides.

Three more branch offices run the real probe daemon once each, against SIPp hotlines on
loopback: the ``orders`` hotline is busy for everyone (a hotline down at several sites), while
``support`` answers at Lyon and Lille but Nantes calls it over an analog line that is dead (the
modem emulator hears no dial tone: that office's line, not the hotline).  Their results travel
the real way — outbox, MQTT, the ops service's shared subscription, its database — and ops,
correlating across the sites, names one hotline incident for ``orders`` and one probe incident
for Nantes's line, and no incident for ``support``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from probe.daemon.run import Daemon
from probe.ops.causes import describe
from probe.ops.config import parse_ops_config
from probe.ops.db import Incident, Probe, Result
from probe.ops.service import OpsService, Timing
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.modem import SCENARIOS, ModemEmulator
from probe.sim.probe_config import broker_section, sip_target, write_config

SITES = {"lyon": "Lyon Part-Dieu", "lille": "Lille Europe", "nantes": "Nantes Centre"}
EXPECT = {"max_post_dial_delay_ms": 3000, "max_ring_s": 5, "hold_s": 1}


def start_ops(work: Path, broker: Any) -> OpsService:
    """The ops service as a laptop runs it: SQLite in its state dir, HTTP on a free port.  The
    demo judges on one round (a deployment would confirm over 2 of 3)."""
    config = parse_ops_config({
        "ops": {"instance": "demo-ops", "state_dir": str(work / "ops")},
        "mqtt": {"host": broker.host, "port": broker.port},
        "http": {"port": 0},
        "correlation": {"round_s": 600, "min_sites": 2, "rounds_required": 1,
                        "rounds_window": 1, "recover_rounds": 1},
    })
    return OpsService(config, timing=Timing(evaluate_s=0.1)).start()


def run_fleet(say: Callable[[str], None], stack: ExitStack, work: Path, broker: Any) -> int:
    """Run the three offices' probes once; the number of results they published."""
    orders = stack.enter_context(SippHotline(HotlineBehaviour(pdd_ms=200, ring_ms=300,
                                                              final=486), calls=3))
    say(f"hotline 'orders': SIPp at {orders.uri} — busy for every caller")
    support = stack.enter_context(SippHotline(HotlineBehaviour(pdd_ms=300, ring_ms=1000),
                                              calls=2))
    say(f"hotline 'support' as the offices reach it: SIPp at {support.uri} — answers")
    dead = replace(SCENARIOS["answered"], name="dead line", reg_stat=0)
    count = 0
    for probe_id, site in SITES.items():
        targets = [sip_target("orders", orders.uri, interval_s=900, **EXPECT)]
        sections: dict[str, Any] = {}
        if probe_id == "nantes":
            line = stack.enter_context(ModemEmulator("v253", dead, directory=work))
            targets.append({"name": "support", "number": "0240000000", "channels": ["analog"],
                            "expect": EXPECT})
            sections["modems"] = {"analog": {"port": line.url, "model": "v253"}}
            say(f"office {site}: calls orders over SIP, support over an analog line that is "
                "dead (no dial tone)")
        else:
            targets.append(sip_target("support", support.uri, interval_s=900, **EXPECT))
            say(f"office {site}: calls orders and support over SIP")
        directory = work / probe_id
        directory.mkdir()
        config = write_config(directory, probe_id=probe_id, site=site, targets=targets,
                              mqtt=broker_section(broker), **sections)
        Daemon(str(config), once=True).run()
        count += len(targets)
    return count


def report(say: Callable[[str], None], ops: OpsService, expected_results: int,
           timeout: float = 30) -> set[str]:
    """Wait until ops has stored and judged every result; print its view; the open keys."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ops.sessions() as s:
            stored = s.scalar(select(func.count()).select_from(Result)) or 0
        if stored >= expected_results and ops.dirty.idle:
            break
        time.sleep(0.1)
    with ops.sessions() as s:
        probes = list(s.scalars(select(Probe).order_by(Probe.id)))
        counts = dict(s.execute(select(Result.probe_id, func.count())
                                .group_by(Result.probe_id)).all())
        incidents = list(s.scalars(select(Incident).where(Incident.resolved_at.is_(None))
                                   .order_by(Incident.id)))
    say(f"\ncentral ops ({stored} results stored): the fleet")
    for p in probes:
        say(f"  {p.id:<11} {p.site or '':<20} {p.state:<8} {counts.get(p.id, 0)} result(s)")
    say("\ncentral ops: incidents, correlated across the sites")
    for i in incidents:
        summary, remedy = describe(i.cause, i.detail)
        say(f"  #{i.id} [{i.severity.upper()}] {i.key}  ({i.cause}; sites: "
            f"{', '.join(i.sites)})\n      {summary}\n      what to do: {remedy}")
    return {i.key for i in incidents}
