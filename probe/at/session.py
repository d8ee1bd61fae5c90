"""Bringing a modem to a known state, and reading the facts every result carries.

:class:`ModemSession` works on an open :class:`~probe.at.port.AtPort`: it synchronises
(``AT`` until ``OK``: autobaud, boot), turns echo off and numeric errors on, identifies the
modem (``AT+CGMI``, ``AT+CGMM``, ``ATI``) to pick a profile, waits out a busy SIM
(``+CME ERROR: 14``), enters the SIM PIN when asked, and collects registration, operator,
access technology and signal.  IMEI and IMSI are masked here, before they reach any record.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from probe.at import parse
from probe.at.errors import AtError, CmeError, CommandFailed, ModemTimeout
from probe.at.port import AtPort
from probe.at.profiles import PROFILES, Profile, identify
from probe.at.urc import UrcTable
from probe.config.secrets import Secret

log = logging.getLogger("probe.at")

SIM_BUSY = {14, 515}  # "SIM busy", "device busy (please wait)"
SIM_ABSENT = {10, 13}  # "SIM not inserted", "SIM failure"
SEARCHING = 2  # +CREG <stat>: not registered, searching for an operator
REG_POLL_S = 1.0  # registration re-read while waiting (modems without +CREG URCs)


class ModemSession:
    """Initialise a modem and read its facts.  ``model`` is ``"auto"`` or a profile name."""

    def __init__(self, at: AtPort, *, channel: str = "gsm", model: str = "auto",
                 sim_pin: Secret | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 sim_wait_s: float = 20.0, init_extra: dict[str, object] | None = None) -> None:
        self.at = at
        self.channel = channel
        self.model = model
        self.sim_pin = sim_pin
        self.clock = clock
        self.sim_wait_s = sim_wait_s
        self.init_extra = {"vra": 70, **(init_extra or {})}
        self.profile: Profile | None = None
        self.facts: dict[str, Any] = {}
        self.pin_rejected = False  # the SIM refused the configured PIN (never sent again)

    def sync(self, attempts: int = 3, timeout: float = 1.0) -> bool:
        """``AT`` until ``OK``: wakes autobauding modems, proves the firmware answers."""
        for _ in range(attempts):
            try:
                self.at.command("AT", timeout, check=False)
                return True
            except ModemTimeout:
                continue
        return False

    def initialise(self) -> Profile:
        """Echo off, verbose results, numeric errors; identify; call-progress reporting on."""
        at = self.at
        at.command("ATE0", 2.0, check=False)  # the reply may still carry the echo: fine
        at.command("ATV1", 2.0, check=False)
        if self.channel == "gsm":
            at.command("AT+CMEE=1", 2.0, check=False)
        ident = self._identify()
        if self.model == "auto":
            profile = identify(ident, self.channel)
            if self.channel == "analog" and not self._voice_capable():
                raise AtError("the analog modem does not offer voice mode (AT+FCLASS=? has no 8)")
        else:
            profile = PROFILES[self.model]
        self.profile = profile
        at.use(UrcTable.with_extra(dict(profile.urcs)))
        self.facts["profile"] = profile.name
        for command in profile.init:
            command = command.format(**self.init_extra) if "{" in command else command
            response = at.command(command, 3.0, check=False)
            if response.final != "OK":
                log.warning("%s: %s -> %s", profile.name, command, response.final)
                self.facts.setdefault("init_failed", []).append(command)
        if profile.channel == "analog":
            at.use(UrcTable.with_extra(dict(profile.urcs)), dle=True)
        self._hang_up_leftover(profile)
        return profile

    def _hang_up_leftover(self, profile: Profile) -> None:
        """A probe killed mid-call (kill -9, power cut of the Pi alone) leaves the modem in
        the call: end it before anything else, so a new test never starts on a busy modem."""
        for command in profile.hangup:
            try:
                if self.at.command(command, 3.0, check=False).final == "OK":
                    return
            except ModemTimeout:
                continue

    def _identify(self) -> str:
        parts: list[str] = []
        for key, command in (("manufacturer", "AT+CGMI"), ("model", "AT+CGMM"),
                             ("firmware", "AT+CGMR"), ("ati", "ATI")):
            try:
                response = self.at.command(command, 2.0, check=False)
            except ModemTimeout:
                continue
            if response.final == "OK":
                text = " ".join(t.split(":", 1)[-1].strip() if t.startswith("+") else t
                                for t in response.text).strip()
                if key != "ati":
                    self.facts[key] = text or None
                parts.append(text)
        if not self.facts.get("model") and parts:
            self.facts["model"] = parts[-1][:64] or None
        return " ".join(parts)

    def _voice_capable(self) -> bool:
        response = self.at.command("AT+FCLASS=?", 2.0, check=False)
        return any("8" in [x.strip() for x in t.split(":")[-1].split(",")]
                   for t in response.text)

    # -- SIM and radio ---------------------------------------------------------------------
    def sim_state(self) -> str:
        """Wait out a busy SIM, enter the PIN when asked; the final ``+CPIN`` state or
        ``"ABSENT"``.

        The PIN is sent at most once per session: a refused PIN sets :attr:`pin_rejected` and
        is never retried here (three wrong PINs lock the SIM behind its PUK).  The PIN appears
        in no log line, error message or fact (:func:`probe.at.errors.redact`)."""
        deadline = self.clock() + int(self.sim_wait_s * 1e9)
        pin_sent = False
        while True:
            try:
                response = self.at.command("AT+CPIN?", 5.0)
                state = parse.cpin(response.first("+CPIN:")) or "UNKNOWN"
            except CmeError as exc:
                if exc.code in SIM_ABSENT:
                    state = "ABSENT"
                elif exc.code in SIM_BUSY and self.clock() < deadline:
                    self._wait_urc(("cpin", "ready"), 0.5)
                    continue
                else:
                    state = f"ERROR {exc.code}"
            if state == "SIM PIN" and self.sim_pin is not None and not pin_sent \
                    and not self.pin_rejected:
                pin_sent = True
                try:
                    self.at.command(f'AT+CPIN="{self.sim_pin.reveal()}"', 10.0)
                except CommandFailed as exc:
                    # +CME ERROR: 16 "incorrect password"; the PIN itself is never logged
                    log.error("SIM PIN refused (%s): not retried", exc.final)
                    self.pin_rejected = True
                    continue  # read the state it left (SIM PIN, or SIM PUK when locked)
                self._wait_urc(("cpin", "ready"), 2.0)
                continue
            self.facts["sim"] = state
            return state

    def _wait_urc(self, names: tuple[str, ...], timeout_s: float) -> None:
        """Wait for one of the URCs ``names`` (``+CPIN: READY``, ``SMS Ready``, ``+CREG: 1``:
        the modem says when), at most ``timeout_s``: a retry pace, never a stand-in for a
        reply."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                urc = self.at.urcs.get(timeout=left)
            except queue.Empty:
                return
            if urc.name in names:
                return

    def radio_facts(self) -> dict[str, Any]:
        """Registration (CS, PS, EPS), operator and access technology, signal; identities
        masked.  A command the modem lacks leaves its fact ``None``."""
        f = self.facts
        f["imei"] = parse.mask_identity(parse.identity_digits(self._lines("AT+CGSN")))
        f["imsi"] = parse.mask_identity(parse.identity_digits(self._lines("AT+CIMI")))
        self._registration()
        cops = self._first("AT+COPS?", "+COPS:")
        f["operator"], f["access_technology"] = parse.cops(cops) if cops else (None, None)
        csq = self._first("AT+CSQ", "+CSQ:")
        f["signal_dbm"] = parse.csq_dbm(csq) if csq else None
        f["ber"] = parse.csq_ber(csq) if csq else None
        cesq = self._first("AT+CESQ", "+CESQ:")
        f["rsrp_dbm"], f["rsrq_db"] = parse.cesq(cesq) if cesq else (None, None)
        return f

    def _registration(self) -> bool:
        """Read ``+CREG?``, ``+CGREG?``, ``+CEREG?`` into the facts; registered anywhere?"""
        f = self.facts
        reg: dict[str, int | None] = {}
        for key, command in (("cs", "AT+CREG?"), ("ps", "AT+CGREG?"), ("eps", "AT+CEREG?")):
            payload = self._first(command, "+" + command[3:-1] + ":")
            reg[key] = parse.registration(payload) if payload else None
        f["registration"] = reg
        stats = [s for s in reg.values() if s is not None]
        registered = [s for s in stats if s in parse.REGISTERED]
        best = registered[0] if registered else (stats[0] if stats else None)
        f["registration_state"] = parse.REG_STATES.get(best) if best is not None else None
        f["registered"] = bool(registered)
        return f["registered"]

    def wait_registered(self, timeout_s: float) -> dict[str, Any]:
        """:meth:`radio_facts`, after waiting up to ``timeout_s`` while the modem is still
        searching (``<stat>`` 2 in a domain, registered in none: after boot, after a cell
        loss).  ``+CREG: 2`` URCs are switched on so the registration wakes the wait at once;
        the state is also re-read every second (modems that send no URC).  Not registered and
        not searching (0 idle, 3 denied) is final: no wait.  ``registration_wait_ms`` says
        how long it took."""
        f = self.radio_facts()
        started = self.clock()
        waited = False
        while not f["registered"] and SEARCHING in (f["registration"] or {}).values():
            left = (started + int(timeout_s * 1e9) - self.clock()) / 1e9
            if left <= 0:
                break
            if not waited:
                waited = True
                for command in ("AT+CREG=2", "AT+CEREG=2"):
                    self._lines(command)  # URCs on where supported; polling covers the rest
            self._wait_urc(("creg",), min(REG_POLL_S, left))
            self._registration()
        if waited:
            f["registration_wait_ms"] = round((self.clock() - started) / 1e6)
            if f["registered"]:
                self.radio_facts()  # operator and access technology are known now
        return f

    def _lines(self, command: str) -> list[str]:
        try:
            response = self.at.command(command, 3.0, check=False)
        except ModemTimeout:
            return []
        return response.text if response.final == "OK" else []

    def _first(self, command: str, prefix: str) -> str | None:
        try:
            response = self.at.command(command, 3.0, check=False)
        except ModemTimeout:
            return None
        return response.first(prefix) if response.final == "OK" else None
