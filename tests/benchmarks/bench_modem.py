"""Modem channel: timing error of alerting and answer against the emulator's script, and the
AT parser's throughput.

For each profile, N answered calls with a seeded pseudo-random post-dial delay and ring time
go through the real dialer and a pty to the emulator.  Per call and event, three errors:

* ``probe - script``   what a result reports against what the scenario imposed;
* ``probe - written``  the probe's own share: its stamp against the emulator's write time;
* ``written - script`` the test rig's share (the emulator thread's scheduling lateness).

The generic 27.007 profile polls ``AT+CLCC`` (here every 25 ms), so its error is up to half a
period by construction.  Parser throughput: a synthetic stream of responses with URCs
interleaved (SIMCom CR CR LF framing) through :class:`probe.at.router.Router`, in one chunk
and in 64-byte reads.

A76xx through-connect at ringback: calls whose UART says "answered" at ringback while the far
end answers later (seeded), with ringback then a greeting on the PCM port; the error of the
answer the recording gives (:func:`probe.dial.modem_audio.hear_answer`) against the script.

Run alone: ``.venv/bin/python -m tests.benchmarks.bench_modem [--calls N]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probe.at.router import Pending, Router
from probe.at.urc import UrcTable
from probe.config.model import Expectations, ModemConfig
from probe.dial.modem import ModemDialer
from probe.results.timeline import Ev
from probe.sim.modem import ModemEmulator, scenario

from ._stats import ErrorStats, table

FAMILIES = ("generic", "sim7600", "a76xx", "sim800", "quectel", "huawei", "v253")
DEFAULT_SEED = 3


@dataclass
class ModemResult:
    calls: int
    errors: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    lines_per_s: float = 0.0
    mib_per_s: float = 0.0
    lines_per_s_small: float = 0.0
    wall_s: float = 0.0
    through_connect: list[float] = field(default_factory=list)  # audio answer - real (ms)


def run(calls: int = 5, seed: int = DEFAULT_SEED) -> ModemResult:
    started = time.monotonic()
    result = ModemResult(calls)
    rng = random.Random(seed)
    expect = Expectations(max_post_dial_delay_ms=3000, max_ring_s=3.0, hold_s=0.2,
                          require_media=False)
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            for _ in range(calls):
                pdd, ring = rng.randint(100, 600), rng.randint(200, 900)
                if family == "v253":  # answer inside a ringback burst (150 ms on, 250 off)
                    ring = 400 * rng.randint(0, 2) + rng.randint(20, 130)
                sc = scenario("answered", pdd_ms=pdd, ring_ms=ring)
                with ModemEmulator(family, sc) as modem:
                    kind = "analog" if family == "v253" else "gsm"
                    cfg = ModemConfig(kind=kind, port=modem.url, ringback_silence_s=0.3)
                    with ModemDialer(cfg, poll_s=0.025) as dialer:
                        record = dialer.call("+33472000390", expect, target="bench",
                                             audio_path=Path(tmp) / "x.wav")
                    dial = record.first(Ev.DIAL)
                    for ev, mark, script in ((Ev.PROGRESS, "alerting", pdd),
                                             (Ev.ANSWER, "answer", pdd + ring)):
                        event = record.first(ev)
                        if dial is None or event is None or mark not in modem.marks:
                            continue
                        got = (event.t_ns - dial.t_ns) / 1e6
                        wrote = (modem.marks[mark] - modem.marks["dial"]) / 1e6
                        for kind_, value in (("probe-script", got - script),
                                             ("probe-written", got - wrote),
                                             ("written-script", wrote - script)):
                            result.errors.setdefault((family, mark, kind_), []).append(value)
        result.through_connect = through_connect_errors(calls, rng, Path(tmp))
    result.lines_per_s, result.mib_per_s, result.lines_per_s_small = parser_throughput()
    result.wall_s = time.monotonic() - started
    return result


def through_connect_errors(calls: int, rng: random.Random, tmp: Path) -> list[float]:
    """Audio-confirmed answer minus the emulator's real answer, ms, per call."""
    errors = []
    for _ in range(calls):
        ring = rng.randint(700, 2200)  # answer in a ringback burst or in the pause after it
        sc = scenario("through_connect", pdd_ms=200, through_connect_ms=250, ring_ms=ring)
        expect = Expectations(max_post_dial_delay_ms=3000, max_ring_s=5.0,
                              hold_s=ring / 1000 + 0.8, require_media=False)
        with ModemEmulator("a76xx", sc, audio_port=True) as modem:
            cfg = ModemConfig(kind="gsm", port=modem.url, audio_port=modem.audio_url)
            with ModemDialer(cfg) as dialer:
                record = dialer.call("+33472000390", expect, target="bench",
                                     audio_path=tmp / "tc.wav")
            answer = record.first(Ev.ANSWER)
            if answer is not None and "answer" in modem.marks:
                errors.append((answer.t_ns - modem.marks["answer"]) / 1e6)
    return errors


def parser_throughput(blocks: int = 20000) -> tuple[float, float, float]:
    """Lines per second and MiB/s through Router (one chunk), and lines/s in 64-byte reads."""
    block = (b"\r\n+CSQ: 20,99\r\n\r\r\n+CLCC: 1,0,3,0,0,\"+33472000390\",145\r\r\n"
             b"\r\nOK\r\n\r\r\nVOICE CALL: BEGIN\r\r\n")
    data = block * blocks
    lines = 4 * blocks
    figures = []
    for chunk in (len(data), 64):
        urcs: list = []
        router = Router(UrcTable.with_extra({"voice_call": r"VOICE CALL: ?(?P<what>BEGIN|END)"
                                             r"(?::? ?(?P<dur>\d+))?"}), urcs.append)
        start = time.perf_counter()
        for i in range(0, len(data), chunk):
            if router.pending is None:
                router.pending = Pending("AT+CSQ")
            router.feed(data[i:i + chunk], i)
        elapsed = time.perf_counter() - start
        figures.append((lines / elapsed, len(data) / elapsed / 2**20))
    return figures[0][0], figures[0][1], figures[1][0]


def report(r: ModemResult) -> str:
    rows = []
    for family in FAMILIES:
        for mark in ("alerting", "answer"):
            cells = [family, mark]
            for kind in ("probe-script", "probe-written", "written-script"):
                st = ErrorStats.of(r.errors.get((family, mark, kind), []))
                cells.append("n/a" if st is None else f"{st.mean:+.1f} / {st.max_abs:.1f}")
            rows.append(cells)
    head = (f"Modem timing ({r.calls} answered calls per profile; ms, mean / max |e|)\n"
            + table(["profile", "event", "probe - script", "probe - written",
                     "written - script"], rows, left=2))
    tc = ErrorStats.of(r.through_connect)
    head += ("\n\nA76xx through-connect, answer from the audio vs the real answer: "
             + ("n/a" if tc is None else
                f"{tc.mean:+.1f} / {tc.max_abs:.1f} ms (mean / max |e|, "
                f"{len(r.through_connect)} calls)"))
    return (head + f"\n\nAT parser: {r.lines_per_s:,.0f} lines/s ({r.mib_per_s:.1f} MiB/s) in "
            f"one chunk, {r.lines_per_s_small:,.0f} lines/s in 64-byte reads"
            f"\nwall time {r.wall_s:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_modem")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = p.parse_args(argv)
    print(report(run(args.calls, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
