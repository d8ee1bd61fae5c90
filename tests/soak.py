"""Soak run (``make soak``, not in CI): `probe run` for ``--minutes`` of fast calls over SIP
(against SIPp) and over a GSM modem (the emulator behind a real pseudo-terminal, its PCM port
too), while at random

* the broker is killed -9 and started again;
* the configuration is reloaded with SIGHUP, now and then with a pathological file;
* the state disk (a tmpfs of its own) fills and empties;
* the modem is unplugged: both ptys close and the by-id paths the configuration names vanish,
  as /dev/serial/by-id/... does when a USB modem is pulled, for 3-40 s; then it re-enumerates
  behind the same paths, freshly booted;
* the daemon's wall clock steps forwards or backwards by 1-10 minutes (an NTP step), now and
  then to a clock 400 days behind (before this release: results must then say
  clock_synced false).  libfaketime (Debian's faketime) is preloaded into the daemon alone and
  follows a timestamp file the soak rewrites; the monotonic clock is left alone, as a step
  leaves it (tests/soak_sleep_fix.c says what Debian 12's libfaketime needs for that).

Prints the figures at the end:

    how long it ran, calls per line, every fault injected (kills, reloads, disk fills, unplugs,
    clock steps); results produced (the daemon's log) vs received by a consumer after
    de-duplication, duplicates; modem results (answered, probe-side faults, and whether the
    modem called through again after each re-plug); whether every result's started_at was the
    stepped wall clock of its moment and its clock_synced flag honest; the longest gap between
    two calls on a line (a stall) and any target called three times within one interval (a
    burst); workers alive, probe faults; RSS of the daemon at start and end.

Exit status 0 only when every result produced reached the consumer (once after de-duplication),
no call was left without a result (a probe fault), no worker died, the daemon stopped cleanly,
its RSS did not grow, every SIP call was answered (SIPp always answers), every modem result that
was not answered was a probe-side fault during an unplug and the modem called through again
after each re-plug, every timestamp and clock flag was honest, and scheduling neither stalled
nor burst; 1 otherwise.  "Did not grow": the median RSS of the run's last quarter is within
16 MiB (or 10 %) of its first quarter's.  Needs root (a tmpfs), libfaketime and a C compiler
(``make soak`` installs both).

    .venv/bin/python tests/soak.py --minutes 60
"""

from __future__ import annotations

import argparse
import bisect
import errno
import glob
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from probe.clock import EARLIEST_SANE_EPOCH, kernel_says_synced
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.modem import ModemEmulator, scenario

PROBE = "p-soak"
INTERVAL_S = 30
TARGETS = 20  # at interval 30 s, one SIP line calls back to back: about one call a second
MODEM_TARGETS = 4  # their calls share one grid: the modem busy ~10 s of every 30 s
MODEM_HOLD_S = 1.5  # long enough for an unplug to land inside calls too, not only between
UNPLUG_S = (3, 40)  # short ones fall between calls, long ones take a whole cycle of them
MODEM_SCENARIO = scenario("answered", pdd_ms=100, ring_ms=100)
DISK = "32m"
STALE_S = 400 * 86400  # a clock this far behind reads a time before this release was built
STEP_S = (60, 600)  # an NTP step of 1 to 10 minutes, either way
#: started_at is the wall clock read as the call began plus the monotonic time to the dial: the
#: dial may come this long after the read (the modem's reopen wait, its registration).
DIAL_AFTER_READ_S = 15.0
SLACK_S = 1.0  # a step and the soak's note of it are this close
STALL_S = INTERVAL_S + 30  # a line with no call for longer has stalled (an unplugged modem's
# calls still start every ~10 s: each waits 10 s for the port, then is a result)
UNPLUG_CALL_S = 15.0  # a call in flight at the unplug began at most this long before it
RSS_GROWTH_KIB = 16 * 1024  # growth allowed between the first and last quarter of the run ...
RSS_GROWTH_RATIO = 0.10  # ... or this share of the first quarter, whichever is more
SHIM = Path(__file__).with_name("soak_sleep_fix.c")


@dataclass
class Epoch:
    """From ``start`` (real Unix time) on, the daemon's wall clock reads real time plus
    ``offset_s``."""

    start: float
    offset_s: int


@dataclass
class Figures:
    kills: int = 0
    reloads: list[float] = field(default_factory=list)  # real times of valid SIGHUPs
    bad_reloads: int = 0
    disk_fills: int = 0
    unplugs: list[tuple[float, float]] = field(default_factory=list)  # real (pulled, back)
    epochs: list[Epoch] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    rss_series: list[int] = field(default_factory=list)  # after each fault: growth, or warm-up
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (real time, messages)
    chaos_from: float = 0.0
    chaos_to: float = 0.0
    stopped_at: float = 0.0


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


