"""E-model (ITU-T G.107) transmission rating R and MOS-CQE from RTP statistics.

Default G.107 parameters give R = 93.2 - Idd - Ie,eff (simultaneous impairments at their
defaults; echo and loudness are not observable from RTP and stay at the defaults):

* Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl), Ppl = packet loss in %, where *late*
  packets (beyond the jitter buffer) count as lost, as VoIPmonitor does.  Ie and Bpl per codec
  come from ITU-T G.113 Appendix I (G.711 with PLC: 0 / 25.1; without: 0 / 4.3).
* Idd = 0 for a one-way delay Ta <= 100 ms, else with X = log2(Ta / 100):
  25 * ((1 + X^6)^(1/6) - 3 * (1 + (X/3)^6)^(1/6) + 2).
* MOS = 1 for R < 0, 4.5 for R > 100, else 1 + 0.035 R + 7e-6 R (R - 60)(100 - R), at least 1
  (the cubic dips to 0.99 between R = 0 and 6.5; a property test found it).

Ta = half the RTCP round trip (when measured) + the jitter-buffer depth + one packet time; when
no round trip was measured the network part is 0 and the method says ``delay-assumed``.

pjmedia counts the packets its jitter buffer discarded (late or overflowing) in
``packets_discarded``; :func:`late_packets` computes the same from per-packet transit times for
dialers that have them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# codec (lower case, as pjsua names it before "/") -> (Ie, Bpl with PLC)
CODECS: dict[str, tuple[float, float]] = {
    "pcmu": (0.0, 25.1),
    "pcma": (0.0, 25.1),
    "g729": (11.0, 19.0),
    "g723": (15.0, 16.1),
}
G711_NO_PLC_BPL = 4.3
DEFAULT_JITTER_BUFFER_MS = 60.0
PACKET_MS = 20.0


@dataclass(frozen=True)
class EModel:
    r: float
    mos: float
    loss_percent: float  # lost + late
    delay_ms: float  # one-way Ta used
    ie_eff: float
    idd: float
    method: str


def mos_from_r(r: float) -> float:
    if r < 0:
        return 1.0
    if r > 100:
        return 4.5
    # the cubic dips below 1 for 0 < R < 6.5: clamp, so MOS never falls as R rises
    return max(1.0, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))


def delay_impairment(ta_ms: float) -> float:
    if ta_ms <= 100:
        return 0.0
    x = math.log2(ta_ms / 100)
    return 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def effective_ie(ie: float, bpl: float, ppl: float, burst_r: float = 1.0) -> float:
    if ppl <= 0:
        return ie
    return ie + (95 - ie) * ppl / (ppl / burst_r + bpl)


def late_packets(transit_ms: list[float], buffer_ms: float) -> int:
    """Packets whose transit exceeds the fastest packet's by more than the buffer depth."""
    if not transit_ms:
        return 0
    base = min(transit_ms)
    return sum(1 for t in transit_ms if t - base > buffer_ms)


def rate(codec: str | None, received: int, lost: int, late: int, *,
         rtt_ms: float | None, jitter_buffer_ms: float = DEFAULT_JITTER_BUFFER_MS,
         plc: bool = True, burst_r: float = 1.0) -> EModel | None:
    """R and MOS for a stream; None when the codec has no G.113 values or nothing was sent."""
    name = (codec or "").split("/")[0].lower()
    if name not in CODECS or received + lost <= 0:
        return None
    ie, bpl = CODECS[name]
    if not plc and name in ("pcmu", "pcma"):
        bpl = G711_NO_PLC_BPL
    expected = received + lost
    ppl = 100.0 * min(expected, lost + late) / expected
    ta = jitter_buffer_ms + PACKET_MS + (rtt_ms / 2 if rtt_ms is not None else 0.0)
    ie_eff = effective_ie(ie, bpl, ppl, burst_r)
    idd = delay_impairment(ta)
    r = 93.2 - idd - ie_eff
    method = "itu-t-g107" + ("" if rtt_ms is not None else "/delay-assumed")
    return EModel(round(r, 1), round(mos_from_r(r), 2), round(ppl, 2), round(ta, 1),
                  round(ie_eff, 2), round(idd, 2), method)
