"""``python -m tests.benchmarks``: run every benchmark and print its figures, then a summary.

Figures only: nothing here asserts a timing (a loaded CI machine must not fail a build).

    .venv/bin/python -m tests.benchmarks                 # everything (~25 minutes: the full tone
                                                         # corpus and 10 minutes of idle daemon)
    .venv/bin/python -m tests.benchmarks --quick         # smoke run (~3 minutes)
    .venv/bin/python -m tests.benchmarks --only timing   # one of timing|cost|audio|standards|
                                                         # modem|outbox|console|ops|footprint
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import (
    bench_audio,
    bench_call_cost,
    bench_console,
    bench_footprint,
    bench_modem,
    bench_ops,
    bench_outbox,
    bench_timing,
    bench_tone_standards,
)
from ._stats import ErrorStats, table

QUICK_CALLS = 8
QUICK_RUNS = 2


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks",
                                description="Run every benchmark and print its figures (never "
                                            "asserted), then a summary.")
    p.add_argument("--calls", type=int, default=None,
                   help="timed calls for the timing benchmark (default 50; --quick: "
                        f"{QUICK_CALLS})")
    p.add_argument("--runs", type=int, default=None,
                   help=f"`probe call` runs for the cost benchmark (default 5; --quick: "
                        f"{QUICK_RUNS})")
    p.add_argument("--seed", type=int, default=bench_timing.DEFAULT_SEED,
                   help="seed of the imposed delays (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    p.add_argument("--only", choices=("timing", "cost", "audio", "standards", "modem", "outbox",
                                      "console", "ops", "footprint"),
                   help="run one benchmark only")
    args = p.parse_args(argv)
    calls = args.calls if args.calls is not None else (QUICK_CALLS if args.quick else 50)
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else 5)
    if calls < 1 or runs < 1:
        p.error("--calls and --runs must be at least 1")

    started = time.monotonic()
    timing = cost = None
    if args.only in (None, "timing"):
        timing = bench_timing.run(calls, args.seed)
        print(bench_timing.report(timing), end="\n\n", flush=True)
    if args.only in (None, "cost"):
        cost = bench_call_cost.run(runs)
        print(bench_call_cost.report(cost), end="\n\n", flush=True)
    if args.only in (None, "audio"):  # probe/audio: real-time factor, memory, tone corpus
        print(bench_audio.report(bench_audio.run(quick=args.quick)), end="\n\n", flush=True)
    if args.only in (None, "standards"):  # tones from the standards, sox-made, per degradation
        standards = bench_tone_standards.run_sweep(quick=args.quick)
        print(bench_tone_standards.report(standards), end="\n\n", flush=True)
    if args.only in (None, "modem"):  # probe/at: alerting/answer error per profile, parser
        modem = bench_modem.run(calls=2 if args.quick else 5)
        print(bench_modem.report(modem), end="\n\n", flush=True)
    if args.only in (None, "outbox"):  # store-and-forward, and the idle daemon (10 min)
        bench_outbox.main(["--idle-s", "30" if args.quick else "600"])
        print(flush=True)
    if args.only in (None, "console"):  # ops console: the fleet page with 1,000 probes
        console = bench_console.run(quick=args.quick, sqlite=not args.quick,
                                    browser_loads=2 if args.quick else 5)
        print(bench_console.report(console), end="\n\n", flush=True)
    if args.only in (None, "ops"):  # central ops: ingest rate, scaling, latency (~8 min)
        bench_ops.main(["--quick"] if args.quick else [])
        print(flush=True)
    if args.only in (None, "footprint"):  # probe --version time, idle daemon RSS (1 GB Pi)
        bench_footprint.main(["--runs", "5" if args.quick else "20"])
        print(flush=True)
    print(summary(timing, cost, time.monotonic() - started))
    return 0


def summary(timing: bench_timing.TimingResult | None,
            cost: bench_call_cost.CostResult | None, wall_s: float) -> str:
    rows: list[list[str]] = []
    if timing is not None:
        ok = len(timing.ok)
        for metric, label in (("pdd", "post-dial delay"), ("tta", "time to answer")):
            for kind, kind_label in (("reported-imposed", "reported - imposed"),
                                     ("probe-sipp", "probe - SIPp")):
                st = ErrorStats.of(timing.errors(metric, kind))
                value = ("n/a" if st is None else
                         f"mean {st.mean:+.1f} ms, p95 |e| {st.p95_abs:.1f} ms, "
                         f"max |e| {st.max_abs:.1f} ms")
                rows.append([f"timing ({ok}/{timing.calls} calls)" if not rows else "",
                             f"{label}, {kind_label}", value])
        rows.append(["", "wall time", f"{timing.wall_s:.1f} s"])
    if cost is not None:
        call, version = cost.get("probe call"), cost.get("probe --version")
        first = True
        for attr, label, unit, fmt in (("cpu_s", "CPU user+sys", "s", ".3f"),
                                       ("maxrss_mib", "peak RSS", "MiB", ".1f")):
            if not call.runs or not version.runs:
                break
            c, v = call.mean(attr), version.mean(attr)
            rows.append([f"call cost ({len(call.runs)} runs)" if first else "",
                         f"{label}, probe call", f"{c:{fmt}} {unit} (--version {v:{fmt}} "
                         f"{unit}, x{c / v:.2f})"])
            first = False
        rows.append(["", "wall time", f"{cost.wall_s:.1f} s"])
    rows.append(["total", "wall time", f"{wall_s:.1f} s"])
    return "Summary\n" + table(["benchmark", "figure", "value"], rows, left=3)


if __name__ == "__main__":
    sys.exit(main())