def write_config(directory: Path, state: Path, broker: LocalBroker, uri: str,
                 modem: ModemEmulator) -> Path:
    targets = [probe_config.sip_target(f"t{i}", uri, interval_s=INTERVAL_S, hold_s=0.2,
                                       max_ring_s=3) for i in range(TARGETS)]
    targets += [{"name": f"m{i}", "number": f"+3310000000{i}", "channels": ["gsm"],
                 "interval_s": INTERVAL_S,
                 "expect": {"hold_s": MODEM_HOLD_S, "max_ring_s": 3}}
                for i in range(MODEM_TARGETS)]
    config = probe_config.write_config(
        directory, probe_id=PROBE, probe={"max_jitter_s": 0}, targets=targets,
        mqtt=probe_config.broker_section(broker, keepalive_s=5, drain_rate_per_s=100),
        modems={"gsm": {"port": modem.url, "audio_port": modem.audio_url, "model": "sim7600"}})
    # The state on the small disk of its own.
    text = config.read_text().replace(str(directory / "state"), str(state))
    config.write_text(text)
    return config


# -- the daemon's clock ---------------------------------------------------------------------------

def libfaketime() -> str:
    """Debian's multi-threaded libfaketime (the daemon has a dozen threads)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        raise SystemExit("soak: libfaketime not found (apt-get install faketime; make soak "
                         "installs it)")
    return found[0]


def build_sleep_fix(work: Path) -> Path:
    shared = work / "soak_sleep_fix.so"
    built = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(shared),
                            str(SHIM), "-ldl"], capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"soak: cannot build {SHIM.name}: {built.stderr.strip()}")
    return shared


def set_clock(path: Path, offset_s: int) -> None:
    """The daemon's wall clock from now on: real time plus ``offset_s``.  The file is replaced
    whole, so libfaketime (which reads it at every clock read) never sees half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{offset_s:+d}\n")
    os.replace(tmp, path)


def faketime_env(clock_file: Path, sleep_fix: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LD_PRELOAD": f"{sleep_fix} {libfaketime()}",  # the fix first: it wins the symbol
        "FAKETIME_TIMESTAMP_FILE": str(clock_file),
        "FAKETIME_NO_CACHE": "1",  # the file is read at every clock read: a step lands at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # an NTP step leaves the monotonic clock alone
        # libfaketime 0.9.10 measures the deadline of a wait on a monotonic condition variable
        # against a faked clock; with this "fix" on (its default on glibc >= 2.30) the kernel
        # then gets a deadline in the past, so every such wait (Python's GIL hand-over among
        # them) returns at once and spins.  Off, the deadline goes to the kernel unchanged.
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }


def step_clock(rng: random.Random, figures: Figures, clock_file: Path) -> None:
    old = figures.epochs[-1].offset_s
    if old != -STALE_S and rng.random() < 0.25:
        new = -STALE_S  # a server a year and more behind (or a Pi back on a stale saved time)
    else:
        new = rng.choice((-1, 1)) * rng.randint(*STEP_S)
    set_clock(clock_file, new)
    figures.epochs.append(Epoch(time.time(), new))


# -- the faults ------------------------------------------------------------------------------------

