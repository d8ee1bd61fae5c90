"""Timing accuracy: does the probe report the post-dial delay and answer time the hotline imposed?

One process, one :class:`~probe.dial.sip.SipDialer`, N calls.  Each call gets its own SIPp hotline
with a post-dial delay (INVITE → 180) and a ring time (180 → 200 OK) drawn from a seeded
pseudo-random generator, so a run is repeatable.  For every call three figures are compared:

* **imposed** — what the scenario asks SIPp to wait (``<pause>``): pdd, pdd + ring;
* **SIPp** — what SIPp actually did, by its own clock: INVITE received → 18x sent → 200 OK sent,
  from its ``-trace_msg`` message log (µs timestamps).  SIPp's pause overshoots by its scheduler
  granularity, and that is SIPp's error, not ours;
* **probe** — what the probe measured: ``measure.timings(record)`` as reported (integer ms), and
  the same interval from the raw event stamps (ns) for the probe - SIPp comparison.

So ``reported - imposed`` is what a reader of the results sees, ``SIPp - imposed`` is the test
rig's share of it, and ``probe - SIPp`` is the probe's own share (event stamping inside pjsua2
callbacks, plus loopback transit, which is a few µs).  As both processes run on one host, their
stamps also meet on its real-time clock: ``probe - SIPp`` splits into one-way legs (INVITE
probe → SIPp, 18x and 200 SIPp → probe), which shows on which side of the wire it sits.

Run alone: ``.venv/bin/python -m tests.benchmarks.bench_timing [--calls N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from probe.config.model import Expectations, SipAccount
from probe.dial.sip import SipDialer
from probe.results.measure import timings
from probe.results.timeline import CallRecord, Ev
from probe.sim.hotline import HotlineBehaviour, SippHotline

from ._stats import ErrorStats, table

PDD_RANGE_MS = (100, 900)
RING_RANGE_MS = (200, 1500)
HOLD_S = 0.2
DEFAULT_SEED = 1


Marks = tuple[int | None, int | None, int | None]
"""Three instants as CLOCK_REALTIME ns: (INVITE, first 18x, 200 OK), each as seen by one side."""


@dataclass
class CallSample:
    pdd_imposed: int
    tta_imposed: int
    pdd_reported: int | None = None  # measure.timings: what the result document says
    tta_reported: int | None = None
    probe: Marks = (None, None, None)  # INVITE sent, 18x received, 200 received (the probe)
    sipp: Marks = (None, None, None)  # INVITE received, 18x sent, 200 sent (SIPp's log)
    problem: str | None = None

    @property
    def pdd_probe(self) -> float | None:
        return _ms(self.probe[0], self.probe[1])

    @property
    def tta_probe(self) -> float | None:
        return _ms(self.probe[0], self.probe[2])

    @property
    def pdd_sipp(self) -> float | None:
        return _ms(self.sipp[0], self.sipp[1])

    @property
    def tta_sipp(self) -> float | None:
        return _ms(self.sipp[0], self.sipp[2])

    def leg(self, index: int) -> float | None:
        """One-way time of message ``index`` (0 INVITE, 1 18x, 2 200) from sender to receiver,
        both sides read on the host's real-time clock; ms."""
        if index == 0:
            return _ms(self.probe[0], self.sipp[0])
        return _ms(self.sipp[index], self.probe[index])


def _ms(start: int | None, stop: int | None) -> float | None:
    return None if start is None or stop is None else (stop - start) / 1e6


@dataclass
class TimingResult:
    calls: int
    seed: int
    wall_s: float
    samples: list[CallSample] = field(default_factory=list)

    @property
    def ok(self) -> list[CallSample]:
        return [s for s in self.samples if s.problem is None]

    def errors(self, metric: str, kind: str) -> list[float]:
        """Signed errors (ms) of ``metric`` ("pdd"/"tta") for ``kind`` of comparison."""
        out = []
        for s in self.ok:
            imposed = getattr(s, f"{metric}_imposed")
            reported = getattr(s, f"{metric}_reported")
            probe = getattr(s, f"{metric}_probe")
            sipp = getattr(s, f"{metric}_sipp")
            if kind == "reported-imposed" and reported is not None:
                out.append(reported - imposed)
            elif kind == "sipp-imposed" and sipp is not None:
                out.append(sipp - imposed)
            elif kind == "probe-sipp" and sipp is not None and probe is not None:
                out.append(probe - sipp)
        return out


