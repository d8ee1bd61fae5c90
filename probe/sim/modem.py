"""A voice modem emulator behind a real pseudo-terminal, one dialect per profile family.

The probe opens ``emulator.url`` exactly as it opens ``/dev/serial/by-id/...``: it is a symlink
to the slave side of an ``os.openpty()`` pair, so pyserial, termios and the kernel's tty layer
are all real.  The emulator speaks the bytes real modems send (notes/modems.md): echo on at
boot, CR LF framing (SIMCom: CR CR LF around URCs), URCs between and inside responses, the
vendor call-progress URCs, ``COMMAND NOT SUPPORT`` on Huawei, ``+CME ERROR: 14`` while the SIM
is busy at boot, DLE-shielded events and a DLE-escaped sample stream on the analog modem, PCM
on a second pty for modems with a USB audio port.

A :class:`Scenario` scripts what the network does after ``ATD``.  Everything the emulator
writes that matters for timing is logged in :attr:`ModemEmulator.marks` with the monotonic
clock read right after the write, so tests compare the probe's stamps with it::

    with ModemEmulator("sim7600", SCENARIOS["answered"]) as modem:
        dialer = ModemDialer(ModemConfig(kind="gsm", port=modem.url))
        ...
        modem.marks["alerting"] - modem.marks["dial"]   # == scenario.pdd_ms, give or take

Scenario delays are milliseconds after the ``ATD`` line's CR arrived (``marks["dial"]``).

Replay: ``ModemEmulator.replaying(path)`` answers as a transcript says (a field capture, or a
session written from a vendor's manual; the format and the rules are in
:mod:`probe.sim.transcript`), its family's dialect answering what the transcript leaves out.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import os
import random
import select
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from probe.sim.transcript import FINAL, Line, Replay, Transcript
from probe.sim.transcript import load as load_transcript

DLE = b"\x10"
TONE_HZ = 440.0
PCM_TICK_MS = 20  # the voice port delivers 20 ms of samples at a time
AUDIO_DIR = Path(__file__).parent / "audio"
GREETING_ONSET = 0.02  # |sample| above which the greeting is audible (about -34 dBFS)


@dataclass(frozen=True)
class Scenario:
    """What the modem and the network do.  Times are ms after ATD; ``None`` = never."""

    name: str
    pdd_ms: int = 300  # ATD -> alerting (or -> the failure when there is no ringing)
    ring_ms: int | None = 400  # alerting -> answer; None: rings until the probe gives up
    fail: str | None = None  # "busy" | "congestion" | "unassigned": ends at pdd_ms
    talk_ms: int | None = None  # answered: the network drops the call after this long
    reg_stat: int = 1  # +CREG <stat>; analog: 0 = dead line (no dial tone)
    rssi: int = 21  # +CSQ <rssi>
    sim: str = "READY"  # +CPIN? state
    unresponsive: bool = False  # firmware hung: reads, never answers (until power cycled)
    garbage: bool = False  # line noise between lines
    unplug_after_ms: int | None = None  # USB unplugged this long after ATD
    boot_ms: int = 0  # SIM busy (+CME ERROR: 14) / analog silent for this long after open
    register_after_ms: int | None = None  # searching (+CREG stat 2) this long after power-on
    sim_pin: str = "90417365"  # the PIN a "SIM PIN" SIM accepts (three wrong ones: SIM PUK)
    # SIMCom A76xx on LTE CS fallback: "answered" on the UART (+CLCC stat 0, VOICE CALL:
    # BEGIN) this long after ATD while the far end still rings; the PCM port then carries
    # the ringback until the real answer (pdd_ms + ring_ms), and the greeting after it.
    through_connect_ms: int | None = None
    # What the far end plays once the call is connected (a WAV at 8 kHz), on the PCM port and
    # the V.253 sample stream; None: the shipped greeting (PCM) / a 440 Hz tone (V.253).  An
    # intercept is a network that connects its announcement machine (SIT + announcement).
    far_audio: Path | None = None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("answered", pdd_ms=300, ring_ms=400),
    Scenario("busy", pdd_ms=250, ring_ms=None, fail="busy"),
    Scenario("no_answer", pdd_ms=200, ring_ms=None),
    Scenario("congestion", pdd_ms=250, ring_ms=None, fail="congestion"),
    Scenario("unassigned", pdd_ms=250, ring_ms=None, fail="unassigned"),
    Scenario("not_registered", reg_stat=0, rssi=99),
    Scenario("weak_signal", rssi=3),
    Scenario("dropped", pdd_ms=250, ring_ms=300, talk_ms=400),
    Scenario("unresponsive", unresponsive=True),
    Scenario("garbage", pdd_ms=300, ring_ms=350, garbage=True),
    Scenario("unplugged", pdd_ms=200, ring_ms=None, unplug_after_ms=450),
    Scenario("slow_boot", pdd_ms=250, ring_ms=300, boot_ms=700),
    Scenario("registers_late", pdd_ms=150, ring_ms=150, reg_stat=2, register_after_ms=400),
    Scenario("sim_pin", pdd_ms=150, ring_ms=150, sim="SIM PIN"),
    Scenario("through_connect", pdd_ms=200, ring_ms=1500, through_connect_ms=250),
)}

FAIL_CAUSE = {"busy": 17, "congestion": 34, "unassigned": 1}


@dataclass(frozen=True)
class Identity:
    manufacturer: str
    model: str
    revision: str
    ati: str


IDENTITIES: dict[str, Identity] = {
    "generic": Identity("Sierra Wireless, Incorporated", "MC7304", "SWI9X15C_05.05.58.00",
                        "Manufacturer: Sierra Wireless\r\nModel: MC7304"),
    "sim7600": Identity("SIMCOM INCORPORATED", "SIMCOM_SIM7600E-H", "LE20B04SIM7600M22",
                        "Manufacturer: SIMCOM INCORPORATED\r\nModel: SIMCOM_SIM7600E-H"),
    "a76xx": Identity("INCORPORATED", "A7670E-LASE", "A7670M7_V1.11.1",
                      "Manufacturer: INCORPORATED\r\nModel: A7670E-LASE"),
    "sim800": Identity("SIMCOM_Ltd", "SIMCOM_SIM800L", "Revision:1418B05SIM800L24",
                       "SIM800 R14.18"),
    "quectel": Identity("Quectel", "EC25", "EC25EFAR06A06M4G", "Quectel\r\nEC25\r\n"
                        "Revision: EC25EFAR06A06M4G"),
    "huawei": Identity("huawei", "E1752", "11.126.13.00.00",
                       "Manufacturer: huawei\r\nModel: E1752"),
    "v253": Identity("CONEXANT", "CX93001-EIS_V0.2002-V92", "", "CX93001-EIS_V0.2002-V92"),
    # the families below speak through transcripts (tests/data/modem-transcripts/); these
    # identities answer what a transcript leaves out
    "telit": Identity("Telit", "LE910C1-EU", "25.21.660", "Telit\r\nLE910C1-EU\r\n25.21.660"),
    "ublox": Identity("u-blox", "SARA-U270", "23.60", "u-blox\r\nSARA-U270"),
    "wavecom": Identity("WAVECOM MODEM", "MULTIBAND  900E  1800", "R7.46", "WAVECOM MODEM\r\n"
                        "MULTIBAND  900E  1800"),
    "ec200": Identity("Quectel", "EC200U", "EC200UEUAAR03A01M08", "Quectel\r\nEC200U\r\n"
                      "Revision: EC200UEUAAR03A01M08"),
    "zte": Identity("ZTE INCORPORATED", "MF626", "BD_P673A2V1.0.0B09", "Manufacturer: ZTE "
                    "INCORPORATED\r\nModel: MF626"),
}

IMEI = "358240051111110"
IMSI = "208150123456789"


class ModemEmulator:
    """See the module docstring.  ``family`` is a profile name from ``probe.at.profiles``."""

    def __init__(self, family: str, scenario: Scenario | None = None, *,
                 directory: Path | None = None, audio_port: bool = False,
                 number_echo: bool = True, cadence_ms: tuple[int, int] = (150, 250),
                 clock: Callable[[], int] = time.monotonic_ns, seed: int = 7,
                 transcript: Transcript | None = None, speed: float = 1.0) -> None:
        if family not in IDENTITIES:
            raise ValueError(f"no emulated modem family {family!r}")
        self.family = family
        self.replay = Replay(transcript, speed) if transcript is not None else None
        self.replay_gen = 0  # an aborted dial drops what it still had to say
        self.replay_dialling = False  # a replayed ATD has not written its final result yet
        self.scenario = scenario or SCENARIOS["answered"]
        self.ident = IDENTITIES[family]
        self.clock = clock
        self.cadence_ms = cadence_ms  # analog ringback: tone on, tone off
        self.number_echo = number_echo
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="modem-sim-"))
        self.url = str(self.dir / f"ttyUSB-{family}")
        self.audio_url: str | None = str(self.dir / f"ttyUSB-{family}-audio") if audio_port \
            else None
        self.marks: dict[str, int] = {}
        self.received: list[str] = []  # every command line, in order
        self.received_ns: list[int] = []  # ... and when its CR arrived
        self.rng = random.Random(seed)
        self._lock = threading.RLock()
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the loop at once
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int] | None = None
        self._audio_fds: tuple[int, int] | None = None
        self._inbuf = bytearray()
        self.powered = True
        self.hung = self.scenario.unresponsive
        self._key_down_ns: int | None = None
        self.status_pin: Any = None
        self.last_cause: int | None = None  # the last call's 3GPP cause, for AT+CEER
        self._reset_state()

    # -- life cycle -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.echo = True
        self.call: str | None = None  # None | "dialing" | "alerting" | "active" | "analog"
        self.call_id = 1
        self.answered_ns: int | None = None
        self.atd_pending = False  # analog: ATD waits for the answer timer
        self.vrx = False
        self.vrx_start_ns = 0
        self.vrx_sent = 0
        self.pcm = False
        self.voice_mode = False
        self.vra_ds = 70
        self.boot_until = self.clock() + self.scenario.boot_ms * 1_000_000
        self.call_generation = 0
        self.sim_ready_sent = self.scenario.boot_ms == 0
        self.sim = self.scenario.sim  # +CPIN state: READY, SIM PIN, SIM PUK, ABSENT
        self.pin_attempts = 3
        self.creg_n = 0  # AT+CREG=<n>: 0 no URC, 1/2 +CREG URC on registration changes
        after = self.scenario.register_after_ms
        self.registers_at = None if after is None else self.clock() + after * 1_000_000
        self.real_answer_ns: int | None = None  # the far end picked up (PCM: the greeting)
        self.pcm_start_ns: int | None = None
        self.pcm_sent = 0

    @classmethod
    def replaying(cls, path: Path, **kw: Any) -> ModemEmulator:
        """An emulator that plays the transcript at ``path`` (family from its header)."""
        transcript = load_transcript(path)
        return cls(transcript.family, transcript=transcript, **kw)

    def start(self) -> ModemEmulator:
        self._plug()
        if self.replay is not None:
            self._replay_schedule(self.replay.boot_lines())
        self._thread = threading.Thread(target=self._loop, name=f"modem-sim-{self.family}",
                                        daemon=True)
        self._thread.start()
        if not self.sim_ready_sent:
            self._at(self.scenario.boot_ms, self._boot_done)
        self._schedule_registration()
        return self

    def _schedule_registration(self) -> None:
        if self.registers_at is not None:
            self._at_ns(self.registers_at, self._registered)

    def _reg_stat(self) -> int:
        if self.registers_at is not None:
            return 2 if self.clock() < self.registers_at else 1
        return self.scenario.reg_stat

    def _registered(self) -> None:
        """The searching modem found its network: a ``+CREG`` URC when they are on."""
        if self.creg_n and self.powered and self.registers_at is not None:
            self._urc('+CREG: 1,"00C3","0000A1B2",7' if self.creg_n == 2 else "+CREG: 1")
        self._mark("registered")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._unplug_fds()
        if self._own_dir:
            for name in (self.url, self.audio_url):
                if name:
                    with contextlib.suppress(OSError):
                        os.unlink(name)
            with contextlib.suppress(OSError):
                self.dir.rmdir()

    def __enter__(self) -> ModemEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plug(self) -> None:
        self._fds = _pty_pair(self.url)
        if self.audio_url:
            self._audio_fds = _pty_pair(self.audio_url)

    def _unplug_fds(self) -> None:
        with self._lock:
            for pair in (self._fds, self._audio_fds):
                for fd in pair or ():
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fds = self._audio_fds = None

    def unplug(self) -> None:
        """USB unplug: both ptys vanish (the reader sees EIO), the by-id symlinks go."""
        with self._lock:
            self.marks["unplug"] = self.clock()
            self._end_call()  # no power, no call
            self.atd_pending = False
            self._unplug_fds()
            for name in (self.url, self.audio_url):
                if name:
                    with contextlib.suppress(OSError):
                        os.unlink(name)
            self._timers.clear()

    def replug(self) -> None:
        """Re-enumeration: new ptys behind the same symlinks, a freshly booted modem."""
        with self._lock:
            self._reset_state()
            self._plug()
            self._schedule_registration()

    @property
    def plugged(self) -> bool:
        return self._fds is not None

    @property
    def idle(self) -> bool:
        """No call, no audio stream, nothing half-dialled."""
        return self.call is None and not self.atd_pending and not self.vrx and not self.pcm

    # -- power key and status pin (gpiozero mock pins) --------------------------------------
    def wire(self, power_key: Any = None, status: Any = None, press_ms: int = 100) -> None:
        """Connect gpiozero mock pins: ``power_key`` an input pin driven by the probe's power
        key output (MockConnectedPin), ``status`` an input pin this modem drives."""
        self._press_ns = press_ms * 1_000_000
        if power_key is not None:
            power_key.function = "input"
            power_key.edges = "both"
            power_key.when_changed = self._key_changed
        self.status_pin = status
        self._drive_status()

    def _key_changed(self, ticks: float, state: bool) -> None:
        now = self.clock()
        if state:
            self._key_down_ns = now
            return
        if self._key_down_ns is None or now - self._key_down_ns < self._press_ns:
            return
        self._key_down_ns = None
        with self._lock:  # a long enough press toggles power (SIM800 style)
            self.powered = not self.powered
            self.marks["power_on" if self.powered else "power_off"] = now
            if self.powered:
                self.hung = False
                self._reset_state()
                self._schedule_registration()
                self._at(50, lambda: self._urc("RDY"))
            else:
                self.call = None
                self.atd_pending = self.vrx = self.pcm = False
                self._timers.clear()
        self._drive_status()

    def _drive_status(self) -> None:
        pin = self.status_pin
        if pin is not None:
            pin.drive_high() if self.powered else pin.drive_low()

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fd = self._fds[0] if self._fds else None
                due = self._timers[0][0] if self._timers else None
            timeout = 0.05 if due is None else max(0.0, min(0.05, (due - self.clock()) / 1e9))
            if fd is None:
                self._stop.wait(timeout)
            else:
                try:
                    ready, _, _ = select.select([fd, self._wake_r], [], [], timeout)
                except (OSError, ValueError):
                    ready = []
                if fd in ready:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if data:
                        with self._lock:
                            self._input(data)
            self._run_timers()

    def _run_timers(self) -> None:
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self.clock():
                    return
                _, _, action = heapq.heappop(self._timers)
                action()

    def _at(self, delay_ms: float, action: Callable[[], None]) -> None:
        self._at_ns(self.clock() + int(delay_ms * 1_000_000), action)

    def _at_ns(self, when_ns: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when_ns, self._seq, action))

    def _write(self, data: bytes, fds: tuple[int, int] | None = None) -> None:
        pair = fds if fds is not None else self._fds
        if pair is None or not self.powered:
            return
        with contextlib.suppress(BlockingIOError, OSError):  # nobody reading: bytes dropped
            os.write(pair[0], data)

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, self.clock())

    # -- command input ----------------------------------------------------------------------
    def _input(self, data: bytes) -> None:
        if not self.powered:
            return
        if self.vrx and b"\x10!" in data:  # DTE ends the sample stream
            self.vrx = False
            self._write(DLE + b"\x03\r\nOK\r\n")
            data = data.split(b"\x10!", 1)[1]
        if self.replay is not None and self.replay_dialling and data:
            self._replay_abort()  # any character aborts dialling (V.250 6.3.1)
            return
        if self.atd_pending and data:  # any character aborts dialling (V.250 6.3.1)
            self.atd_pending = False
            self._end_call()
            self._final("NO CARRIER")
            return
        for byte in data:
            if self.echo and not self.hung:
                self._write(bytes([byte]))
            if byte == 0x0D:
                line = self._inbuf.decode("ascii", errors="replace").strip()
                self._inbuf.clear()
                if line:
                    self.received.append(line)
                    self.received_ns.append(self.clock())
                    if not self.hung and self.clock() >= self._silent_until():
                        self._command(line)
            elif byte != 0x0A:
                self._inbuf.append(byte)

    def _silent_until(self) -> int:
        return self.boot_until if self.family == "v253" else 0

    def _info(self, *lines: str) -> None:
        self._write(b"".join(f"\r\n{line}\r\n".encode() for line in lines))

    def _final(self, result: str) -> None:
        self._write(f"\r\n{result}\r\n".encode())

    def _urc(self, text: str) -> None:
        crs = b"\r\r\n" if self.family in ("sim7600", "a76xx", "sim800") else b"\r\n"
        self._write(crs + text.encode() + crs)

    def _noise(self) -> None:
        if self.scenario.garbage:
            junk = bytes(self.rng.choice(b"\x80\x9f\xa7\xfe\xff#$%&~<>?ZQX{}") for _ in
                         range(self.rng.randint(1, 12)))
            self._write(b"\r\n" + junk + b"\r\n")

    def _error(self) -> None:
        self._final("COMMAND NOT SUPPORT" if self.family == "huawei" else "ERROR")

    def _command(self, line: str) -> None:
        if self.replay is not None and self._replayed(line):
            return None
        self._noise()
        up = line.upper()
        if not up.startswith("AT"):
            return self._error()
        body = up[2:].strip()
        sim_busy = self.family != "v253" and self.clock() < self.boot_until
        handler = self._handlers().get(_key(body))
        if handler is None:
            return self._error()
        needs_sim = _key(body) in {"+CPIN", "+CIMI", "+COPS", "D", "+CLCC", "+CEER", "+CREG",
                                   "+CGREG", "+CEREG"}
        if sim_busy and needs_sim:
            return self._final("+CME ERROR: 14")
        handler(body, line)
        return None

    def _handlers(self) -> dict[str, Callable[[str, str], None]]:
        h: dict[str, Callable[[str, str], None]] = {
            "": self._ok, "E": self._echo, "V": self._ok, "Z": self._atz, "I": self._ati,
            "+CMEE": self._ok, "+COLP": self._ok, "+CGMI": self._ident("manufacturer"),
            "+CGMM": self._ident("model"), "+CGMR": self._ident("revision"),
            "+CGSN": self._imei, "+CIMI": self._imsi, "H": self._hangup, "+CHUP": self._hangup,
            "D": self._dial, "+VTS": self._vts,
        }
        if self.family == "v253":
            h.update({"+FCLASS": self._fclass, "+VSM": self._ok, "+VRA": self._vra,
                      "+VRN": self._ok, "+VLS": self._ok, "+VRX": self._vrx, "X": self._ok})
            return h
        h.update({"+CPIN": self._cpin, "+CREG": self._creg, "+CGREG": self._creg,
                  "+CEREG": self._creg, "+COPS": self._cops, "+CSQ": self._csq,
                  "+CESQ": self._cesq, "+CLCC": self._clcc, "+CEER": self._ceer})
        if self.family == "sim800":
            h["+MORING"] = self._ok
        if self.family == "quectel":
            h.update({"^DSCI": self._ok, "+QPCMV": self._pcm_cmd})
        if self.family in ("sim7600", "a76xx"):
            h["+CPCMREG"] = self._pcm_cmd
        if self.family == "huawei":
            h["^DDSETEX"] = self._pcm_cmd
        return h

    # -- replay ---------------------------------------------------------------------------
    def _replayed(self, line: str) -> bool:
        """Answer ``line`` from the transcript; False: the family's dialect answers it (and a
        dial the transcript does not script is refused: the transcript says how calls go)."""
        assert self.replay is not None
        now = self.clock()
        reply = self.replay.command(line, now)
        body = line.upper()[2:].strip()
        if reply is None:
            if _key(body) == "D":
                self._final("ERROR")
                return True
            return False
        if _key(body) in ("E", "Z"):  # the echo follows what the modem was told
            self.echo = body != "E0"
        if _key(body) == "D":
            self.marks["dial"] = now
            self.replay_gen += 1
            self.replay_dialling = True
        self._replay_schedule(reply.lines, now)
        return True

    def _replay_schedule(self, lines: list[tuple[float, Line]], now: int | None = None) -> None:
        base = self.clock() if now is None else now
        gen = self.replay_gen
        for delay_s, line in lines:
            self._at_ns(base + int(delay_s * 1e9), functools.partial(self._replay_write, gen,
                                                                      line))

    def _replay_write(self, gen: int, line: Line) -> None:
        if gen != self.replay_gen:
            return  # the dial this line belonged to was aborted
        self._write(f"\r\n{line.text}\r\n".encode())
        if line.mark:
            self.marks[line.mark] = self.clock()
        if self.replay_dialling and FINAL.fullmatch(line.text):
            self.replay_dialling = False
            self.marks["dial_final"] = self.clock()

    def _replay_abort(self) -> None:
        assert self.replay is not None
        now = self.clock()
        self.marks["abort"] = self.marks["dial_final"] = now
        self.replay_gen += 1
        self.replay_dialling = False
        self._replay_schedule(self.replay.abort(now).lines, now)

    # -- plain commands ---------------------------------------------------------------------
    def _ok(self, body: str, line: str) -> None:
        self._final("OK")

    def _echo(self, body: str, line: str) -> None:
        self.echo = body != "E0"
        self._final("OK")

    def _atz(self, body: str, line: str) -> None:
        self.echo = True  # the field pitfall: ATZ turns echo back on
        self._final("OK")

    def _ati(self, body: str, line: str) -> None:
        self._write(f"\r\n{self.ident.ati}\r\n".encode())
        self._final("OK")

    def _ident(self, what: str) -> Callable[[str, str], None]:
        def answer(body: str, line: str) -> None:
            if self.family == "v253":
                return self._error()
            self._info(getattr(self.ident, what))
            self._final("OK")
            return None
        return answer

    def _imei(self, body: str, line: str) -> None:
        if self.family == "v253":
            return self._error()
        self._info(IMEI)
        self._final("OK")
        return None

    def _imsi(self, body: str, line: str) -> None:
        if self.sim != "READY":
            return self._final("+CME ERROR: 10")
        self._info(IMSI)
        self._final("OK")
        return None

    def _cpin(self, body: str, line: str) -> None:
        if self.sim == "ABSENT":
            return self._final("+CME ERROR: 10")
        if "=" in body:
            return self._enter_pin(line.split("=", 1)[1].strip().strip('"'))
        self._info(f"+CPIN: {self.sim}")
        self._final("OK")
        return None

    def _enter_pin(self, pin: str) -> None:
        """``AT+CPIN="<pin>"``: right -> OK, the SIM initialises (``+CME ERROR: 14`` for a
        moment, then ``+CPIN: READY``); wrong -> ``+CME ERROR: 16``, the third: SIM PUK."""
        if self.sim != "SIM PIN":
            return self._final("+CME ERROR: 3")  # operation not allowed
        self.marks["pin_entered"] = self.clock()
        if pin != self.scenario.sim_pin:
            self.pin_attempts -= 1
            if self.pin_attempts <= 0:
                self.sim = "SIM PUK"
            return self._final("+CME ERROR: 16")  # incorrect password
        self.sim = "READY"
        self.boot_until = self.clock() + 150_000_000
        self._final("OK")
        self._at(150, lambda: self._urc("+CPIN: READY"))
        return None

    def _creg(self, body: str, line: str) -> None:
        prefix = "+" + _key(body)[1:]
        if not body.endswith("?"):
            if body.startswith("+CREG=") and body[6:].isdigit():
                self.creg_n = int(body[6:])
            return self._final("OK")
        stat = self._reg_stat()
        if self.family in ("sim7600", "a76xx"):
            self._urc(f'+CREG: {stat},"00C3","0000A1B2"')  # a URC inside the response
        self._info(f'{prefix}: 2,{stat},"00C3","0000A1B2",7' if stat in (1, 5)
                   else f"{prefix}: 2,{stat}")
        self._final("OK")
        return None

    def _cops(self, body: str, line: str) -> None:
        if self._reg_stat() in (1, 5):
            self._info('+COPS: 0,0,"Orange F",7')
        else:
            self._info("+COPS: 0")
        self._final("OK")

    def _csq(self, body: str, line: str) -> None:
        self._info(f"+CSQ: {self.scenario.rssi},99")
        self._final("OK")

    def _cesq(self, body: str, line: str) -> None:
        if self.family in ("sim800", "huawei"):
            return self._error()
        rsrp = 255 if self.scenario.rssi == 99 else max(0, min(97, 2 * self.scenario.rssi + 25))
        self._info(f"+CESQ: 99,99,255,255,20,{rsrp}")
        self._final("OK")
        return None

    def _ceer(self, body: str, line: str) -> None:
        cause = self.last_cause
        text = {16: "Normal call clearing", 17: "User busy", 34: "No circuit/channel available",
                1: "Unassigned (unallocated) number", 41: "Temporary failure"}.get(cause or 0)
        if self.family == "quectel":
            self._info(f'+CEER: "CC INFO","{text or "No cause information available"}"')
        elif self.family == "generic":
            self._info(f"+CEER: {cause}" if cause else "+CEER: No cause information available")
        else:
            self._info(f"+CEER: {text or 'No cause information available'}")
        self._final("OK")

    def _clcc(self, body: str, line: str) -> None:
        if body == "+CLCC=?":
            self._info("+CLCC: (0-1)")
        elif body == "+CLCC" and self.call is not None:
            self._info(self._clcc_line())
        self._final("OK")

    def _clcc_line(self, stat: int | None = None) -> str:
        if stat is None:
            stat = {"dialing": 2, "alerting": 3, "active": 0}.get(self.call or "", 6)
        return f'+CLCC: {self.call_id},0,{stat},0,0,"{self.number}",145'

    def _vts(self, body: str, line: str) -> None:
        if self.call not in ("active", "analog") or self.answered_ns is None:
            return self._final("+CME ERROR: 3" if self.family != "v253" else "ERROR")
        self.marks.setdefault("dtmf", self.clock())
        self.dtmf = getattr(self, "dtmf", "") + body.split("=", 1)[1].strip('"')
        self._final("OK")
        return None

    def _pcm_cmd(self, body: str, line: str) -> None:
        value = body.split("=", 1)[1] if "=" in body else ""
        start = value.startswith(("1", "2"))
        if not start:
            self.pcm = False
            return self._final("OK")
        ready = self.answered_ns is not None and self.clock() - self.answered_ns > 100_000_000
        if self.call != "active" or (self.family in ("sim7600", "a76xx") and not ready):
            return self._error()  # SIM7600: needs ~100 ms after VOICE CALL: BEGIN
        self.pcm = True
        self._final("OK")
        self.pcm_start_ns = self.clock()
        self.pcm_sent = 0
        self._mark("pcm_start")
        self._at(PCM_TICK_MS, self._pcm_tick)
        return None

    def _pcm_tick(self) -> None:
        """Write the samples whose time has come (sample k belongs to pcm_start + k / 8 kHz,
        written once it has "happened", like a capture): real time, no drift."""
        if not self.pcm or self.call != "active" or self.pcm_start_ns is None:
            self.pcm = False
            return
        now = self.clock()
        due = (now - self.pcm_start_ns) * 8000 // 1_000_000_000
        if due > self.pcm_sent:
            self._write(self._pcm_samples(self.pcm_sent, due - self.pcm_sent), self._audio_fds)
            self.pcm_sent = due
        ticks = (now - self.pcm_start_ns) // (PCM_TICK_MS * 1_000_000) + 1
        self._at_ns(self.pcm_start_ns + ticks * PCM_TICK_MS * 1_000_000, self._pcm_tick)

    def _pcm_samples(self, first: int, n: int) -> bytes:
        """s16le samples ``first..first+n`` of the voice port: the ringback (from alerting)
        until the far end answers, then its greeting, then silence."""
        import numpy as np

        ringback, greeting = sim_audio()
        if self.scenario.far_audio is not None:
            greeting = far_samples(self.scenario.far_audio)
        assert self.pcm_start_ns is not None
        t = self.pcm_start_ns + (np.arange(first, first + n, dtype=np.int64) * 125_000)
        out = np.zeros(n, np.int16)
        answer = self.real_answer_ns
        before = np.ones(n, bool) if answer is None else t < answer
        alerting = self.marks.get("alerting", self.pcm_start_ns)
        if before.any():
            k = ((t[before] - alerting) // 125_000) % len(ringback)
            out[before] = ringback[k]
        if answer is not None and (~before).any():
            k = (t[~before] - answer) // 125_000
            inside = k < len(greeting)
            idx = np.flatnonzero(~before)[inside]
            out[idx] = greeting[k[inside]]
        return out.astype("<i2").tobytes()

    def _phase(self) -> int:
        self._sample_no = getattr(self, "_sample_no", 0) + 160
        return self._sample_no

    # -- the call ---------------------------------------------------------------------------
    def _dial(self, body: str, line: str) -> None:
        sc = self.scenario
        for mark in ("dial", "alerting", "answer", "uart_answer", "pcm_start", "end", "hangup",
                     "dtmf"):
            self.marks.pop(mark, None)  # power_on/power_off/unplug stay for the test to see
        self.marks["dial"] = self.clock()
        self.number = line[3:].strip().rstrip(";")
        self.call_generation += 1
        gen = self.call_generation
        self.last_cause = None
        if self.family == "v253":
            return self._dial_analog(gen)
        if self._reg_stat() not in (1, 5):
            self.last_cause = None
            return self._final("NO CARRIER")
        self.call = "dialing"
        self._final("OK")  # COLP=0: OK right after dialling, not on answer
        self._dialing_urcs()
        self._after(gen, sc.pdd_ms, self._alert if sc.fail is None else self._fail)
        if sc.through_connect_ms is not None and sc.fail is None:
            self._after(gen, sc.through_connect_ms, self._through_connect)
        if sc.ring_ms is not None and sc.fail is None:
            self._after(gen, sc.pdd_ms + sc.ring_ms, self._answer)
            if sc.talk_ms is not None:
                self._after(gen, sc.pdd_ms + sc.ring_ms + sc.talk_ms,
                            lambda: self._network_end(41))
        if sc.unplug_after_ms is not None:
            self._after(gen, sc.unplug_after_ms, self.unplug)
        if sc.garbage:
            for k in range(1, 6):
                self._after(gen, 90 * k, self._noise)
        if self.family == "huawei":
            for k in range(1, 4):
                self._after(gen, 170 * k, lambda: self._urc("^RSSI:17"))
        return None

    def _after(self, gen: int, delay_ms: float, action: Callable[[], None]) -> None:
        when = self.marks["dial"] + int(delay_ms * 1_000_000)

        def guarded() -> None:
            if self.call_generation == gen and (self.call is not None or self.atd_pending):
                action()
        self._at_ns(when, guarded)

    def _dialing_urcs(self) -> None:
        if self.family in ("sim7600", "a76xx"):
            self._urc(self._clcc_line(2))
        elif self.family == "huawei":
            self._urc(f"^ORIG:{self.call_id},0")

    def _alert(self) -> None:
        self.call = "alerting"
        urc = {"sim7600": self._clcc_line(3), "a76xx": self._clcc_line(3),
               "sim800": "MO RING", "quectel": f'^DSCI: 1,0,7,0,"{self.number}",145',
               "huawei": f"^CONF:{self.call_id}"}.get(self.family)
        if urc:
            self._urc(urc)
        self._mark("alerting")

    def _through_connect(self) -> None:
        """LTE CS fallback: the network connects the voice path at ringback and the modem
        says "answered" although the far end still rings."""
        if self.call == "active":
            return
        self.call = "active"
        self._urc("VOICE CALL: BEGIN")
        self._urc(self._clcc_line(0))
        self.answered_ns = self.clock()
        self._mark("uart_answer")

    def _answer(self) -> None:
        self.real_answer_ns = self.clock()
        if self.call == "active":  # through-connected earlier: the UART says nothing new
            self._mark("answer")
            return
        self.call = "active"
        f = self.family
        if f in ("sim7600", "a76xx"):
            self._urc("VOICE CALL: BEGIN")
            self._urc(self._clcc_line(0))
        elif f == "sim800":
            self._urc("MO CONNECTED")
        elif f == "quectel":
            self._urc(f'^DSCI: 1,0,3,0,"{self.number}",145')
        elif f == "huawei":
            self._urc(f"^CONN:{self.call_id},0")
        self.answered_ns = self.clock()
        self._mark("answer")

    def _fail(self) -> None:
        kind = self.scenario.fail
        assert kind is not None
        self._network_end(FAIL_CAUSE[kind], busy=kind == "busy")

    def _network_end(self, cause: int, busy: bool = False) -> None:
        """The network clears the call (busy, congestion, dropped...)."""
        self.last_cause = cause
        f = self.family
        seconds = (0 if self.answered_ns is None
                   else round((self.clock() - self.answered_ns) / 1e9))
        if f in ("sim7600", "a76xx"):
            self._urc(self._clcc_line(6))
            if self.answered_ns is not None:
                sep = ":" if f == "a76xx" else ": "  # some firmware omits the space
                self._urc(f"VOICE CALL: END{sep}{seconds:06d}")
        elif f == "quectel":
            self._urc(f'^DSCI: 1,0,6,0,"{self.number}",145')
        if f == "huawei":
            self._urc(f"^CEND:{self.call_id},{seconds},104,{cause}")
        else:
            self._urc("BUSY" if busy else "NO CARRIER")
        self._mark("end")
        self._end_call()

    def _hangup(self, body: str, line: str) -> None:
        had_call = self.call is not None
        if had_call and self.family != "v253":
            self.last_cause = 16
            seconds = (0 if self.answered_ns is None
                       else round((self.clock() - self.answered_ns) / 1e9))
            if self.family in ("sim7600", "a76xx"):
                self._urc(self._clcc_line(6))
                if self.answered_ns is not None:
                    self._urc(f"VOICE CALL: END: {seconds:06d}")
            elif self.family == "quectel":
                self._urc(f'^DSCI: 1,0,6,0,"{self.number}",145')
            elif self.family == "huawei":
                self._urc(f"^CEND:{self.call_id},{seconds},104,16")
        if had_call:
            self._mark("hangup")
        self._end_call()
        self._final("OK")

    def _end_call(self) -> None:
        self.call = None
        self.answered_ns = None
        self.real_answer_ns = None
        self.pcm_start_ns = None
        self.pcm = False
        self.vrx = False
        self.call_generation += 1

    # -- analog (V.253) ---------------------------------------------------------------------
    def _fclass(self, body: str, line: str) -> None:
        if body.endswith("=?"):
            self._info("0,1,1.0,2,8")
        else:
            self.voice_mode = body.endswith("=8")
        self._final("OK")

    def _vra(self, body: str, line: str) -> None:
        self.vra_ds = int(body.split("=", 1)[1] or 70)
        self._final("OK")

    def _dle(self, code: str) -> None:
        self._write(DLE + code.encode())

    def _dial_analog(self, gen: int) -> None:
        sc = self.scenario
        self.call = "analog"
        self.atd_pending = True
        if sc.reg_stat == 0:  # dead line: no dial tone, after the modem's wait for it
            self._after(gen, sc.pdd_ms, lambda: self._analog_final("NO DIALTONE"))
            return
        self._after(gen, 40, lambda: self._dle("d"))
        if sc.unplug_after_ms is not None:
            self._after(gen, sc.unplug_after_ms, self.unplug)
        if sc.fail == "busy" or sc.fail == "congestion":  # reorder sounds busy to a modem
            self._after(gen, sc.pdd_ms, lambda: self._dle("b"))
            self._after(gen, sc.pdd_ms + 1, self._mark_end)
            self._after(gen, sc.pdd_ms + 200, lambda: self._analog_final("BUSY"))
            return
        if sc.fail == "unassigned":
            self._after(gen, sc.pdd_ms, lambda: self._dle("J"))
            self._after(gen, sc.pdd_ms + 1, self._mark_end)
            self._after(gen, sc.pdd_ms + 300, lambda: self._analog_final("NO CARRIER"))
            return
        on, off = self.cadence_ms
        answer_at = None if sc.ring_ms is None else sc.pdd_ms + sc.ring_ms
        t = sc.pdd_ms
        horizon = 3_600_000 if answer_at is None else answer_at
        first = True
        while t < horizon and t < sc.pdd_ms + 600_000:
            self._after(gen, t, self._mark_alert if first else (lambda: self._dle("r")))
            first = False
            burst_end = t + on
            if answer_at is not None and burst_end >= answer_at:
                break
            self._after(gen, burst_end, lambda: self._dle("q"))
            t += on + off
            if answer_at is None and t > sc.pdd_ms + 120_000:
                break
        if answer_at is not None:
            self._after(gen, answer_at, self._analog_answer)
            self._after(gen, answer_at + self.vra_ds * 100, lambda: self._analog_final("OK"))
            if sc.talk_ms is not None:
                self._after(gen, answer_at + sc.talk_ms, self._analog_drop)

    def _mark_alert(self) -> None:
        self._dle("r")
        self._mark("alerting")

    def _mark_end(self) -> None:
        self._mark("end")

    def _analog_answer(self) -> None:
        self._dle("q")  # the ringback burst is cut: the far end picked up
        self.answered_ns = self.clock()
        self._mark("answer")

    def _analog_final(self, result: str) -> None:
        if not self.atd_pending:
            return
        self.atd_pending = False
        if result != "OK":
            self._end_call()
        self._final(result)

    def _analog_drop(self) -> None:
        """The far end hangs up: the exchange's busy tone follows (DLE b), in or out of a
        sample stream."""
        self._dle("b")
        self._mark("end")

    def _vrx(self, body: str, line: str) -> None:
        if self.call != "analog" or self.answered_ns is None:
            return self._error()
        self.vrx = True
        self._final("CONNECT")
        self.vrx_start_ns = self.clock()
        self.vrx_sent = 0
        self._at(0, self._vrx_tick)
        return None

    def _vrx_tick(self) -> None:
        if not self.vrx:
            return
        if self.scenario.far_audio is None:
            pcm = _tone(160, self._phase(), 1)
        else:  # the line's audio as it happens: sample k is answer + k / 8 kHz
            due = (self.clock() - self.vrx_start_ns) * 8000 // 1_000_000_000
            pcm = self._vrx_samples(self.vrx_sent, max(0, due - self.vrx_sent))
            self.vrx_sent = max(self.vrx_sent, due)
        self._write(pcm.replace(DLE, DLE + DLE))
        self._at(20, self._vrx_tick)

    def _vrx_samples(self, first: int, n: int) -> bytes:
        """``n`` unsigned 8-bit samples (AT+VSM=1) of the far end's audio from the ``first``
        since AT+VRX; what played between the answer and AT+VRX is not heard (as on a modem)."""
        import numpy as np

        assert self.scenario.far_audio is not None and self.answered_ns is not None
        audio = far_samples(self.scenario.far_audio)
        offset = (self.vrx_start_ns - self.answered_ns) // 125_000
        k = offset + np.arange(first, first + n, dtype=np.int64)
        out = np.zeros(n, np.int16)
        inside = k < len(audio)
        out[inside] = audio[k[inside]]
        return ((out.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()

    def _boot_done(self) -> None:
        self.sim_ready_sent = True
        if self.family != "v253":
            self._urc("+CPIN: READY")

    # -- convenience for tests --------------------------------------------------------------
    def with_scenario(self, scenario: Scenario) -> None:
        with self._lock:
            self.scenario = scenario
            self.hung = scenario.unresponsive
            self.boot_until = self.clock() + scenario.boot_ms * 1_000_000
            self.sim = scenario.sim
            self.pin_attempts = 3


def _key(body: str) -> str:
    """The command's name: ``+CREG?`` -> ``+CREG``, ``D+331;`` -> ``D``, ``E0`` -> ``E``."""
    if not body:
        return ""
    if body[0] in "+^$#%":
        end = 1
        while end < len(body) and (body[end].isalnum()):
            end += 1
        return body[:end]
    return body[0]


