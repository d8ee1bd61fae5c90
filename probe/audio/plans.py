"""Call-progress tone plans per country (ISO 3166 alpha-2), after ITU-T E.180 and its supplement.

A plan maps a tone *kind* to one or more :class:`ToneSpec` (a tone and its cadence).  Tones are
written as in E.180:

* ``"425"``      one frequency;
* ``"350+440"``  two frequencies summed;
* ``"400*25"``   400 Hz amplitude-modulated at 25 Hz (components 375, 400, 425 Hz).

A cadence is the repeating list ``on, off, on, off, ...`` in seconds; an empty cadence is a
continuous tone.  Several plans give alternatives (Russia's ringback is 1/4 s on older exchanges,
0.8/3.2 s on newer ones): each is a separate spec of the same kind.

Where a plan gives the *same* tone and cadence to two kinds (Poland and Malaysia play busy for
congestion, Japan and Hungary likewise), only the first kind is listed: no detector can tell
them apart, and claiming to would be a lie.  :func:`confusable` lists what remains close.

The Special Information Tone is not in these plans: it is the same everywhere (ITU-T Q.35 and
the North American coded variants, see :mod:`probe.audio.sit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

KINDS = ("dial", "ringback", "busy", "congestion", "call_waiting", "number_unobtainable")


@dataclass(frozen=True)
class Tone:
    """The spectral content of a tone: main frequencies and, for AM tones, the sidebands."""

    expr: str
    main: tuple[float, ...]
    sidebands: tuple[float, ...] = ()
    modulation_hz: float | None = None

    @classmethod
    def parse(cls, expr: str) -> Tone:
        if "*" in expr:
            carrier, mod = (float(v) for v in expr.split("*"))
            return cls(expr, (carrier,), (carrier - mod, carrier + mod), mod)
        return cls(expr, tuple(float(v) for v in expr.split("+")))

    @property
    def all_components(self) -> tuple[float, ...]:
        return self.main + self.sidebands


@dataclass(frozen=True)
class ToneSpec:
    country: str
    kind: str
    tone: Tone
    cadence: tuple[float, ...]  # on, off, on, off...; () = continuous

    @property
    def continuous(self) -> bool:
        return not self.cadence

    @property
    def ons(self) -> tuple[float, ...]:
        return self.cadence[0::2]

    @property
    def offs(self) -> tuple[float, ...]:
        return self.cadence[1::2]

    def describe(self) -> str:
        cad = "continuous" if self.continuous else "/".join(f"{v:g}" for v in self.cadence)
        return f"{self.tone.expr} Hz {cad}"


# kind: "tone cadence" where cadence is on/off/on/off in seconds ("" = continuous);
# alternatives separated by "|".
_NANP = {"dial": "350+440", "ringback": "440+480 2/4", "busy": "480+620 0.5/0.5",
         "congestion": "480+620 0.25/0.25", "call_waiting": "440 0.3/9.7"}
_EU_425 = {"dial": "425", "ringback": "425 1/4", "busy": "425 0.5/0.5",
           "congestion": "425 0.25/0.25"}
_CZ = {"dial": "425 0.33/0.33/0.66/0.66", "ringback": "425 1/4", "busy": "425 0.33/0.33",
       "congestion": "425 0.165/0.165", "call_waiting": "425 0.33/9"}
_RU = {"dial": "425", "ringback": "425 1/4|425 0.8/3.2", "busy": "425 0.35/0.35|425 0.4/0.4",
       "congestion": "425 0.175/0.175", "call_waiting": "425 0.2/5"}

_PLANS: dict[str, tuple[str, dict[str, str]]] = {
    "AT": ("Austria", {"dial": "420", "ringback": "420 1/5", "busy": "420 0.4/0.4",
                       "congestion": "420 0.2/0.2"}),
    "AU": ("Australia", {"dial": "413+438", "ringback": "413+438 0.4/0.2/0.4/2",
                         "busy": "425 0.375/0.375", "call_waiting": "425 0.2/0.2/0.2/4.4"}),
    "BE": ("Belgium", {**_EU_425, "ringback": "425 1/3", "congestion": "425 0.167/0.167",
                       "call_waiting": "1400 0.175/0.175/0.175/3.5"}),
    "BG": ("Bulgaria", {**_EU_425, "call_waiting": "425 0.15/0.15/0.15/4"}),
    "BR": ("Brazil", {"dial": "425", "ringback": "425 1/4", "busy": "425 0.25/0.25",
                      "congestion": "425 0.25/0.25/0.75/0.25", "call_waiting": "425 0.05/1"}),
    "CA": ("Canada", _NANP),
    "CH": ("Switzerland", {**_EU_425, "congestion": "425 0.2/0.2",
                           "call_waiting": "425 0.2/0.2/0.2/4"}),
    "CL": ("Chile", {"dial": "400", "ringback": "400 1/3", "busy": "400 0.5/0.5",
                     "congestion": "400 0.2/0.2", "call_waiting": "400 0.25/8.75"}),
    "CN": ("China", {"dial": "450", "ringback": "450 1/4", "busy": "450 0.35/0.35",
                     "congestion": "450 0.7/0.7", "call_waiting": "450 0.4/4"}),
    "CZ": ("Czechia", _CZ),
    "DE": ("Germany", {"dial": "425", "ringback": "425 1/4", "busy": "425 0.48/0.48",
                       "congestion": "425 0.24/0.24", "call_waiting": "425 0.2/0.2/0.2/5"}),
    "DK": ("Denmark", {**_EU_425, "congestion": "425 0.2/0.2",
                       "call_waiting": "425 0.2/0.6/0.2/3"}),
    "EE": ("Estonia", {**_EU_425, "busy": "425 0.3/0.3", "congestion": "425 0.2/0.2"}),
    "ES": ("Spain", {"dial": "425", "ringback": "425 1.5/3", "busy": "425 0.2/0.2",
                     "congestion": "425 0.2/0.2/0.2/0.2/0.2/0.6",
                     "call_waiting": "425 0.175/0.175/0.175/3.5"}),
    "FI": ("Finland", {**_EU_425, "busy": "425 0.3/0.3", "congestion": "425 0.2/0.2",
                       "call_waiting": "425 0.15/0.15/0.15/8"}),
    "FR": ("France", {"dial": "440", "ringback": "440 1.5/3.5", "busy": "440 0.5/0.5",
                      "congestion": "440 0.25/0.25", "call_waiting": "440 0.3/10"}),
    "GB": ("United Kingdom", {"dial": "350+440", "ringback": "400+450 0.4/0.2/0.4/2",
                              "busy": "400 0.375/0.375",
                              "congestion": "400 0.4/0.35/0.225/0.525",
                              "number_unobtainable": "400", "call_waiting": "400 0.1/4"}),
    "GR": ("Greece", {"dial": "425 0.2/0.3/0.7/0.8", "ringback": "425 1/4",
                      "busy": "425 0.3/0.3", "congestion": "425 0.2/0.2"}),
    "HU": ("Hungary", {"dial": "425", "ringback": "425 1.25/3.75", "busy": "425 0.3/0.3"}),
    "ID": ("Indonesia", {**_EU_425, "call_waiting": "425 0.15/0.15/0.15/10"}),
    "IE": ("Ireland", {"dial": "425", "ringback": "400+450 0.4/0.2/0.4/2",
                       "busy": "425 0.5/0.5"}),
    # E.180: 400 Hz.  414 Hz is what PBXs and VoIP gateways play (Asterisk's "il" zone): kept as
    # the alternative so that a call through one is still named.
    "IL": ("Israel", {"dial": "400|414", "ringback": "400 1/3|414 1/3",
                      "busy": "400 0.5/0.5|414 0.5/0.5",
                      "congestion": "400 0.25/0.25|414 0.25/0.25"}),
    "IN": ("India", {"dial": "400*25", "ringback": "400*25 0.4/0.2/0.4/2",
                     "busy": "400 0.75/0.75", "congestion": "400 0.25/0.25",
                     "call_waiting": "400 0.2/0.1/0.2/7.5"}),
    "IT": ("Italy", {"dial": "425 0.2/0.2/0.6/1", "ringback": "425 1/4", "busy": "425 0.5/0.5",
                     "congestion": "425 0.2/0.2",
                     "call_waiting": "425 0.4/0.1/0.25/0.1/0.15/14"}),
    "JP": ("Japan", {"dial": "400", "ringback": "400*16 1/2", "busy": "400 0.5/0.5"}),
    "KR": ("South Korea", {"dial": "350+440", "ringback": "440+480 1/2",
                           "busy": "480+620 0.5/0.5", "congestion": "480+620 0.3/0.2"}),
    "LT": ("Lithuania", {**_EU_425, "busy": "425 0.35/0.35", "congestion": "425 0.2/0.2"}),
    "MX": ("Mexico", {"dial": "425", "ringback": "425 1/4", "busy": "425 0.25/0.25"}),
    "MY": ("Malaysia", {"dial": "425", "ringback": "425 0.4/0.2/0.4/2", "busy": "425 0.5/0.5"}),
    "NL": ("Netherlands", {**_EU_425, "call_waiting": "425 0.5/9.5"}),
    "NO": ("Norway", {**_EU_425, "congestion": "425 0.2/0.2"}),
    "NZ": ("New Zealand", {"dial": "400", "ringback": "400+450 0.4/0.2/0.4/2",
                           "busy": "400 0.5/0.5", "congestion": "400 0.25/0.25",
                           "number_unobtainable":
                               "400 0.075/0.1/0.075/0.1/0.075/0.1/0.075/0.4"}),
    "PH": ("Philippines", {"dial": "425", "ringback": "425+480 1/4", "busy": "480+620 0.5/0.5",
                           "congestion": "480+620 0.25/0.25"}),
    "PL": ("Poland", {"dial": "425", "ringback": "425 1/4", "busy": "425 0.5/0.5",
                      "call_waiting": "425 0.15/0.15/0.15/4"}),
    "PT": ("Portugal", {**_EU_425, "ringback": "425 1/5", "congestion": "425 0.2/0.2",
                        "call_waiting": "440 0.3/10"}),
    "RU": ("Russia", _RU),
    "SE": ("Sweden", {"dial": "425", "ringback": "425 1/5", "busy": "425 0.25/0.25",
                      "congestion": "425 0.25/0.75", "call_waiting": "425 0.2/0.5/0.2/9.1"}),
    "SG": ("Singapore", {"dial": "425", "ringback": "425*24 0.4/0.2/0.4/2",
                         "busy": "425 0.75/0.75", "congestion": "425 0.25/0.25",
                         "call_waiting": "425*24 0.3/0.2/0.3/3.2"}),
    "SK": ("Slovakia", _CZ),
    "TH": ("Thailand", {"dial": "400*50", "ringback": "420 1/5", "busy": "400 0.5/0.5",
                        "congestion": "400 0.3/0.3"}),
    "TW": ("Taiwan", {"dial": "350+440", "ringback": "440+480 1/2", "busy": "480+620 0.5/0.5",
                      "congestion": "480+620 0.25/0.25"}),
    "UA": ("Ukraine", _RU),
    "US": ("United States", _NANP),
    "VE": ("Venezuela", _EU_425),
    "ZA": ("South Africa", {"dial": "400*33", "ringback": "400*33 0.4/0.2/0.4/2",
                            "busy": "400 0.5/0.5", "congestion": "400 0.25/0.25"}),
}


def _parse_spec(country: str, kind: str, text: str) -> list[ToneSpec]:
    specs = []
    for alt in text.split("|"):
        tone, _, cadence = alt.strip().partition(" ")
        values = tuple(float(v) for v in cadence.split("/")) if cadence else ()
        if len(values) % 2:
            raise ValueError(f"{country}.{kind}: odd cadence {cadence!r}")
        specs.append(ToneSpec(country, kind, Tone.parse(tone), values))
    return specs


# ISO 3166 alpha-3 codes and the other names a zone goes by in telephony configurations:
# Asterisk's indications.conf and DAHDI's zone names are the lower-case alpha-2 codes but for
# "uk"; ETSI and the EU write Greece "EL"; phones' settings use English country names.
_ALPHA3 = {
    "AUT": "AT", "AUS": "AU", "BEL": "BE", "BGR": "BG", "BRA": "BR", "CAN": "CA", "CHE": "CH",
    "CHL": "CL", "CHN": "CN", "CZE": "CZ", "DEU": "DE", "DNK": "DK", "EST": "EE", "ESP": "ES",
    "FIN": "FI", "FRA": "FR", "GBR": "GB", "GRC": "GR", "HUN": "HU", "IDN": "ID", "IRL": "IE",
    "ISR": "IL", "IND": "IN", "ITA": "IT", "JPN": "JP", "KOR": "KR", "LTU": "LT", "MEX": "MX",
    "MYS": "MY", "NLD": "NL", "NOR": "NO", "NZL": "NZ", "PHL": "PH", "POL": "PL", "PRT": "PT",
    "RUS": "RU", "SWE": "SE", "SGP": "SG", "SVK": "SK", "THA": "TH", "TWN": "TW", "UKR": "UA",
    "USA": "US", "VEN": "VE", "ZAF": "ZA",
}
ALIASES = {
    "UK": "GB", "EL": "GR", "great britain": "GB", "britain": "GB", "england": "GB",
    "united states of america": "US", "america": "US", "north america": "US",
    "korea": "KR", "republic of korea": "KR", "czech republic": "CZ", "russian federation": "RU",
    "holland": "NL", "the netherlands": "NL", "slovak republic": "SK",
}


class UnknownZone(ValueError):
    """A zone no plan answers to; the message lists the choices."""


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


@cache
def _names() -> dict[str, str]:
    """Every accepted spelling (normalised) -> ISO alpha-2 code."""
    out = {_norm(code): code for code in _PLANS}
    out |= {_norm(a3): code for a3, code in _ALPHA3.items()}
    out |= {_norm(name): code for code, (name, _) in _PLANS.items()}
    out |= {_norm(alias): code for alias, code in ALIASES.items()}
    return out


def resolve_zone(zone: str) -> str:
    """The ISO 3166 alpha-2 code of the plan ``zone`` names: a code in any case ("de", "DE"),
    an alpha-3 code ("DEU"), an English name ("Germany") or an alias ("UK", "EL"); a locale
    ("de_DE", "en-GB") names its region.  :class:`UnknownZone` says what would be accepted."""
    import difflib

    names = _names()
    key = _norm(zone) if isinstance(zone, str) else ""
    if key in names:
        return names[key]
    region = key.split(" ")[-1] if len(key) == 5 and key[2] == " " else ""
    if region in names and len(region) == 2:
        return names[region]
    near = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    hint = f"did you mean {names[near[0]]} ({countries()[names[near[0]]]})? " if near else ""
    raise UnknownZone(
        f"no tone plan for {zone!r}: {hint}use the ISO 3166 code of a country with a tone plan "
        f"({', '.join(_PLANS)}; any case, alpha-3 codes and English names too) or an alias "
        f"({', '.join(f'{a} for {c}' for a, c in ALIASES.items() if len(a) == 2)})")


@cache
def plan(country: str) -> tuple[ToneSpec, ...]:
    """Every tone spec of ``country`` (any spelling :func:`resolve_zone` accepts);
    :class:`UnknownZone` if none."""
    code = resolve_zone(country)
    _, kinds = _PLANS[code]
    return tuple(s for kind, text in kinds.items() for s in _parse_spec(code, kind, text))


def countries() -> dict[str, str]:
    """ISO code -> country name, for every plan."""
    return {code: name for code, (name, _) in sorted(_PLANS.items())}


@cache
def all_specs() -> tuple[ToneSpec, ...]:
    return tuple(s for code in sorted(_PLANS) for s in plan(code))


def confusable(country: str, rel_tol: float = 0.12) -> list[tuple[ToneSpec, ToneSpec]]:
    """Pairs of different kinds in one plan with the same tone and cadences within ``rel_tol``.

    Used by the tests to exclude pairs nothing can separate (and to print them)."""
    specs = plan(country)
    pairs = []
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            if a.kind == b.kind or a.tone.main != b.tone.main:
                continue
            if len(a.cadence) == len(b.cadence) and all(
                    abs(x - y) <= rel_tol * max(x, y) for x, y in zip(a.cadence, b.cadence,
                                                                       strict=True)):
                pairs.append((a, b))
    return pairs
