"""Line-interface figures: the emulated MCP3008 read, the classifier, the sampling thread.

    .venv/bin/python -m tests.benchmarks.bench_line

Figures only, no assertions.  On a Pi, gpiozero reads the real chip over spidev (hardware
SPI) instead of the bit-banged mock bus measured here, which is the slow part in simulation.
"""

from __future__ import annotations

import time

from probe.board.line import LineMonitor, classify_samples
from probe.config.model import LineConfig
from probe.sim.line import LineSimulator, SimBoard, SimClock, ringing


def run() -> list[tuple[str, str]]:
    cfg = LineConfig()
    rows = []
    clock = SimClock()
    board = SimBoard(LineSimulator(seed=2), clock)
    reader = board.reader()
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        reader.read_line()
    per_read = (time.perf_counter() - t) / n
    rows.append(("emulated MCP3008 read (gpiozero driver, mock SPI)", f"{per_read * 1e3:.3f} ms"))

    monitor = LineMonitor(cfg, reader, clock=clock, sleep=clock.sleep)
    t = time.perf_counter()
    monitor.run_for(60.0)
    wall = time.perf_counter() - t
    rows.append(("simulated line time per second of CPU (monitor, 200/s)", f"{60.0 / wall:.0f} s"))

    sim = LineSimulator(seed=3, noise_v=1.0, hum_vrms=3.0)
    sim.set(10.0, ringing())
    samples = sim.waveform(0.0, 600.0, cfg.sample_rate_hz)
    t = time.perf_counter()
    classify_samples(samples, cfg.sample_rate_hz, cfg)
    dt = time.perf_counter() - t
    rows.append(("classifier throughput", f"{len(samples) / dt / 1e3:.0f} k samples/s "
                 f"({cfg.sample_rate_hz / (len(samples) / dt) * 100:.2f} % of a core at 200/s)"))
    reader.close()
    board.close()
    return rows


if __name__ == "__main__":
    for name, value in run():
        print(f"{name:<60} {value}")
