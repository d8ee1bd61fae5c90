"""The tone corpus independent of our plan table: expectations from the standards, tones made by
sox, the degradations of a real channel; accuracy per degradation and country, every miss listed.

* Expectations: ``tests/data/tone_standards.csv``, written by hand from ITU-T E.180 Supplement 2
  and national specifications (never derived from :mod:`probe.audio.plans`).
* Tones: Debian's ``sox`` (``synth``: sines, two summed and remixed to mono, or a carrier
  through ``synth sine amod``), never :mod:`probe.audio.synth`.
* Channel: frequency error (the generator's), level -40..0 dBFS (0 dBFS clips a dual tone),
  white noise at an SNR below the tone, an optional 300-3400 Hz band limit (sox ``sinc``), a codec
  through sox (A-law, µ-law, GSM-FR 06.10, AMR-NB 12.2 and 4.75 kbit/s), 20 ms packets lost at
  random and concealed by repeating the last good packet, fading (G.711 Appendix I in spirit),
  and the excerpt cut at a random point: "full" (at least two cycles) or "short" (less than one
  cycle, or 1.5 s for the fast tones, at least 0.25 s of tone).
* Oracle for short excerpts: what the excerpt holds (its bursts and the gaps between them, the
  edge bursts cut short) is checked against every other kind of the country's standard; when one
  fits too, the case is ambiguous and "honest" is the best answer: the true kind named, or named
  among the alternatives the event lists.

    .venv/bin/python -m tests.benchmarks --only standards           # the sweep (~2-3 min)
    .venv/bin/python -m tests.benchmarks --only standards --quick   # a smaller sweep
"""

from __future__ import annotations

import csv
import itertools
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from probe.audio.frames import analyse_frames
from probe.audio.progress import ToneEvent, classify
from probe.audio.tones import find_tone_segments

from ._stats import table

RATE = 8000
STANDARDS_CSV = Path(__file__).resolve().parents[1] / "data" / "tone_standards.csv"
CODECS = ("pcm", "alaw", "ulaw", "gsm", "amr12.2", "amr4.75")
PACKET_S = 0.020
SHORT_MIN_TONE_S = 0.25
SHORT_WINDOW_S = 1.5
EDGE_SLIVER_S = 0.06


@dataclass(frozen=True)
class Standard:
    """One row of the expectations table."""

    country: str
    kind: str
    tone: str  # E.180 notation
    cadence: tuple[float, ...]  # seconds, on/off/...; () = continuous
    source: str

    @property
    def cycle(self) -> float:
        return sum(self.cadence)

    def describe(self) -> str:
        cad = "/".join(f"{v:g}" for v in self.cadence) or "continuous"
        return f"{self.tone} Hz {cad}"


def standards(path: Path = STANDARDS_CSV) -> list[Standard]:
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    out = []
    for r in csv.DictReader(rows):
        ms = r["cadence_ms"]
        cadence = tuple(int(v) / 1000 for v in ms.split("/")) if ms else ()
        if len(cadence) % 2:
            raise ValueError(f"{path}: {r['country']} {r['kind']}: odd cadence")
        out.append(Standard(r["country"], r["kind"], r["tone"], cadence, r["source"]))
    return out


# --------------------------------------------------------------------------- sox


def _sox() -> list[str]:
    """sox, repeatable (-R: fixed seeds) and without dither (-D): the corpus must be the same
    audio on every run."""
    sox = shutil.which("sox")
    if sox is None:
        raise FileNotFoundError("the standards corpus needs sox (Debian package sox)")
    return [sox, "-R", "-D"]


