"""Modem profiles: how each family reports call progress, as data.

A profile says which commands switch call-progress reporting on, which URCs mean alerting,
answer and end (by name, or by a state number inside a URC), how to hang up, where the end
cause comes from and how audio is fetched.  The dialer (``probe/dial/modem.py``) reads these
and contains no vendor ``if``.  Adding a modem is adding a :class:`Profile` to :data:`PROFILES`
(and its dialect to the emulator, ``probe/sim/modem.py``, so every test runs over it).

Sources: each vendor's public AT command manual (its call-progress URCs: ``+CLCC`` pushes,
``MO RING``/``MO CONNECTED``, ``^DSCI``/``^CONF``/``^CONN``/``^CEND``, ``#ECAM``,
``+UCALLSTAT``, ``+WIND``, ``+QIND: "ccinfo"``, V.253 DLE events); tests/data/modem-transcripts/
holds a session per family and scenario written from those manuals (each names its section).

Two ways a modem answers ``ATD<number>;``: most say ``OK`` at once ("dial accepted", 27.007 with
``+COLP=0``) and report progress in URCs; some hold the final result until the far end answers
(``OK``, or ``CONNECT``) or the call fails (``BUSY``, ``NO ANSWER``, ``NO CARRIER``) — V.250
dialling, Wavecom/Sierra, ``+COLP=1``: :attr:`Profile.dial_holds`.  While a dial is pending any
character the modem receives aborts it (V.250 6.3.1), so the dialer sends nothing then — not
even to an unknown modem: the generic profile polls ``AT+CLCC`` only after the final result, and
its first poll tells a held ``OK`` (the call already active) from "dial accepted".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Signal(StrEnum):
    """What a URC means for the call in progress."""

    DIALING = "dialing"
    ALERTING = "alerting"  # the far end rings (first one = post-dial delay)
    ANSWERED = "answered"
    ENDED = "ended"  # the call is over; the cause says why
    BUSY = "busy"  # ended: the far end is busy
    NO_ANSWER = "no_answer"  # ended: the network gave up ringing
    NO_DIALTONE = "no_dialtone"  # ended before dialling: no dial tone (analog) / no service
    RINGBACK_END = "ringback_end"  # analog: ringback stopped (answer candidate)
    DIAL_TONE = "dial_tone"  # analog: dial tone heard before dialling
    SIT = "sit"  # analog: special information tones (number not in service...)


@dataclass(frozen=True)
class StateUrc:
    """A URC carrying a call state number in its ``field`` group (``+CLCC``, ``^DSCI``)."""

    urc: str
    states: Mapping[int, Signal]
    field: str = "stat"


@dataclass(frozen=True)
class PcmAudio:
    """Voice as raw PCM on a second serial port (``audio_port`` in the config)."""

    start: str  # command that starts the PCM stream once the call is up
    stop: str | None  # command that stops it (None: stops with the call)
    sample_width: int = 2  # bytes per sample, little-endian signed
    rate: int = 8000


@dataclass(frozen=True)
class Profile:
    name: str
    family: str
    description: str
    channel: str = "gsm"  # "gsm" | "analog"
    identify: tuple[str, ...] = ()  # regexes (case-insensitive) over CGMI/CGMM/ATI text
    init: tuple[str, ...] = ()  # switch call-progress reporting on
    urcs: Mapping[str, str] = field(default_factory=dict)  # vendor URC patterns
    signals: Mapping[str, Signal] = field(default_factory=dict)  # URC name -> meaning
    states: tuple[StateUrc, ...] = ()
    dle: Mapping[str, Signal] = field(default_factory=dict)  # V.253 DLE code -> meaning
    poll_clcc_s: float | None = None  # no call-progress URCs: poll AT+CLCC at this period
    dial: str = "ATD{number};"
    hangup: tuple[str, ...] = ("AT+CHUP", "ATH")  # first that answers OK wins
    cause_command: str | None = "AT+CEER"
    cause_urc: str | None = None  # URC with a "cause" group (Huawei ^CEND)
    duration_urc: str | None = None  # URC with a "dur" group: seconds since answer
    dtmf: str = "AT+VTS={digit}"
    pcm: PcmAudio | None = None
    vrx: bool = False  # V.253 sample stream on the AT port
    through_connect: bool = False  # may report "answered" at ringback (LTE CSFB)
    power_toggle: bool = False  # the power key toggles on/off (SIM800): check STATUS first
    answer_by_timer: bool = False  # V.253: OK to ATD arrives +VRA after the real answer
    dial_holds: bool = False  # ATD's final result is the answer (OK / CONNECT) or the failure

    def matches(self, ident: str) -> bool:
        return any(re.search(rx, ident, re.IGNORECASE) for rx in self.identify)


# The signals every 27.007 modem sends as URCs once a voice call was set up.
_END = MappingProxyType({"no_carrier": Signal.ENDED, "busy": Signal.BUSY,
                         "no_answer": Signal.NO_ANSWER, "no_dialtone": Signal.NO_DIALTONE})
# ... and those of modems that say CONNECT when the far end answers and HANGUP at the end.
_CONNECT = MappingProxyType({**_END, "connect": Signal.ANSWERED, "hangup": Signal.ENDED})
_CLCC = StateUrc("clcc", MappingProxyType({2: Signal.DIALING, 3: Signal.ALERTING,
                                           0: Signal.ANSWERED, 6: Signal.ENDED}))

GENERIC = Profile(
    "generic", "3gpp", "Any 3GPP TS 27.007 modem: nothing sent while ATD is pending, then "
    "AT+CLCC polled; an unsolicited CONNECT is an answer; cause from AT+CEER",
    signals=_CONNECT, states=(_CLCC,), poll_clcc_s=0.25)

SIM7600 = Profile(
    "sim7600", "simcom", "SIMCom SIM7500/SIM7600: AT+CLCC=1 pushes the call list",
    identify=(r"SIM7[56]\d\d", r"SIMCOM_SIM7"),
    init=("AT+CLCC=1",),
    urcs={"voice_call": r"VOICE CALL: ?(?P<what>BEGIN|END)(?::? ?(?P<dur>\d+))?"},
    signals={**_END, "voice_call:BEGIN": Signal.ANSWERED, "voice_call:END": Signal.ENDED},
    states=(_CLCC,), duration_urc="voice_call",
    pcm=PcmAudio("AT+CPCMREG=1", "AT+CPCMREG=0"))

A76XX = Profile(
    "a76xx", "simcom", "SIMCom A76xx (A7670, A7608): as SIM7600; may through-connect at "
    "ringback on LTE CS fallback, so answer on the UART is not proof",
    identify=(r"A76\d\d",),
    init=SIM7600.init, urcs=SIM7600.urcs, signals=SIM7600.signals, states=SIM7600.states,
    duration_urc="voice_call", pcm=SIM7600.pcm, through_connect=True)

SIM800 = Profile(
    "sim800", "simcom", "SIMCom SIM800/SIM900: AT+MORING=1 (MO RING, MO CONNECTED)",
    identify=(r"SIM8\d\d", r"SIM900"),
    init=("AT+MORING=1",),
    urcs={"mo_ring": r"MO RING", "mo_connected": r"MO CONNECTED"},
    signals={**_END, "mo_ring": Signal.ALERTING, "mo_connected": Signal.ANSWERED},
    hangup=("ATH", "AT+CHUP"), power_toggle=True)

EC200 = Profile(
    "ec200", "quectel", "Quectel EC200x / EG91xU (not Qualcomm based): AT+QINDCFG=\"ccinfo\",1 "
    "pushes +QIND: \"ccinfo\" with the +CLCC fields; a released call has state -1",
    identify=(r"\bEC200[A-Z]?\b", r"\bEG91[25][A-Z]\b"),
    init=('AT+QINDCFG="ccinfo",1',),
    urcs={"ccinfo": r'\+QIND: ?"ccinfo",(?P<id>\d+),(?P<dir>\d),(?P<stat>-?\d+),(?P<mode>\d+),'
                    r"(?P<mpty>\d)(?P<rest>.*)"},
    signals=_END,
    states=(StateUrc("ccinfo", MappingProxyType({2: Signal.DIALING, 3: Signal.ALERTING,
                                                 0: Signal.ANSWERED, -1: Signal.ENDED})),),
    pcm=PcmAudio("AT+QPCMV=1,0", "AT+QPCMV=0"))

QUECTEL = Profile(
    "quectel", "quectel", "Quectel EC2x/EG2x: AT^DSCI=1 (its own state numbers: 7 alerting, "
    "3 active, 6 released)",
    identify=(r"\bE[CG]2[015]", r"\bEG9[15]", r"\bEM0[56]", r"quectel"),
    init=("AT^DSCI=1",),
    urcs={"dsci": r"\^DSCI: ?(?P<id>\d+),(?P<dir>\d),(?P<stat>\d+),(?P<type>\d+)(?P<rest>.*)"},
    signals=_END,
    states=(StateUrc("dsci", MappingProxyType({7: Signal.ALERTING, 3: Signal.ANSWERED,
                                               6: Signal.ENDED})),),
    pcm=PcmAudio("AT+QPCMV=1,0", "AT+QPCMV=0"))

HUAWEI = Profile(
    "huawei", "huawei", "Huawei E1550/E1752/K3715/E171: ^ORIG, ^CONF, ^CONN, ^CEND",
    identify=(r"huawei", r"\bE1[57]\d\d", r"\bK3\d{3}", r"\bE17[13]\b"),
    urcs={"orig": r"\^ORIG: ?(?P<id>\d+),\s*(?P<type>\d+)",
          "conf": r"\^CONF: ?(?P<id>\d+)",
          "conn": r"\^CONN: ?(?P<id>\d+),\s*(?P<type>\d+)",
          "cend": r"\^CEND: ?(?P<id>\d+),\s*(?P<dur>\d+),\s*(?P<end_status>\d+)"
                  r"(?:,\s*(?P<cause>\d+))?",
          "huawei_status": r"\^(?:RSSI|BOOT|MODE|SRVST|SIMST|DSFLOWRPT|STIN|EARST|CSNR|HCSQ|"
                           r"RSSILVL|SYSSTART|NWTIME)[: ].*"},
    signals={**_CONNECT, "orig": Signal.DIALING, "conf": Signal.ALERTING,
             "conn": Signal.ANSWERED, "cend": Signal.ENDED},
    cause_command=None, cause_urc="cend", duration_urc="cend",
    pcm=PcmAudio("AT^DDSETEX=2", None))

TELIT = Profile(
    "telit", "telit", "Telit (LE910, LN9x0, GL865, UE/UL/HE9x0): AT#ECAM=1 pushes #ECAM: "
    "<ccid>,<ccstatus>,<calltype>,,,[<number>,<type>] (1 calling, 2 connecting: the far end "
    "rings, 3 active, 7 busy, 0 idle)",
    identify=(r"\bTelit\b", r"\b(?:LE|LN|GL|GE|HE|UE|UL|ME)9\d\d", r"\bGL8[67]\d"),
    init=("AT#ECAM=1",),
    urcs={"ecam": r"#ECAM: ?(?P<id>\d+),\s*(?P<stat>\d+),\s*(?P<type>\d+)(?P<rest>.*)"},
    signals=_END,
    states=(StateUrc("ecam", MappingProxyType({1: Signal.DIALING, 2: Signal.ALERTING,
                                              3: Signal.ANSWERED, 7: Signal.BUSY,
                                              0: Signal.ENDED})),))

UBLOX = Profile(
    "ublox", "ublox", "u-blox (SARA, LARA, TOBY, LISA): AT+UCALLSTAT=1 pushes +UCALLSTAT: "
    "<call_id>,<stat> (2 dialling, 3 alerting, 0 active, 7 connected, 6 disconnected)",
    identify=(r"u-blox", r"\b(?:SARA|LARA|TOBY|LISA|LEON)-[A-Z]\d"),
    init=("AT+UCALLSTAT=1",),
    urcs={"ucallstat": r"\+UCALLSTAT: ?(?P<id>\d+),\s*(?P<stat>\d+)"},
    signals=_END,
    states=(StateUrc("ucallstat", MappingProxyType({2: Signal.DIALING, 3: Signal.ALERTING,
                                                   0: Signal.ANSWERED, 7: Signal.ANSWERED,
                                                   6: Signal.ENDED})),))

WAVECOM = Profile(
    "wavecom", "sierra", "Sierra Wireless / Wavecom (AirPrime Q2xxx, WMP, Fastrack): ATD holds "
    "its final result until the answer (OK) or the failure (BUSY, NO ANSWER, NO CARRIER); "
    "AT+WIND: +WIND: 2 the far end rings, 5 call created, 6 released",
    identify=(r"WAVECOM", r"\bWMP\d{2,3}\b", r"\bQ2[4-6]\d\d\b", r"\bFXT\d{3}\b"),
    # +WIND mask: 2 calling party alert, 16 call created (+WIND: 5), 32 released (+WIND: 6)
    init=("AT+WIND=50",),
    urcs={"wind": r"\+WIND: ?(?P<what>\d+)(?:,(?P<id>\d+))?"},
    signals={**_END, "wind:5": Signal.DIALING, "wind:2": Signal.ALERTING,
             "wind:6": Signal.ENDED, "colp": Signal.ANSWERED},
    hangup=("ATH", "AT+CHUP"), dial_holds=True)

ZTE = Profile(
    "zte", "zte", "ZTE MF-series voice (and older Huawei firmware): the answer is an "
    "unsolicited CONNECT (some add a rate), the end HANGUP or NO CARRIER; alerting from "
    "AT+CLCC polls",
    identify=(r"\bZTE\b", r"\bMF\d{3}[A-Z]?\b"),
    signals=_CONNECT, states=(_CLCC,), poll_clcc_s=0.25)

V253 = Profile(
    "v253", "v253", "Analog voice modem, ITU-T V.253 / TIA IS-101 (AT+FCLASS=8): DLE-shielded "
    "call-progress events; answer from the end of ringback",
    channel="analog",
    identify=(r"voice", r"CX930\d\d", r"conexant", r"U\.?S\.? ?Robotics", r"\bUSR\b"),
    init=("AT+FCLASS=8", "AT+VSM=1,8000", "AT+VRA={vra}", "AT+VRN=100", "AT+VLS=1"),
    dle=MappingProxyType({"r": Signal.ALERTING, "q": Signal.RINGBACK_END,
                          "b": Signal.BUSY, "K": Signal.BUSY, "d": Signal.DIAL_TONE,
                          "i": Signal.DIAL_TONE, "J": Signal.SIT, "l": Signal.ENDED}),
    dial="ATD{number}", hangup=("ATH",), cause_command=None, dtmf="AT+VTS={digit}",
    vrx=True, answer_by_timer=True)

# Order matters: the first profile whose patterns match wins (EC200 before the other Quectels).
PROFILES: dict[str, Profile] = {p.name: p for p in
                                (GENERIC, SIM7600, A76XX, SIM800, EC200, QUECTEL, HUAWEI, TELIT,
                                 UBLOX, WAVECOM, ZTE, V253)}
GSM_PROFILES = tuple(p for p in PROFILES.values() if p.channel == "gsm")


def identify(ident: str, channel: str = "gsm") -> Profile:
    """The profile whose patterns match the modem's identification text; generic 27.007 (GSM)
    or V.253 (analog) when none does."""
    for profile in PROFILES.values():
        if profile.channel == channel and profile.identify and profile.matches(ident):
            return profile
    return GENERIC if channel == "gsm" else V253


def urc_key(name: str, fields: Mapping[str, str]) -> str:
    """The key :attr:`Profile.signals` uses: ``voice_call:BEGIN`` for URCs with a ``what``."""
    what = fields.get("what")
    return f"{name}:{what}" if what else name
