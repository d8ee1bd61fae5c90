"""Soak run (``make soak``, not in CI): `probe run` for ``--minutes`` of fast calls against SIPp
while the broker is killed -9 at random, the configuration is reloaded (now and then with a
pathological file) and the state disk fills and empties.  Prints the figures at the end:

    results produced (the daemon's log) vs received by a consumer after de-duplication,
    duplicates, workers alive, probe faults, RSS of the daemon at start and end.

Exit status 0 when every result produced reached the consumer, no worker died and the daemon
stopped cleanly; 1 otherwise.  Needs root for the tmpfs (a full disk of its own).

    .venv/bin/python tests/soak.py --minutes 60
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline

PROBE = "p-soak"
TARGETS = 20  # at interval 30 s, one SIP line calls back to back: about one call a second
DISK = "32m"


@dataclass
class Figures:
    kills: int = 0
    reloads: int = 0
    bad_reloads: int = 0
    disk_fills: int = 0
    rss_kib: list[int] = field(default_factory=list)
    rss_series: list[int] = field(default_factory=list)  # after each fault: growth, or warm-up


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(1 << 20))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def write_config(directory: Path, state: Path, broker: LocalBroker, uri: str) -> Path:
    targets = [probe_config.sip_target(f"t{i}", uri, interval_s=30, hold_s=0.2, max_ring_s=3)
               for i in range(TARGETS)]
    config = probe_config.write_config(
        directory, probe_id=PROBE, probe={"max_jitter_s": 0}, targets=targets,
        mqtt=probe_config.broker_section(broker, keepalive_s=5, drain_rate_per_s=100))
    # The state on the small disk of its own.
    text = config.read_text().replace(str(directory / "state"), str(state))
    config.write_text(text)
    return config


def chaos(rng: random.Random, figures: Figures, broker: LocalBroker, daemon: subprocess.Popen,
          config: Path, state: Path) -> None:
    """One random fault, then back to normal."""
    fault = rng.choice(["kill", "kill", "reload", "bad_reload", "disk"])
    if fault == "kill":
        broker.kill()
        time.sleep(rng.uniform(0.2, 3.0))
        broker.start()
        figures.kills += 1
    elif fault == "reload":
        daemon.send_signal(signal.SIGHUP)
        figures.reloads += 1
    elif fault == "bad_reload":
        good = config.read_text()
        config.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        config.write_text(good)
        figures.bad_reloads += 1
    else:
        filler = fill(state)
        time.sleep(rng.uniform(3, 10))
        filler.unlink()
        figures.disk_fills += 1


def read_log(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"msg": line, "raw": True})
    return lines


def run(minutes: float, seed: int) -> int:
    rng = random.Random(seed)
    figures = Figures()
    work = Path(tempfile.mkdtemp(prefix="probe-soak-"))
    state = work / "state-disk"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(state)],
                   check=True)
    broker = LocalBroker(persistent=True,
                         extra_config="autosave_interval 1\nautosave_on_changes true").start()
    hotline = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=100_000).start()
    log_path = work / "probe.log"
    try:
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#",
                        client_id="soak-consumer", session_expiry_s=3600,
                        reconnect_delay_s=(0.05, 0.1)) as sub:
            sub.quiet()
            config = write_config(work, state, broker, hotline.uri)
            with open(log_path, "w") as log_file:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "probe", "run", "-c", str(config), "--log-format",
                     "json"], stdout=log_file, stderr=subprocess.STDOUT)
            time.sleep(20)  # warmed up: the SIP endpoint, the first calls
            figures.rss_kib.append(rss_kib(daemon.pid))
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(rng.uniform(3, 12))
                chaos(rng, figures, broker, daemon, config, state)
                figures.rss_series.append(rss_kib(daemon.pid) if daemon.poll() is None else 0)
            figures.rss_kib.append(rss_kib(daemon.pid) if daemon.poll() is None else 0)
            time.sleep(35)  # the last calls end, the outbox drains
            alive = daemon.poll() is None
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
            time.sleep(2)
            messages = sub.messages
    finally:
        hotline.stop()
        broker.close()
        subprocess.run(["umount", "-l", str(state)], check=False)
    return report(figures, read_log(log_path), messages, alive, code, log_path)


def report(figures: Figures, log: list[dict[str, Any]], messages: list, alive: bool,
           code: int, log_path: Path) -> int:
    produced = [line["msg"].rsplit("id=", 1)[1] for line in log if " id=" in line.get("msg", "")]
    results = [m.json()["id"] for m in messages if m.topic.endswith("/result")]
    unique = set(results)
    missing = [i for i in produced if i not in unique]
    died = [line for line in log if line.get("event") == "thread_died"]
    faults = [line for line in log if line.get("event") == "probe_fault"]
    storage = [line for line in log if line.get("event") == "storage_error"]
    raw = [line for line in log if line.get("raw") and "Traceback" in line["msg"]]
    healths = [m.json() for m in messages if m.topic.endswith("/health")]
    last = healths[-1] if healths else {}
    print(f"soak figures ({log_path})")
    print(f"  broker kill -9: {figures.kills}, SIGHUP: {figures.reloads} valid + "
          f"{figures.bad_reloads} pathological, disk filled: {figures.disk_fills}")
    print(f"  results produced: {len(produced)}, received: {len(results)}, "
          f"unique received: {len(unique)}, duplicates: {len(results) - len(unique)}, "
          f"missing: {len(missing)}")
    print(f"  daemon alive at the end: {alive}, exit code: {code}, threads died: {len(died)}, "
          f"raw tracebacks: {len(raw)}")
    print(f"  probe faults: {len(faults)}, storage errors logged: {len(storage)}, "
          f"last health threads_alive: {last.get('threads_alive')}, "
          f"channels: { {c: v['state'] for c, v in last.get('channels', {}).items()} }")
    start, end = [*figures.rss_kib, 0, 0][:2]
    print(f"  RSS start (after 20 s): {start} KiB, end: {end} KiB ({end - start:+d} KiB)")
    series = figures.rss_series
    quarters = [series[i * (len(series) - 1) // 4] for i in range(5)] if series else []
    print(f"  RSS over the run (KiB, at 0/25/50/75/100 %): {quarters}")
    ok = not missing and not died and alive and code == 0 and not raw
    print("  OK" if ok else f"  FAILED: missing {missing[:10]}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"soak: {args.minutes} min, seed {args.seed}")
    return run(args.minutes, args.seed)


if __name__ == "__main__":
    sys.exit(main())
