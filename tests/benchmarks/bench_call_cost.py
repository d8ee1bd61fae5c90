"""Cost of one ``probe call``: CPU seconds and peak memory of the whole process.

``python -m probe call hotline -c <cfg> --json`` runs N times as a subprocess against a SIPp
hotline that answers at once (50 ms post-dial delay, 50 ms ring) and is held ``HOLD_S`` seconds.
Each child is reaped with :func:`os.wait4`, which returns *that* child's resource usage: user +
system CPU seconds and its peak resident set size (``ru_maxrss``, KiB on Linux).  (Deltas of
``getrusage(RUSAGE_CHILDREN)`` would work for CPU but not for memory: its ``ru_maxrss`` is the
largest child ever reaped, SIPp included.)

The fork and the ``wait4`` happen in a tiny launcher process, not in this one: Linux charges a
child's ``ru_maxrss`` with the RSS of the process it was forked (or vforked) from, as the exec
records the old address space's high-water mark.  Spawned straight from a benchmark process that
has pjsua2 loaded, ``python -c pass`` would "peak" at the benchmark's size.  The launcher's own
RSS at fork is the floor of every figure; it is printed (the ``/bin/true`` row).

Baselines: ``python -m probe --version`` (interpreter + the probe's imports, pjsua2 loaded, no
SIP stack started) and ``python -c pass`` (the bare interpreter).  SIPp's own cost is not counted.

Run alone: ``.venv/bin/python -m tests.benchmarks.bench_call_cost [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probe.sim.hotline import HotlineBehaviour, SippHotline

from ._stats import table

HOLD_S = 2.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Usage:
    user_s: float
    sys_s: float
    maxrss_mib: float
    wall_s: float
    exit_code: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


@dataclass
class Series:
    label: str
    command: str
    runs: list[Usage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    call_ms: list[int] = field(default_factory=list)  # call_duration reported by probe call

    def mean(self, attr: str) -> float:
        return sum(getattr(u, attr) for u in self.runs) / len(self.runs)

    def max(self, attr: str) -> float:
        return max(getattr(u, attr) for u in self.runs)


@dataclass
class CostResult:
    runs: int
    wall_s: float
    series: list[Series]

    def get(self, label: str) -> Series:
        return next(s for s in self.series if s.label == label)


# Runs argv[2:], reaps it with wait4 and writes "user sys maxrss_kib wall exit" to argv[1].
# Started with -S (no site): it stays small, since its RSS at fork is the floor of the figures.
_LAUNCHER = """\
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss} {wall} "
            f"{os.waitstatus_to_exitcode(status)}\\n")
"""


def measure(argv: list[str], stdout_path: Path, stderr_path: Path,
            cwd: Path = PROJECT_ROOT) -> Usage:
    """Run ``argv`` (absolute program path) in ``cwd`` to completion and return its own
    resource usage."""
    usage_path = stdout_path.with_name("usage")
    usage_path.unlink(missing_ok=True)
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(usage_path), *argv],
                       stdout=out, stderr=err, cwd=cwd, check=True)
    user, system, maxrss_kib, wall, code = usage_path.read_text().split()
    return Usage(user_s=float(user), sys_s=float(system), maxrss_mib=int(maxrss_kib) / 1024,
                 wall_s=float(wall), exit_code=int(code))


def config_toml(uri: str, state_dir: Path) -> str:
    return f"""\
[probe]
id = "bench-cost"
site = "benchmark"
state_dir = "{state_dir}"

[sip]
local_address = "127.0.0.1"
local_port = 0
rtp_port = 0

[[targets]]
name = "hotline"
sip_uri = "{uri}"
channels = ["sip"]

