"""Intercept announcements as a carrier plays them, made by other tools than the probe's own:
a special information tone synthesised by ``sox`` from the standard's segment table, then an
``espeak-ng`` announcement.

The table (:data:`STANDARD`) is written from the published North American SIT coding (Bellcore
/ Telcordia GR-1162, ANSI T1.209, as reproduced in the Bellcore announcement-equipment manuals):
segments 1 and 2 are each Low or High in frequency (913.8 / 985.2 Hz; 1370.6 / 1428.5 Hz,
+-0.2 %) and Short or Long (274 / 380 ms, +-5 %); segment 3 is always 1776.7 Hz, 380 ms; no
silence between segments; the announcement follows within 300 ms.  The ITU-T tone (Q.35 /
E.180) is 950 / 1400 / 1800 Hz, 330 ms each.  The meaning of each code, and so the cause the
diagnosis must give, comes from the same tables — never from ``probe/``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SHORT_S, LONG_S = 0.274, 0.380
SEGMENT_HZ = {(1, "low"): 913.8, (1, "high"): 985.2, (2, "low"): 1370.6, (2, "high"): 1428.5}
THIRD = (1776.7, LONG_S)
ANNOUNCEMENT = "the number you have dialled is not in service"


@dataclass(frozen=True)
class SitCode:
    code: str
    first: tuple[str, str]  # (short|long, low|high)
    second: tuple[str, str]
    meaning: str  # the standard's category
    cause: str  # what the diagnosis must conclude from it

    def segments(self) -> list[tuple[float, float]]:
        """(frequency Hz, duration s) of the three segments."""
        out = []
        for index, (length, band) in ((1, self.first), (2, self.second)):
            out.append((SEGMENT_HZ[(index, band)], SHORT_S if length == "short" else LONG_S))
        return [*out, THIRD]


STANDARD = (
    SitCode("IC", ("short", "low"), ("short", "low"),
            "intercept: number changed, disconnected, non-working station",
            "config.number_changed"),
    SitCode("VC", ("long", "high"), ("short", "low"),
            "vacant code: unassigned number or prefix", "config.number_not_found"),
    SitCode("RO'", ("short", "low"), ("long", "high"),
            "reorder, intra-LATA: equipment irregularity, partial digits, no wink",
            "carrier.reorder"),
    SitCode("RO''", ("short", "high"), ("long", "low"),
            "reorder, inter-LATA carrier", "carrier.reorder"),
    SitCode("NC'", ("long", "high"), ("long", "high"),
            "no circuit, intra-LATA: trunk blockage, network management controls",
            "carrier.congestion"),
    SitCode("NC''", ("long", "low"), ("long", "low"),
            "no circuit, inter-LATA carrier", "carrier.congestion"),
    SitCode("IO", ("long", "low"), ("short", "high"),
            "ineffective other: misdialled, restricted, other failure",
            "config.dialling_refused"),
)
BY_CODE = {c.code: c for c in STANDARD}
ITU_SEGMENTS = [(950.0, 0.330), (1400.0, 0.330), (1800.0, 0.330)]
ITU_CAUSE = "config.number_intercepted"  # a Q.35 tone names no reason: the announcement does


def tools_missing() -> str | None:
    """Why intercept audio cannot be made here (for ``pytest.mark.skipif``), else None."""
    missing = [tool for tool in ("sox", "espeak-ng") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} missing (Debian packages sox, espeak-ng)" if missing \
        else None


def make_intercept(path: Path, segments: list[tuple[float, float]], *,
                   text: str = ANNOUNCEMENT, lead_s: float = 0.4, cycles: int = 1,
                   encoding: str = "signed", level_db: float = -20.0) -> Path:
    """A WAV (8 kHz mono; ``encoding`` "signed" 16-bit or "u-law" for SIPp) of what the
    caller hears: ``lead_s`` of silence, then ``cycles`` times the tone and the announcement
    (announcement machines repeat), 1 s apart.  The tone's RMS is ``level_db`` dBFS; the
    announcement's peak is -2 dBFS, its speech about 2 dB louder than the tone (espeak-ng's
    peak is some 16 dB over its RMS), as the standard wants the announcement 2 dB above."""
    work = path.parent / f".{path.stem}-parts"
    work.mkdir(parents=True, exist_ok=True)
    speech = work / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(speech), text], check=True,
                   capture_output=True)
    sit, spoken = work / "sit.wav", work / "spoken.wav"
    chain: list[str] = []
    for k, (freq, seconds) in enumerate(segments):
        chain += ["synth", f"{seconds:.3f}", "sine", f"{freq:.1f}"]
        # 200 ms to the announcement (the standard allows up to 300)
        chain += (["pad", "0", "0.2"] if k == len(segments) - 1 else []) + [":"]
    rate = ["-r", "8000", "-c", "1", "-b", "16", "-e", "signed"]
    sox = ["sox", "-R", "-D"]  # repeatable, no dither
    subprocess.run([*sox, "-n", *rate, str(sit), *chain[:-1]], check=True)
    subprocess.run([*sox, str(sit), str(sit.with_suffix(".lvl.wav")), "gain", "-n",
                    f"{level_db + 3:.1f}"], check=True)  # a sine's peak is 3 dB over its RMS
    subprocess.run([*sox, str(speech), *rate, str(spoken), "gain", "-n", "-2", "pad", "0",
                    "1.0"], check=True)
    out_format = (["-e", "u-law", "-b", "8"] if encoding == "u-law" else ["-e", "signed",
                                                                           "-b", "16"])
    subprocess.run([*sox, str(sit.with_suffix(".lvl.wav")), str(spoken), "-r", "8000", "-c",
                    "1", *out_format, str(path), "repeat", str(cycles - 1), "pad",
                    f"{lead_s:.2f}", "0"], check=True)
    shutil.rmtree(work, ignore_errors=True)
    return path