def _synth(tone: str, seconds: float, scale: float) -> list[str]:
    """sox effects that make ``seconds`` of ``tone`` (E.180 notation), frequencies x ``scale``."""
    length = f"{seconds:.4f}"
    if "*" in tone:  # carrier amplitude-modulated (100 %) by the second figure
        carrier, mod = (float(v) for v in tone.split("*"))
        return ["synth", length, "sine", f"{carrier * scale:.3f}", "synth", "sine", "amod",
                f"{mod:g}"]
    freqs = [float(v) * scale for v in tone.split("+")]
    args = ["synth", length, *(a for f in freqs for a in ("sine", f"{f:.3f}"))]
    return args + (["remix", "-"] if len(freqs) > 1 else [])


def sox_tone(std: Standard, seconds: float, offset: float, scale: float = 1.0) -> np.ndarray:
    """``seconds`` of ``std`` from ``offset`` s into its cycle, made by one sox run (one effects
    chain per burst, each padded with its gap, chains joined by ':')."""
    raw = ["-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", "-t", "raw"]
    total = offset + seconds
    if not std.cadence:
        chains = [_synth(std.tone, total, scale)]
    else:
        chains, t = [], 0.0
        while t < total:
            for on, off in zip(std.cadence[0::2], std.cadence[1::2], strict=True):
                chains.append([*_synth(std.tone, on, scale), "pad", "0", f"{off:.4f}"])
                t += on + off
    args: list[str] = []
    for chain in chains:
        args += [*chain, ":"]
    out = subprocess.run([*_sox(), "-n", *raw, "-", *args[:-1]], capture_output=True,
                         check=True).stdout
    x = np.frombuffer(out, "<i2").astype(np.float64) / 32768
    i0 = round(offset * RATE)
    return x[i0:i0 + round(seconds * RATE)]


def _codec_args(codec: str) -> tuple[list[str], list[str]]:
    """(encoded format, decode input format) for sox."""
    if codec in ("alaw", "ulaw"):
        enc = ["-t", "raw", "-r", str(RATE), "-c", "1", "-b", "8", "-e",
               "a-law" if codec == "alaw" else "u-law"]
        return enc, enc
    if codec == "gsm":
        return ["-t", "gsm"], ["-t", "gsm", "-r", str(RATE), "-c", "1"]
    if codec.startswith("amr"):
        mode = {"amr12.2": "7", "amr4.75": "0"}[codec]
        return ["-t", "amr-nb", "-C", mode], ["-t", "amr-nb"]
    raise ValueError(f"unknown codec {codec!r}")