[targets.expect]
max_ring_s = 10
hold_s = {HOLD_S}
"""


def run(runs: int = 5) -> CostResult:
    python = sys.executable
    started = time.monotonic()
    floor = Series("/bin/true", "/bin/true (the launcher's floor)")
    bare = Series("python -c pass", "python -c pass")
    version = Series("probe --version", "python -m probe --version")
    call = Series("probe call", f"python -m probe call hotline --json (hold {HOLD_S:g} s)")
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        work = Path(tmp)
        out, err = work / "stdout", work / "stderr"
        true = shutil.which("true") or "/bin/true"
        for _ in range(runs):
            floor.runs.append(measure([true], out, err))
            bare.runs.append(measure([python, "-c", "pass"], out, err))
            version.runs.append(measure([python, "-m", "probe", "--version"], out, err))
            if version.runs[-1].exit_code != 0:
                version.problems.append(err.read_text(errors="replace").strip()[-500:])
        behaviour = HotlineBehaviour(pdd_ms=50, ring_ms=50)
        with SippHotline(behaviour, calls=runs, timeout_s=60) as hotline:
            cfg = work / "probe.toml"
            cfg.write_text(config_toml(hotline.uri, work / "state"))
            for _ in range(runs):
                usage = measure([python, "-m", "probe", "call", "hotline", "-c", str(cfg),
                                 "--json"], out, err)
                call.runs.append(usage)
                problem = _call_problem(usage, out, err, call.call_ms)
                if problem:
                    call.problems.append(problem)
            hotline.wait(10)
    return CostResult(runs=runs, wall_s=time.monotonic() - started,
                      series=[floor, bare, version, call])


def _call_problem(usage: Usage, out: Path, err: Path, call_ms: list[int]) -> str | None:
    try:
        doc = json.loads(out.read_text())
    except (OSError, ValueError):
        tail = err.read_text(errors="replace").strip()[-500:]
        return f"exit {usage.exit_code}, no JSON result: {tail}"
    duration = (doc.get("timings_ms") or {}).get("call_duration")
    if isinstance(duration, int):
        call_ms.append(duration)
    if doc.get("outcome") != "answered" or usage.exit_code != 0:
        return f"exit {usage.exit_code}, outcome {doc.get('outcome')}"
    return None


def report(result: CostResult) -> str:
    rows = []
    for s in result.series:
        if not s.runs:
            continue
        rows.append([s.label, str(len(s.runs)),
                     f"{s.mean('cpu_s'):.3f}", f"{s.max('cpu_s'):.3f}",
                     f"{s.mean('user_s'):.3f}", f"{s.mean('sys_s'):.3f}",
                     f"{s.mean('maxrss_mib'):.1f}", f"{s.max('maxrss_mib'):.1f}",
                     f"{s.mean('wall_s'):.2f}"])
    lines = [
        f"Cost of one `probe call` — {result.runs} runs each, rusage of the child via wait4 "
        f"(SIPp not counted); total {result.wall_s:.1f} s",
        "",
        table(["command", "runs", "CPU mean s", "CPU max s", "user s", "sys s",
               "RSS mean MiB", "RSS max MiB", "wall s"], rows),
    ]
    call, version = result.get("probe call"), result.get("probe --version")
    if call.runs and version.runs:
        cpu_ratio = call.mean("cpu_s") / version.mean("cpu_s")
        rss_ratio = call.mean("maxrss_mib") / version.mean("maxrss_mib")
        lines += [
            "",
            f"  probe call / probe --version: CPU x{cpu_ratio:.2f}, peak RSS x{rss_ratio:.2f}; "
            f"the call itself adds {call.mean('cpu_s') - version.mean('cpu_s'):.3f} CPU s and "
            f"{call.mean('maxrss_mib') - version.mean('maxrss_mib'):.1f} MiB",
        ]
    if call.call_ms:
        call_s = sum(call.call_ms) / len(call.call_ms) / 1000
        lines.append(f"  probe call wall {call.mean('wall_s'):.2f} s = the call itself "
                     f"{call_s:.2f} s (INVITE to end) + {call.mean('wall_s') - call_s:.2f} s "
                     "start-up, result and shut-down")
    floor = result.get("/bin/true")
    if floor.runs:
        lines.append(f"  RSS floor: the launcher's {floor.max('maxrss_mib'):.1f} MiB at fork "
                     "(no figure can read lower)")
    for s in result.series:
        for problem in s.problems:
            lines.append(f"  ! {s.label}: {problem}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_call_cost",
                                description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    print(report(run(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