def delays(calls: int, seed: int) -> list[tuple[int, int]]:
    """(pdd_ms, ring_ms) for each call, deterministic for a given seed."""
    rng = random.Random(seed)
    return [(rng.randint(*PDD_RANGE_MS), rng.randint(*RING_RANGE_MS)) for _ in range(calls)]


# -- SIPp's own clock -------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.M)
_CSEQ_INVITE_RE = re.compile(r"^CSeq:\s*\d+\s+INVITE\b", re.M | re.I)


def sipp_marks(message_log: str) -> Marks:
    """(INVITE received, first 18x sent, 200 OK to the INVITE sent) from SIPp's ``-trace_msg``
    log, as real-time ns; None where the log does not show the message."""
    marks = list(_BLOCK_RE.finditer(message_log))
    invite = provisional = final = None
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(message_log)
        body = message_log[mark.end():end].replace("\r", "")
        lines = [line for line in body.split("\n") if line.strip()]
        if len(lines) < 2:
            continue
        direction, start_line = lines[0], lines[1]
        # SIPp writes local time with µs: back to epoch ns (float seconds keep ~0.2 µs).
        at = datetime.strptime(mark.group(1), "%Y-%m-%d %H:%M:%S.%f")
        at_ns = round(at.timestamp() * 1e6) * 1000
        if " received" in direction and start_line.startswith("INVITE ") and invite is None:
            invite = at_ns
        elif " sent" in direction and _CSEQ_INVITE_RE.search(body):
            code = start_line.split()[1] if start_line.startswith("SIP/2.0 ") else ""
            if code.startswith("18") and provisional is None:
                provisional = at_ns
            elif code == "200" and final is None:
                final = at_ns
    return invite, provisional, final


# -- the probe's raw stamps --------------------------------------------------------------------