def channel(clips: Sequence[np.ndarray], codec: str, band: bool) -> list[np.ndarray]:
    """Clips through the band limit and codec, all in one sox run each way (silence between)."""
    raw = ["-t", "raw", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed"]
    gap = np.zeros(int(0.3 * RATE))
    parts, spans, pos = [], [], 0
    for x in clips:
        n = len(x) + (-len(x)) % 160  # whole codec frames
        padded = np.zeros(n)
        padded[:len(x)] = x
        parts += [padded, gap]
        spans.append((pos, pos + len(x)))
        pos += n + len(gap)
    x = np.concatenate(parts)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    effects = ["sinc", "300-3400"] if band else []
    if codec == "pcm":
        if effects:
            pcm = subprocess.run([*_sox(), *raw, "-", *raw, "-", *effects], input=pcm,
                                 capture_output=True, check=True).stdout
    else:
        enc, dec = _codec_args(codec)
        coded = subprocess.run([*_sox(), "-V1", *raw, "-", *enc, "-", *effects], input=pcm,
                               capture_output=True, check=True).stdout
        pcm = subprocess.run([*_sox(), "-V1", *dec, "-", *raw, "-"], input=coded,
                             capture_output=True, check=True).stdout
    y = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
    y = np.concatenate([y, np.zeros(max(0, len(x) - len(y)))])
    return [y[a:b] for a, b in spans]


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    std: Standard
    codec: str = "pcm"
    level_dbfs: float = -20.0
    snr_db: float | None = None
    freq_scale: float = 1.0
    band: bool = False
    loss: float = 0.0  # share of 20 ms packets lost (concealed)
    excerpt: str = "full"  # "full" or "short"
    offset: float = 0.0  # s into the cycle where the excerpt starts
    seconds: float = 6.0

    def label(self) -> str:
        noise = "clean" if self.snr_db is None else f"{self.snr_db:g}dB"
        extras = (" band" if self.band else "") + (f" loss{self.loss:.0%}" if self.loss else "")
        return (f"{self.std.country} {self.std.kind} {self.std.describe()} | {self.codec} "
                f"{self.level_dbfs:.0f}dBFS {noise} {(self.freq_scale - 1) * 100:+.1f}%{extras} "
                f"{self.excerpt} {self.seconds:.2f}s@{self.offset:.2f}")


def held(std: Standard, offset: float, seconds: float) -> tuple[list[float], list[float], bool,
                                                                  bool]:
    """What an excerpt holds: its bursts, the gaps between them, and whether the first and the
    last burst are cut by the excerpt's edges."""
    if not std.cadence:
        return [seconds], [], True, True
    spans, t, k = [], -offset, 0
    while t < seconds:
        d = std.cadence[k % len(std.cadence)]
        if k % 2 == 0 and min(seconds, t + d) - max(0.0, t) > 1e-6:
            spans.append((max(0.0, t), min(seconds, t + d)))
        t += d
        k += 1
    # a sliver at an edge is too short for anyone to hear (a segment needs 50 ms)
    spans = [(a, b) for a, b in spans if b - a >= EDGE_SLIVER_S or 0.0 < a < b < seconds]
    ons = [b - a for a, b in spans]
    offs = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    first_cut = bool(spans) and spans[0][0] == 0.0
    last_cut = bool(spans) and spans[-1][1] == seconds
    return ons, offs, first_cut, last_cut


def _tol(d: float) -> float:
    """What a listener's (and the standards') tolerance is on a duration, 10 % and 40 ms, and
    20 ms more for the measurement: a kind this close cannot be excluded."""
    return 0.1 * d + 0.06


def fits(std: Standard, ons: list[float], offs: list[float], first_cut: bool,
         last_cut: bool) -> bool:
    """Could ``std`` have produced the held bursts?  (Durations only; the tone is checked apart.)"""
    if not ons:
        return False
    if not std.cadence:
        return len(ons) == 1 and first_cut and last_cut
    p_on, p_off = std.cadence[0::2], std.cadence[1::2]
    k = len(p_on)
    for r in range(k):
        ok = True
        for i, on in enumerate(ons):
            exp = p_on[(r + i) % k]
            cut = (i == 0 and first_cut) or (i == len(ons) - 1 and last_cut)
            if on > exp + _tol(exp) or (not cut and on < exp - _tol(exp)):
                ok = False
                break
            if i < len(offs) and abs(offs[i] - p_off[(r + i) % k]) > _tol(p_off[(r + i) % k]):
                ok = False
                break
        if ok:
            return True
    return False


def _same_tone(a: str, b: str) -> bool:
    def main(t: str) -> list[float]:
        return sorted(float(v) for v in t.split("*")[0].split("+"))

    ma, mb = main(a), main(b)
    return len(ma) == len(mb) and all(abs(x - y) <= max(10, 0.025 * x) for x, y in
                                      zip(ma, mb, strict=True))


def compatible_kinds(case: Case, table_: Sequence[Standard]) -> set[str]:
    """Kinds of the case's country that the excerpt cannot exclude (the true one included).
    A burst within a sliver of an edge may be taken for one cut by it: both readings count."""
    ons, offs, first_cut, last_cut = held(case.std, case.offset, case.seconds)
    readings = {(first_cut, last_cut)}
    if ons:
        lead, trail = _edge_silences(case)
        readings |= {(first_cut or lead < EDGE_SLIVER_S, last_cut or trail < EDGE_SLIVER_S)}
    kinds = {case.std.kind}
    for s in table_:
        if s.country == case.std.country and _same_tone(s.tone, case.std.tone) and any(
                fits(s, ons, offs, f, la) for f, la in readings):
            kinds.add(s.kind)
    return kinds


def _edge_silences(case: Case) -> tuple[float, float]:
    """Silence before the first and after the last held burst."""
    std, step = case.std, 0.001
    if not std.cadence:
        return 0.0, 0.0
    t = np.arange(0, case.seconds, step) + case.offset
    phase = np.mod(t, std.cycle)
    bounds = np.cumsum(std.cadence)
    on = (np.searchsorted(bounds, phase, side="right") % 2) == 0
    idx = np.flatnonzero(on)
    if idx.size == 0:
        return case.seconds, case.seconds
    return float(idx[0] * step), float(case.seconds - (idx[-1] + 1) * step)


def cases(table_: Sequence[Standard], *, seed: int, per_standard: int = 2,
          snr: Sequence[float | None] = (10.0,), codecs: Sequence[str] = CODECS,
          short_share: float = 0.5) -> list[Case]:
    """``per_standard`` cases of every row, each degradation drawn (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for std in table_:
        for _ in range(per_standard):
            short = rng.random() < short_share
            cycle = std.cycle or 3.0
            if short:
                # less than one cycle (or 1.5 s for the fast tones), holding some tone
                window = max(cycle, SHORT_WINDOW_S)
                need = min(SHORT_MIN_TONE_S, 0.8 * sum(std.cadence[0::2])) if std.cadence \
                    else SHORT_MIN_TONE_S
                while True:
                    seconds = float(rng.uniform(0.35, 0.95) * window) if std.cadence else float(
                        rng.uniform(0.5, 2.4))
                    offset = float(rng.uniform(0, cycle)) if std.cadence else 0.0
                    if sum(held(std, offset, seconds)[0]) >= need:
                        break
            else:
                seconds = max(6.0, 2.2 * cycle) if std.cadence else 6.0
                offset = float(rng.uniform(0, cycle)) if std.cadence else 0.0
            lost = float(rng.choice([0.0, 0.0, 0.01, 0.03]))
            out.append(Case(std, codec=str(rng.choice(list(codecs))),
                            level_dbfs=float(rng.uniform(-40, 0)),
                            snr_db=snr[int(rng.integers(len(snr)))],
                            freq_scale=1 + float(rng.uniform(-0.015, 0.015)),
                            band=bool(rng.random() < 0.5), loss=lost,
                            excerpt="short" if short else "full", offset=offset,
                            seconds=round(seconds, 3)))
    return out


def _level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    on = x[x != 0]
    rms = float(np.sqrt(np.mean(on**2))) if on.size else 1.0
    return x * (10 ** (level_dbfs / 20) / np.sqrt(2)) / max(rms, 1e-12)


def _conceal(x: np.ndarray, loss: float, rng: np.random.Generator) -> np.ndarray:
    """Lose 20 ms packets (a lost one drags the next with it a third of the time) and conceal
    each by the last good packet, 6 dB quieter per further lost packet."""
    n = int(PACKET_S * RATE)
    y = x.copy()
    lost = rng.random(len(x) // n) < loss
    lost[1:] |= lost[:-1] & (rng.random(len(lost) - 1) < 0.33)
    run = 0
    for p in np.flatnonzero(lost):
        if p == 0:
            continue
        run = run + 1 if lost[p - 1] else 1
        y[p * n:(p + 1) * n] = y[(p - run) * n:(p - run + 1) * n] * 0.5 ** (run - 1)
    return y


def render(cs: Sequence[Case], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = []
    for c in cs:
        x = _level(sox_tone(c.std, c.seconds, c.offset, c.freq_scale), c.level_dbfs)
        if c.snr_db is not None:
            noise_rms = 10 ** ((c.level_dbfs - c.snr_db) / 20) / np.sqrt(2)
            x = x + rng.standard_normal(len(x)) * noise_rms
        clean.append(x)
    out: list[np.ndarray | None] = [None] * len(cs)
    groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, c in enumerate(cs):
        groups[(c.codec, c.band)].append(i)
    for (codec, band), idx in sorted(groups.items()):
        for i, y in zip(idx, channel([clean[i] for i in idx], codec, band), strict=True):
            out[i] = _conceal(y, cs[i].loss, rng) if cs[i].loss else y
    return [o if o is not None else np.zeros(0) for o in out]


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Outcome:
    case: Case
    verdict: str  # "right", "honest" (ambiguous excerpt, or without a zone plans that disagree:
    # the truth among the alternatives), "miss"
    compatible: frozenset[str]  # kinds the excerpt cannot exclude
    got: ToneEvent | None  # the primary (longest) event
    others: tuple[str, ...]  # kinds of the other events
    zone: str | None
    before_channel: str | None = None  # a miss: the verdict on the audio before the channel

    @property
    def ok(self) -> bool:
        return self.verdict != "miss"

    @property
    def ambiguous(self) -> bool:
        return len(self.compatible) > 1

    def why(self) -> str:
        """The miss in measured terms."""
        e = self.got
        if e is None:
            return "nothing heard as a tone"
        freqs = "+".join(f"{f:g}" for f in e.frequencies)
        cad = "/".join(f"{v:.2f}" for v in e.cadence[:6])
        alts = ",".join(sorted(e.candidates))
        bad = [k for k in self.others if k not in self.compatible and k != "unknown"]
        return (f"{e.kind} {freqs} Hz {cad} conf {e.confidence:.2f}"
                + (f" alts {alts}" if alts else "") + (f"; also {','.join(bad)}" if bad else ""))

    def where(self) -> str:
        """Whether the miss is the channel's (right before the codec and loss) or ours."""
        if self.before_channel is None:
            return ""
        return ("channel: right before codec/loss" if self.before_channel != "miss"
                else "ours: wrong before the channel too")


def judge(case: Case, events: list[ToneEvent], compatible: set[str],
          zone: str | None) -> Outcome:
    primary = max(events, key=lambda e: e.end - e.start) if events else None
    others = tuple(e.kind for e in events if e is not primary)
    wrong_other = any(k not in compatible and k != "unknown" for k in others)
    truth = case.std.kind
    verdict = "miss"
    if primary is not None and not wrong_other:
        if primary.kind == truth:
            verdict = "right"
        elif truth in primary.candidates and (
                (len(compatible) > 1 and primary.kind in compatible)
                or (zone is None and primary.kind == "unknown")):  # the plans disagree
            verdict = "honest"
    return Outcome(case, verdict, frozenset(compatible), primary, others, zone)


def _hear(x: np.ndarray, zone: str | None) -> list[ToneEvent]:
    return classify(find_tone_segments(x, analyse_frames(x)), zone, duration=len(x) / RATE)


def run(cs: Sequence[Case], table_: Sequence[Standard], *, seed: int = 1,
        zoned: bool = True) -> list[Outcome]:
    """Every case rendered and heard; each miss heard again before the channel (band limit,
    codec, packet loss) to tell the channel's misses from ours."""
    out = []
    clips = render(cs, seed)
    for case, x in zip(cs, clips, strict=True):
        zone = case.std.country if zoned else None
        compatible = compatible_kinds(case, table_)
        o = judge(case, _hear(x, zone), compatible, zone)
        if not o.ok and (case.codec != "pcm" or case.loss or case.band):
            bare = replace(case, codec="pcm", loss=0.0, band=False)
            (y,) = render([bare], seed)
            o = replace(o, before_channel=judge(bare, _hear(y, zone), compatible, zone).verdict)
        out.append(o)
    return out


def _key(o: Outcome, by: str) -> str:
    c = o.case
    return {"codec": c.codec, "country": c.std.country, "kind": c.std.kind,
            "excerpt": c.excerpt, "band": "300-3400 Hz" if c.band else "full band",
            "loss": f"{c.loss:.0%} lost", "noise": "clean" if c.snr_db is None
            else f"{c.snr_db:g} dB SNR",
            "level": f"{10 * int(c.level_dbfs // 10):+d}..{10 * int(c.level_dbfs // 10) + 10:+d} "
                     "dBFS",
            "freq": "<-1 %" if c.freq_scale < 0.99 else ">+1 %" if c.freq_scale > 1.01
            else "+-1 %"}[by]


def accuracy_table(outcomes: Sequence[Outcome], by: str) -> str:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[_key(o, by)].append(o)
    rows = []
    for key in sorted(groups):
        g = groups[key]
        n = len(g)
        right = sum(o.verdict == "right" for o in g)
        honest = sum(o.verdict == "honest" for o in g)
        rows.append([key, str(n), f"{right / n:.1%}", f"{honest / n:.1%}",
                     f"{(n - right - honest) / n:.1%}"])
    return table([by, "cases", "right", "honest", "miss"], rows)


def miss_table(outcomes: Iterable[Outcome]) -> str:
    rows = [[o.case.label(), "/".join(sorted(o.compatible)), o.why(), o.where()]
            for o in outcomes if not o.ok]
    if not rows:
        return "  no misses"
    return table(["case", "expected", "heard", "whose"], rows)


def summary(outcomes: Sequence[Outcome]) -> dict[str, float]:
    n = len(outcomes)
    determinable = [o for o in outcomes if not o.ambiguous]
    return {
        "cases": n,
        "right": sum(o.verdict == "right" for o in outcomes) / n,
        "right_or_honest": sum(o.ok for o in outcomes) / n,
        "right_when_determinable": (sum(o.verdict == "right" for o in determinable)
                                    / max(1, len(determinable))),
        "ambiguous": (n - len(determinable)) / n,
    }


# --------------------------------------------------------------------------- benchmark


@dataclass
class StandardsResult:
    zoned: list[Outcome] = field(default_factory=list)
    unzoned: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0
    audio_s: float = 0.0


SWEEP_SNR: tuple[float | None, ...] = (None, 30.0, 20.0, 15.0, 10.0)


def run_sweep(quick: bool = False, seed: int = 17) -> StandardsResult:
    table_ = standards()
    started = time.monotonic()
    cs = cases(table_, seed=seed, per_standard=2 if quick else 8, snr=SWEEP_SNR)
    res = StandardsResult(zoned=run(cs, table_, seed=seed))
    res.unzoned = run(cs, table_, seed=seed, zoned=False)
    res.wall_s = time.monotonic() - started
    res.audio_s = sum(c.seconds for c in cs)
    return res


def report(r: StandardsResult) -> str:
    z = summary(r.zoned)
    u = summary(r.unzoned)
    lines = [f"Tone corpus from the standards (tests/data/tone_standards.csv, sox-made): "
             f"{z['cases']:.0f} cases, {r.audio_s / 60:.0f} min of audio, {r.wall_s:.0f} s",
             f"  with the zone: right {z['right']:.1%}, right or honest {z['right_or_honest']:.1%}"
             f" (right {z['right_when_determinable']:.1%} of the {1 - z['ambiguous']:.0%} of "
             "cases whose excerpt decides the kind)",
             f"  without a zone: right {u['right']:.1%}, right or honest "
             f"{u['right_or_honest']:.1%}"]
    for by in ("noise", "codec", "excerpt", "band", "loss", "level", "freq", "kind", "country"):
        lines += [f"With the zone, by {by}", accuracy_table(r.zoned, by)]
    lines += ["Without a zone, by excerpt", accuracy_table(r.unzoned, "excerpt"),
              "Misses with the zone", miss_table(r.zoned)]
    return "\n".join(lines)