def chaos(rng: random.Random, figures: Figures, broker: LocalBroker, daemon: subprocess.Popen,
          config: Path, state: Path, modem: ModemEmulator, clock_file: Path) -> None:
    """One random fault, then back to normal (a stepped clock stays stepped until the next)."""
    fault = rng.choice(["kill", "kill", "reload", "bad_reload", "disk", "unplug", "clock"])
    if fault == "kill":
        broker.kill()
        time.sleep(rng.uniform(0.2, 3.0))
        broker.start()
        figures.kills += 1
    elif fault == "reload":
        figures.reloads.append(time.time())
        daemon.send_signal(signal.SIGHUP)
    elif fault == "bad_reload":
        good = config.read_text()
        config.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        config.write_text(good)
        figures.bad_reloads += 1
    elif fault == "disk":
        filler = fill(state)
        time.sleep(rng.uniform(3, 10))
        filler.unlink()
        figures.disk_fills += 1
    elif fault == "unplug":
        pulled = time.time()
        modem.unplug()
        time.sleep(rng.uniform(*UNPLUG_S))
        modem.replug()
        figures.unplugs.append((pulled, time.time()))
    else:
        step_clock(rng, figures, clock_file)


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
    sleep_fix = build_sleep_fix(work)
    clock_file = work / "faketime"
    set_clock(clock_file, 0)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(state)],
                   check=True)
    broker = LocalBroker(persistent=True,
                         extra_config="autosave_interval 1\nautosave_on_changes true").start()
    # SIPp quits after its global timeout: it must outlive the run (it used to leave after a
    # minute, and every SIP call after that was "unreachable").
    hotline = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=1_000_000,
                          timeout_s=minutes * 60 + 600).start()
    modem = ModemEmulator("sim7600", MODEM_SCENARIO, directory=work, audio_port=True).start()
    log_path = work / "probe.log"
    try:
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#",
                        client_id="soak-consumer", session_expiry_s=3600,
                        reconnect_delay_s=(0.05, 0.1)) as sub:
            sub.quiet()
            config = write_config(work, state, broker, hotline.uri, modem)
            figures.epochs.append(Epoch(time.time(), 0))
            with open(log_path, "w") as log_file:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "probe", "run", "-c", str(config), "--log-format",
                     "json"], stdout=log_file, stderr=subprocess.STDOUT,
                    env=faketime_env(clock_file, sleep_fix))
            time.sleep(20)  # warmed up: the SIP endpoint, the modem, the first calls
            figures.rss_kib.append(rss_kib(daemon.pid))
            figures.chaos_from = time.time()
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(rng.uniform(3, 12))
                chaos(rng, figures, broker, daemon, config, state, modem, clock_file)
                figures.rss_series.append(rss_kib(daemon.pid) if daemon.poll() is None else 0)
                figures.arrivals.append((time.time(), len(sub.messages)))
            figures.chaos_to = time.time()
            figures.rss_kib.append(rss_kib(daemon.pid) if daemon.poll() is None else 0)
            time.sleep(35)  # the last calls end, the outbox drains
            alive = daemon.poll() is None
            figures.stopped_at = time.time()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
            time.sleep(2)
            messages = sub.messages
            figures.arrivals.append((time.time(), len(messages)))
    finally:
        modem.close()
        hotline.stop()
        broker.close()
        subprocess.run(["umount", "-l", str(state)], check=False)
    return report(figures, read_log(log_path), messages, alive, code, log_path)


# -- the figures -----------------------------------------------------------------------------------

def unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def real_start(doc: dict[str, Any], figures: Figures, arrived_by: float) -> float | None:
    """When the call really began (the soak's own, unstepped clock): its started_at less the
    offset of the clock step it fell in; None when it fits none (a dishonest timestamp).
    A call began before its result reached the consumer, which settles the rare stamp that
    fits two steps."""
    wall = unix(doc["started_at"])
    ends = [e.start for e in figures.epochs[1:]] + [figures.stopped_at]
    fits = [wall - e.offset_s for e, end in zip(figures.epochs, ends, strict=True)
            if e.start - SLACK_S <= wall - e.offset_s <= end + DIAL_AFTER_READ_S]
    fits = [t for t in fits if t <= arrived_by + SLACK_S]
    return max(fits) if fits else None


def arrival_bound(figures: Figures, index: int) -> float:
    """The real time by which message number ``index`` had reached the consumer."""
    counts = [n for _, n in figures.arrivals]
    at = bisect.bisect_right(counts, index)
    return figures.arrivals[at][0] if at < len(figures.arrivals) else figures.arrivals[-1][0]


def flag_check(doc: dict[str, Any], kernel_synced: bool) -> str | None:
    """"dishonest" when clock_synced is true of a stamp that is not trustworthy (before this
    release, or the kernel not synchronised); "cautious" when false of one that is."""
    sane = min(unix(doc["started_at"]), unix(doc["ended_at"])) >= EARLIEST_SANE_EPOCH
    if doc["clock_synced"] and not (sane and kernel_synced):
        return "dishonest"
    if not doc["clock_synced"] and sane and kernel_synced:
        return "cautious"
    return None


def probe_side(doc: dict[str, Any]) -> bool:
    """A modem result the probe is to blame for: never a verdict on the hotline."""
    diagnosis = doc.get("diagnosis") or {}
    return (doc["outcome"] == "modem_error" and diagnosis.get("verdict") == "unknown"
            and diagnosis.get("probe_ok") is False
            and {c["scope"] for c in diagnosis.get("causes", [])} == {"probe"})