def probe_marks(record: CallRecord) -> Marks:
    """The instants ``measure.timings`` uses (first INVITE sent, first 1xx above 100, answer),
    unrounded, moved from the monotonic clock to real-time ns with the record's clock pair."""
    events = (record.first(Ev.DIAL), record.first(Ev.PROGRESS, codes=range(101, 200)),
              record.first(Ev.ANSWER))
    return tuple(  # type: ignore[return-value]
        None if e is None else record.wall_ns + (e.t_ns - record.mono_ns) for e in events)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """pjlib prints its start-up banner on fd 2 before logging is configured: hide it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run(calls: int = 50, seed: int = DEFAULT_SEED, progress: bool | None = None) -> TimingResult:
    if progress is None:
        progress = sys.stderr.isatty()
    plan = delays(calls, seed)
    expect = Expectations(max_post_dial_delay_ms=5000, max_ring_s=10.0, hold_s=HOLD_S)
    account = SipAccount(local_address="127.0.0.1", local_port=0, rtp_port=0)
    started = time.monotonic()
    samples: list[CallSample] = []
    with tempfile.TemporaryDirectory(prefix="bench-timing-") as tmp:
        dialer = SipDialer(account, probe_id="bench-timing")
        with quiet_stderr():
            dialer.start()  # not `with dialer:`, whose __enter__ would start it again
        try:
            for i, (pdd, ring) in enumerate(plan, 1):
                sample = CallSample(pdd_imposed=pdd, tta_imposed=pdd + ring)
                with SippHotline(HotlineBehaviour(pdd_ms=pdd, ring_ms=ring),
                                 timeout_s=30) as hotline:
                    record = dialer.call(hotline.uri, expect, target="bench",
                                         audio_path=Path(tmp) / f"call-{i}.wav")
                    exit_code = hotline.wait(10)
                    sample.sipp = sipp_marks(hotline.messages())
                t = timings(record)
                sample.pdd_reported, sample.tta_reported = t.post_dial_delay_ms, t.time_to_answer_ms
                sample.probe = probe_marks(record)
                if t.time_to_answer_ms is None or t.post_dial_delay_ms is None:
                    end = record.first(Ev.END)
                    sample.problem = f"not answered (end {end.code if end else None})"
                elif exit_code != 0:
                    sample.problem = f"sipp exit code {exit_code}"
                samples.append(sample)
                if progress:
                    print(f"\r  timing: call {i}/{calls}", end="", file=sys.stderr, flush=True)
        finally:
            dialer.close()
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    return TimingResult(calls=calls, seed=seed, wall_s=time.monotonic() - started,
                        samples=samples)


ROWS = (
    ("reported-imposed", "reported - imposed"),
    ("sipp-imposed", "SIPp - imposed"),
    ("probe-sipp", "probe - SIPp"),
)


def report(result: TimingResult) -> str:
    ok = result.ok
    imposed_s = sum(s.tta_imposed / 1000 + HOLD_S for s in result.samples)
    lines = [
        f"Timing accuracy — {result.calls} calls, one SipDialer, a SIPp hotline per call; "
        f"pdd {PDD_RANGE_MS[0]}-{PDD_RANGE_MS[1]} ms, ring {RING_RANGE_MS[0]}-"
        f"{RING_RANGE_MS[1]} ms (seed {result.seed}), hold {HOLD_S} s",
        f"  answered and scripted: {len(ok)}/{len(result.samples)} calls; wall time "
        f"{result.wall_s:.1f} s ({result.wall_s / max(1, len(result.samples)):.2f} s/call, of "
        f"which imposed pdd+ring+hold {imposed_s / max(1, len(result.samples)):.2f} s)",
    ]
    for s in result.samples:
        if s.problem:
            lines.append(f"  ! pdd {s.pdd_imposed} ms / answer {s.tta_imposed} ms: {s.problem}")
    rows = []
    for metric, label in (("pdd", "post-dial delay"), ("tta", "time to answer")):
        for j, (kind, kind_label) in enumerate(ROWS):
            st = ErrorStats.of(result.errors(metric, kind))
            name = label if j == 0 else ""
            if st is None:
                rows.append([name, kind_label, "0", "n/a", "n/a", "n/a", "n/a"])
            else:
                rows.append([name, kind_label, str(st.count), f"{st.mean:+.2f}",
                             f"{st.mean_abs:.2f}", f"{st.p95_abs:.2f}", f"{st.max_abs:.2f}"])
    lines += ["", table(["error (ms)", "comparison", "count", "mean", "mean |e|", "p95 |e|",
                         "max |e|"], rows, left=2)]
    leg_rows = []
    for index, label in enumerate(("INVITE  probe -> SIPp", "18x     SIPp -> probe",
                                   "200 OK  SIPp -> probe")):
        st = ErrorStats.of([v for s in ok if (v := s.leg(index)) is not None])
        if st is not None:
            leg_rows.append([label, str(st.count), f"{st.mean:+.3f}", f"{st.p95_abs:.3f}",
                             f"{st.max_abs:.3f}"])
    if leg_rows:
        lines += ["", "  probe - SIPp split into one-way legs (both stamps on the host's real-time "
                  "clock):", table(["leg (ms)", "count", "mean", "p95 |e|", "max |e|"], leg_rows)]
    lines += [
        "",
        "  reported = the probe's result (measure.timings, integer ms); SIPp = SIPp's message log",
        "  (-trace_msg, µs, SIPp's clock); probe = the probe's raw event stamps (ns).  SIPp -",
        "  imposed is the rig's pause overshoot; probe - SIPp is the probe's own error plus",
        "  loopback transit.  Legs: the probe stamps the INVITE after sending it, so a slow INVITE",
        "  leg is SIPp reading late; a slow 18x/200 leg is the probe (pjsip + callback) reading",
        "  late, or SIPp stamping before its send.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_timing",
                                description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = p.parse_args(argv)
    print(report(run(args.calls, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