@functools.cache
def sim_audio() -> tuple[Any, Any]:
    """(ringback, greeting) as int16 arrays at 8 kHz, decoded from the shipped µ-law WAVs.
    The greeting starts at its first audible sample: the callee speaks as it picks up."""
    import numpy as np

    from probe.audio.wavio import read_wav

    ringback = read_wav(AUDIO_DIR / "ringback-425-ulaw.wav").samples
    greeting = read_wav(AUDIO_DIR / "greeting-ulaw.wav").samples
    loud = np.flatnonzero(np.abs(greeting) > GREETING_ONSET)
    greeting = greeting[loud[0]:] if loud.size else greeting
    return ((ringback * 32767).astype(np.int16), (greeting * 32767).astype(np.int16))


@functools.cache
def far_samples(path: Path) -> Any:
    """A far-end WAV as int16 samples at 8 kHz (``Scenario.far_audio``)."""
    import numpy as np

    from probe.audio.wavio import read_wav

    audio = read_wav(path)
    if audio.rate != 8000:
        raise ValueError(f"{path}: far-end audio must be 8 kHz, not {audio.rate} Hz")
    return (audio.samples * 32767).astype(np.int16)


def _tone(n: int, start: int, width: int) -> bytes:
    """``n`` samples of a 440 Hz tone at 8 kHz: s16le (width 2) or unsigned 8-bit (width 1)."""
    out = bytearray()
    for k in range(start, start + n):
        v = math.sin(2 * math.pi * TONE_HZ * k / 8000)
        if width == 2:
            out += int(v * 8000).to_bytes(2, "little", signed=True)
        else:
            out.append(128 + int(v * 60))
    return bytes(out)


def _pty_pair(link: str) -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(os.ttyname(slave), link)
    return master, slave


def scenario(name: str, **changes: Any) -> Scenario:
    """A named scenario with some fields changed: ``scenario("answered", ring_ms=900)``."""
    return replace(SCENARIOS[name], **changes)
