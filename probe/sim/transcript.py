"""Modem transcripts: a timestamped text record of an AT session, replayed by the emulator.

A field capture (or a session written from a vendor's AT manual) becomes a test: the emulator
(:class:`probe.sim.modem.ModemEmulator` with ``transcript=``) answers the probe as the modem
in the transcript did, at the same pace.  The format, one line each::

    # Telit LE910Cx AT Commands Reference Guide, 80529ST10815A, section "#ECAM"
    # family: telit            <- "# key: value" lines are headers; other "#" lines comments
    # scenario: answered
    +0.000 > AT+CGMI           <- seconds since the capture began, ">" the probe sent it,
    +0.004 < Telit             <- "<" the modem sent it
    +0.005 < OK
    +1.000 > ATD+33472000390;
    +1.040 < OK
    +1.400 < #ECAM: 0,2,1,,,  {alerting}     <- {name}: the emulator notes when it wrote it
    +2.900 < #ECAM: 0,3,1,,,  {answer}
    +3.500 > (abort)           <- any character while a dial is pending (V.250 aborts it)

How a replay answers (:class:`Replay`): the commands that occur once in the transcript are
expected in its order — when the next one arrives, every modem line up to the following such
command is written with the recorded delay after it (its answer, then the URCs that followed). A
command that occurs several times (``AT+CLCC`` polls) is answered from the transcript's clock:
the latest recording of it at this point of the session (give or take :data:`LEAD_S`: the
probe's pace is not the capture's), its lines up to the final result. ``ATD`` matches whatever
number is dialled. A command the transcript does not hold is answered by the emulator's own
dialect of the family (``AT+CPIN?`` and the like: a manual need not spell out the whole session)
and noted in :attr:`Replay.unscripted` — a test then proves that nothing was sent while a dial
was pending. A character while a dial is pending (before its final result was written) aborts
it: what the dial still had to say is dropped, and the transcript's ``(abort)`` lines follow
(``NO CARRIER`` when it has none).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ABORT = "(abort)"
LEAD_S = 0.05  # a repeated command may get a recording up to this much ahead of the clock
FINAL = re.compile(r"OK|ERROR|CONNECT(?: .*)?|VCON|NO CARRIER|BUSY|NO ANSWER|NO DIAL ?TONE|"
                   r"COMMAND NOT SUPPORT|\+CM[ES] ERROR: ?.*")
_LINE = re.compile(r"\+(?P<t>\d+(?:\.\d+)?)\s+(?P<kind>[<>])\s?(?P<text>.*?)"
                   r"(?:\s+\{(?P<mark>\w+)\})?\s*$")
_HEADER = re.compile(r"#\s*(?P<key>[a-z_]+):\s*(?P<value>.+?)\s*$")


@dataclass(frozen=True)
class Line:
    t: float  # seconds since the capture began
    kind: str  # ">" sent by the probe (the DTE), "<" sent by the modem
    text: str
    mark: str | None = None  # the emulator records when it wrote this line under this name


@dataclass(frozen=True)
class Transcript:
    lines: tuple[Line, ...]
    headers: dict[str, str] = field(default_factory=dict)
    comments: tuple[str, ...] = ()
    source: str = "<text>"

    @property
    def family(self) -> str:
        return self.headers.get("family", "generic")

    @property
    def scenario(self) -> str | None:
        return self.headers.get("scenario")


class TranscriptError(ValueError):
    pass


def parse(text: str, source: str = "<text>") -> Transcript:
    lines: list[Line] = []
    headers: dict[str, str] = {}
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            header = _HEADER.fullmatch(stripped)
            if header:
                headers[header["key"]] = header["value"]
            else:
                comments.append(stripped.lstrip("# ").rstrip())
            continue
        m = _LINE.fullmatch(stripped)
        if m is None:
            raise TranscriptError(f"{source}:{number}: not '+<seconds> <|> <text>': {raw!r}")
        t = float(m["t"])
        if lines and t < lines[-1].t:
            raise TranscriptError(f"{source}:{number}: time goes back ({t} < {lines[-1].t})")
        lines.append(Line(t, m["kind"], m["text"].strip(), m["mark"]))
    return Transcript(tuple(lines), headers, tuple(comments), source)


def load(path: Path) -> Transcript:
    return parse(path.read_text(encoding="utf-8"), str(path))


def command_key(text: str) -> str:
    """What identifies a command: case and spaces ignored; ``ATD`` whatever the number."""
    squashed = "".join(text.split()).upper()
    if squashed.startswith("ATD"):
        return "ATD;" if squashed.endswith(";") else "ATD"
    return squashed


@dataclass
class Exchange:
    """A probe command in the transcript and the modem lines that followed it."""

    at: float
    key: str
    text: str
    response: list[Line]  # the modem lines right after it, up to its final result
    timeline: list[Line]  # met once: all it said until the next command met once


@dataclass
class Reply:
    """What to write: each line ``delay_s`` after the command arrived."""

    lines: list[tuple[float, Line]]
    scripted: bool = True


class Replay:
    """The transcript's side of a session (pure: the emulator schedules and writes)."""

    def __init__(self, transcript: Transcript, speed: float = 1.0) -> None:
        self.transcript = transcript
        self.speed = speed
        commands = [ln for ln in transcript.lines if ln.kind == ">"]
        counts: dict[str, int] = {}
        for c in commands:
            counts[command_key(c.text)] = counts.get(command_key(c.text), 0) + 1
        self.repeated = {k for k, n in counts.items() if n > 1}
        self.boot: list[Line] = []
        self.ordered: list[Exchange] = []  # commands met once, in order
        self.standing: dict[str, list[Exchange]] = {}  # repeated commands, by time
        self._build()
        self.cursor = 0
        self.anchor: tuple[float, int] | None = None  # (transcript t, arrival ns) of the last
        self.unscripted: list[tuple[int, str]] = []  # (arrival ns, command) answered otherwise
        self.played: list[str] = []

    def _build(self) -> None:
        lines = self.transcript.lines
        current: Exchange | None = None
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.kind == "<":
                (current.timeline if current is not None else self.boot).append(line)
                i += 1
                continue
            key = command_key(line.text)
            response: list[Line] = []
            j = i + 1
            while j < len(lines) and lines[j].kind == "<":
                response.append(lines[j])
                if FINAL.fullmatch(lines[j].text):
                    break
                j += 1
            exchange = Exchange(line.t, key, line.text, response, [])
            if key in self.repeated:
                self.standing.setdefault(key, []).append(exchange)
                i += 1 + len(response)  # its answer is its own; what follows is the timeline
                continue
            self.ordered.append(exchange)
            current = exchange
            i += 1

    # -- what the emulator asks -------------------------------------------------------------
    def boot_lines(self) -> list[tuple[float, Line]]:
        return [(ln.t / self.speed, ln) for ln in self.boot]

    def command(self, text: str, now_ns: int) -> Reply | None:
        """The reply to a command line; None when the transcript does not have it here."""
        key = command_key(text)
        if key in self.repeated:
            return self._standing(key, now_ns)
        if self.cursor < len(self.ordered) and self.ordered[self.cursor].key == key:
            exchange = self.ordered[self.cursor]
            self.cursor += 1
            self.anchor = (exchange.at, now_ns)
            self.played.append(exchange.text)
            return Reply([((ln.t - exchange.at) / self.speed, ln) for ln in exchange.timeline])
        self.unscripted.append((now_ns, text))
        return None

    def abort(self, now_ns: int) -> Reply:
        """A character arrived while a dial was pending."""
        if self.cursor < len(self.ordered) and self.ordered[self.cursor].key == \
                command_key(ABORT):
            reply = self.command(ABORT, now_ns)
            assert reply is not None
            return reply
        self.unscripted.append((now_ns, ABORT))
        return Reply([(0.0, Line(0.0, "<", "NO CARRIER"))], scripted=False)

    def _standing(self, key: str, now_ns: int) -> Reply:
        options = self.standing[key]
        chosen = options[0]
        if self.anchor is not None:
            at, arrived = self.anchor
            now = at + (now_ns - arrived) / 1e9 * self.speed
            earlier = [e for e in options if e.at <= now + LEAD_S]
            chosen = earlier[-1] if earlier else options[0]
        self.played.append(chosen.text)
        return Reply([((ln.t - chosen.at) / self.speed, ln) for ln in chosen.response])

    @property
    def finished(self) -> bool:
        """Every command met once was met, in order."""
        return self.cursor == len(self.ordered)

    def missing(self) -> list[str]:
        return [e.text for e in self.ordered[self.cursor:]]


def transcripts(directory: Path) -> Iterator[Path]:
    yield from sorted(directory.glob("*.txt"))