def rss_growth(series: list[int]) -> tuple[int, int]:
    """(growth, allowed) in KiB: the median of the run's last quarter less its first's."""
    if len(series) < 8:
        return 0, RSS_GROWTH_KIB
    quarter = len(series) // 4
    first = statistics.median(series[:quarter])
    last = statistics.median(series[-quarter:])
    return int(last - first), int(max(RSS_GROWTH_KIB, RSS_GROWTH_RATIO * first))


def schedule_check(starts: dict[tuple[str, str], list[float]], figures: Figures
                   ) -> tuple[dict[str, float], list[str], dict[str, float]]:
    """Per line: the longest gap between two calls (a stall), the targets called three times
    within one interval without a reload between (a burst), and per line the longest wait
    for its first call after a clock step."""
    lines: dict[str, list[float]] = {}
    for (_, channel), times in starts.items():
        lines.setdefault(channel, []).extend(times)
    gaps = {}
    for channel, times in lines.items():
        edges = sorted([figures.chaos_from, *(t for t in times if t >= figures.chaos_from),
                        figures.stopped_at])
        gaps[channel] = max(b - a for a, b in itertools.pairwise(edges))
    bursts = []
    for (target, channel), times in starts.items():
        times = sorted(times)
        for a, c in zip(times, times[2:], strict=False):
            if c - a < INTERVAL_S and not any(a - SLACK_S <= r <= c for r in figures.reloads):
                bursts.append(f"{target}/{channel} at +{a - figures.chaos_from:.0f} s")
    after_step = {}
    for channel, times in lines.items():
        ordered = sorted(times)
        waits = []
        for epoch in figures.epochs[1:]:
            at = bisect.bisect_left(ordered, epoch.start)
            if at < len(ordered):
                waits.append(ordered[at] - epoch.start)
        after_step[channel] = max(waits, default=0.0)
    return gaps, bursts, after_step


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

    # Every result once, with the real time its call began.
    docs: dict[str, dict[str, Any]] = {}
    began: dict[str, float | None] = {}
    for index, message in enumerate(messages):
        if message.topic.endswith("/result") and (doc := message.json())["id"] not in docs:
            docs[doc["id"]] = doc
            began[doc["id"]] = real_start(doc, figures, arrival_bound(figures, index))
    dishonest_stamps = [i for i, t in began.items() if t is None]
    durations = [unix(d["ended_at"]) - unix(d["started_at"]) for d in docs.values()]
    bad_durations = [d for d in durations if not 0 <= d <= 120]
    kernel_synced = kernel_says_synced() is not False
    flags = [flag_check(d, kernel_synced) for d in docs.values()]
    starts: dict[tuple[str, str], list[float]] = {}
    for result_id, doc in docs.items():
        if (t := began[result_id]) is not None:
            starts.setdefault((doc["target"], doc["channel"]), []).append(t)
    gaps, bursts, after_step = schedule_check(starts, figures)

    # The modem: a fault only while unplugged, and calling through again after each re-plug.
    gsm = sorted(((began[i] or 0.0, d) for i, d in docs.items() if d["channel"] == "gsm"),
                 key=lambda pair: pair[0])
    answered = [t for t, d in gsm if d["outcome"] == "answered"]
    unplugged = [(t, d) for t, d in gsm if d["outcome"] != "answered"]
    during = [(t, d) for t, d in unplugged if probe_side(d) and any(
        pulled - UNPLUG_CALL_S <= t <= back + UNPLUG_CALL_S for pulled, back in figures.unplugs)]
    stray = [f"{d['target']} {d['outcome']} {(d.get('modem') or {}).get('error')} at "
             f"+{t - figures.chaos_from:.0f} s" for t, d in unplugged if (t, d) not in during]
    resumed = not_judged = 0
    not_resumed = []
    pulls = [p for p, _ in figures.unplugs] + [float("inf")]
    for (_, back), next_pull in zip(figures.unplugs, pulls[1:], strict=True):
        after = [(t, d) for t, d in gsm if back < t < next_pull]
        if any(d["outcome"] == "answered" for _, d in after):
            resumed += 1
        elif after:
            not_resumed.append(f"re-plugged at +{back - figures.chaos_from:.0f} s")
        else:
            not_judged += 1
    steps = [b.offset_s - a.offset_s for a, b in itertools.pairwise(figures.epochs)]
    stale = sum(1 for d in docs.values() if unix(d["started_at"]) < EARLIEST_SANE_EPOCH)
    growth, allowed = rss_growth(figures.rss_series)
    # SIPp answers every call: a SIP result that is not answered is a false alarm (the one a
    # stop cuts short is "aborted").
    sip_failed = [f"{d['target']} {d['outcome']} at +{(began[i] or 0.0) - figures.chaos_from:.0f} s"
                  for i, d in docs.items()
                  if d["channel"] == "sip" and d["outcome"] not in ("answered", "aborted")]

    minutes = (figures.chaos_to - figures.chaos_from) / 60
    print(f"soak figures ({log_path})")
    per_line = {c: [d["outcome"] for d in docs.values() if d["channel"] == c]
                for c in sorted({d["channel"] for d in docs.values()})}
    print(f"  faults for {minutes:.1f} min; calls: "
          + ", ".join(f"{len(o)} over {c} ({o.count('answered')} answered)"
                      for c, o in per_line.items()))
    print(f"  broker kill -9: {figures.kills}, SIGHUP: {len(figures.reloads)} valid + "
          f"{figures.bad_reloads} pathological, disk filled: {figures.disk_fills}, "
          f"modem unplugged: {len(figures.unplugs)}, clock steps: {len(steps)} "
          f"({sum(s > 0 for s in steps)} forwards, {sum(s < 0 for s in steps)} backwards; "
          f"{sum(e.offset_s == -STALE_S for e in figures.epochs)} to a clock "
          f"{STALE_S // 86400} days behind)")
    print(f"  results produced: {len(produced)}, received: {len(results)}, "
          f"unique received: {len(unique)}, duplicates: {len(results) - len(unique)}, "
          f"missing: {len(missing)}")
    print(f"  modem results: {len(gsm)} ({len(answered)} answered, {len(during)} probe-side "
          f"faults while unplugged, {len(stray)} other); called through again after "
          f"{resumed} of {len(figures.unplugs)} re-plugs ({not_judged} not judged: no call "
          f"before the next unplug or the end)")
    print(f"  clock: started_at not the stepped wall clock of its moment: "
          f"{len(dishonest_stamps)} of {len(docs)}, impossible durations: {len(bad_durations)}"
          f"; clock_synced true of an untrustworthy stamp: {flags.count('dishonest')}, false "
          f"of a trustworthy one: {flags.count('cautious')} (kernel "
          f"{'synchronised' if kernel_synced else 'not synchronised'}); results stamped on "
          f"the stale clock: {stale}")
    print("  scheduling: longest gap between two calls: "
          + ", ".join(f"{c} {g:.1f} s" for c, g in sorted(gaps.items()))
          + f" (a stall above {STALL_S} s); first call after a clock step within: "
          + ", ".join(f"{c} {w:.1f} s" for c, w in sorted(after_step.items()))
          + f"; a target called 3 times within {INTERVAL_S} s: {len(bursts)}")
    print(f"  daemon alive at the end: {alive}, exit code: {code}, threads died: {len(died)}, "
          f"raw tracebacks: {len(raw)}")
    print(f"  probe faults: {len(faults)}, storage errors logged: {len(storage)}, "
          f"last health threads_alive: {last.get('threads_alive')}, "
          f"channels: { {c: v['state'] for c, v in last.get('channels', {}).items()} }")
    start, end = [*figures.rss_kib, 0, 0][:2]
    print(f"  RSS start (after 20 s): {start} KiB, end: {end} KiB ({end - start:+d} KiB); "
          f"last quarter vs first: {growth:+d} KiB (allowed {allowed})")
    series = figures.rss_series
    quarters = [series[i * (len(series) - 1) // 4] for i in range(5)] if series else []
    print(f"  RSS over the run (KiB, at 0/25/50/75/100 %): {quarters}")
    failures = {
        "missing": missing[:10], "threads died": len(died), "not alive": not alive,
        "calls that left no result (probe faults)": len(faults),
        "exit code": code, "raw tracebacks": len(raw), "RSS grew": growth > allowed,
        "SIP calls not answered": sip_failed[:10],
        "modem faults outside an unplug": stray[:10], "not resumed": not_resumed[:10],
        "dishonest started_at": dishonest_stamps[:10], "impossible durations": bad_durations,
        "dishonest clock_synced": flags.count("dishonest"),
        "stalled": {c: round(g) for c, g in gaps.items() if g > STALL_S}, "bursts": bursts[:10],
    }
    failed = {k: v for k, v in failures.items() if v}
    print("  OK" if not failed else f"  FAILED: {failed}")
    return 0 if not failed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"soak: {args.minutes} min, seed {args.seed}")
    return run(args.minutes, args.seed)


if __name__ == "__main__":
    sys.exit(main())
