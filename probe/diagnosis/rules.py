"""Diagnose like a telecom engineer: from every measurement of a target to a verdict, causes and
remedies, in the terms of who has to act.

Input is what the probe measured, as published: the result documents of one target's latest cycle
(one per channel: SIP, GSM, analog), the probe's own facts (line, modems, SIP registration,
broker), and the target's recent history.  Output (:class:`Diagnosis`) is a verdict —

``ok``        every path worked as the target expects
``degraded``  the hotline answers, but not as it should (slow, poor audio, a path down, a queue
              message, a single failure not yet confirmed)
``down``      callers cannot reach a person, confirmed by ``down_after`` of the last
              ``down_window`` cycles (so one glitch is not an outage)
``unknown``   every path was stopped by a fault of the probe's own (cut line, no SIM, no
              network): the hotline's state cannot be told — never "down" for the probe's faults

— and a list of causes, each a stable code (:data:`CAUSES`), the evidence that led to it, the
party who acts and a remedy (translated: :mod:`probe.diagnosis.i18n`).

How it reasons, in three steps:

1. **Per path** (:func:`path_findings`): each result alone — outcome, SIP code, modem cause,
   tones, prompts, speech, quality, timings against the target's expectations.
2. **Probe facts** (:func:`probe_findings`): line voltage, modem registration and signal, SIP
   registration, broker reachability — faults of the branch office, scoped to the probe.
3. **Across paths** (:func:`diagnose`): a path blocked by a probe fault does not count against
   the hotline; a failure seen on one path while another path answers points at that path
   (its carrier or trunk), not at the hotline; paths that disagree on the hotline itself (one
   says "number unknown", another is answered) are reported as conflicting rather than guessed.

Everything here is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from probe.diagnosis.i18n import translator


class Verdict(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


class Actor(StrEnum):
    BRANCH = "branch_office"  # the office's own line, modem, router
    CARRIER = "carrier"  # the telephone carrier / SIP trunk provider
    HOTLINE_IT = "hotline_it"  # the PBX, IVR or media server
    CONTACT_CENTRE = "contact_centre"  # staffing and overload: the managers
    NETWORK = "network"  # voice quality: codec, network path
    ADMIN = "admin"  # configuration of the dial plan, accounts, prompts, the probe


class Scope(StrEnum):
    HOTLINE = "hotline"  # says something about the hotline
    PATH = "path"  # about one way of reaching it (a carrier, a trunk)
    PROBE = "probe"  # about the probe's own equipment: never the hotline's fault
    META = "meta"  # about the diagnosis itself


@dataclass(frozen=True)
class CauseSpec:
    category: str
    actor: Actor
    scope: Scope
    severity: Verdict  # DOWN or DEGRADED (for the hotline); probe faults carry DOWN too
    summary: str  # English msgid, {placeholders} filled from the evidence
    remedy: str


# The stable cause codes.  Their English texts are gettext msgids (translations in
# probe/locale/<lang>/LC_MESSAGES/probe.po); docs/causes.md and the result schema list them.
CAUSES: dict[str, CauseSpec] = {
    # -- local line and equipment (the branch office) -----------------------------------------
    "line.no_voltage": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The office's analog line has no voltage: cut, unplugged or disconnected at the exchange.",
        "Check the line cable and wall socket at the office; if they are fine, report a line "
        "fault to the line provider."),
    "line.low_voltage": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DEGRADED,
        "The office's analog line voltage is low ({dc_volts} V on hook).",
        "Check for a parallel phone off hook or a damaged cable; report a line fault if it "
        "persists."),
    "line.no_dial_tone": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "No dial tone on the office's analog line.",
        "Check the line and socket; report the line to the line provider."),
    "line.in_use": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DEGRADED,
        "The analog line was in use by a person: the test call was deferred.",
        "No action: the probe calls again when the line is free."),
    "probe.board_fault": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The probe's line interface board does not answer as it should.",
        "Check the probe board's power and its connection to the Pi; replace the board if "
        "it persists."),
    "modem.unresponsive": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The {channel} modem does not answer (even after a reopen and a power cycle).",
        "Check the modem's USB cable and power; restart the probe; replace the modem if it "
        "persists."),
    "modem.port_missing": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The {channel} modem's port {port} does not exist (modems.{channel}.port).",
        "Check the modem's USB cable, the udev rule that gives it a stable name under "
        "/dev/serial/by-id, and the path in modems.{channel}.port."),
    "modem.not_registered": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The {channel} modem is not registered on the mobile network ({registration}).",
        "Check the antenna and the SIM's subscription; move the antenna where coverage is "
        "better."),
    "modem.no_sim": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The {channel} modem has no usable SIM ({sim}).",
        "Insert or reseat the SIM; check its PIN in the probe's configuration."),
    "modem.weak_signal": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DEGRADED,
        "Weak mobile signal at the office ({signal_dbm} dBm).",
        "Move the antenna or fit an external one; calls may fail or sound poor."),
    "modem.error": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The {channel} modem failed the call itself ({error}).",
        "Restart the probe; check the modem's firmware and power."),
    "probe.error": CauseSpec(
        "local", Actor.ADMIN, Scope.PROBE, Verdict.DOWN,
        "The probe could not place the {channel} call ({reason}).",
        "Check the probe's logs and configuration."),
    "network.broker_unreachable": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DEGRADED,
        "The probe cannot reach the central broker: results wait in its outbox.",
        "Check the office's internet access and router; results are delivered when it is "
        "back."),
    "network.sip_unreachable": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "Nothing answers the probe's SIP calls while the office network is also down.",
        "Check the office router and internet access."),
    "sip.not_registered": CauseSpec(
        "configuration", Actor.ADMIN, Scope.PROBE, Verdict.DOWN,
        "The probe's SIP account is not registered ({code} {reason}).",
        "Check the SIP account, its password and the registrar address in the probe's "
        "configuration."),
    # -- carrier / provider ---------------------------------------------------------------------
    "carrier.congestion": CauseSpec(
        "carrier", Actor.CARRIER, Scope.PATH, Verdict.DOWN,
        "The {channel} network refuses the call as congested ({evidence}).",
        "Raise a ticket with the carrier; route calls over another carrier if the contract "
        "allows."),
    "carrier.sip_trunk": CauseSpec(
        "carrier", Actor.CARRIER, Scope.PATH, Verdict.DOWN,
        "The SIP trunk fails ({code} {reason}) while other paths reach the hotline.",
        "Raise a ticket with the SIP trunk provider; switch to the backup trunk."),
    "carrier.path_failure": CauseSpec(
        "carrier", Actor.CARRIER, Scope.PATH, Verdict.DOWN,
        "Calls over {channel} fail ({outcome}) while other paths reach the hotline.",
        "Raise a ticket with the {channel} carrier, quoting the cause and the time."),
    "carrier.reorder": CauseSpec(
        "carrier", Actor.CARRIER, Scope.PATH, Verdict.DOWN,
        "The {channel} network could not complete the call: switching blocked or digits "
        "lost on the way ({evidence}).",
        "Raise a ticket with the {channel} carrier quoting the number, the time and the "
        "special information tone; check the number's format in the probe's target."),
    "carrier.slow_setup": CauseSpec(
        "carrier", Actor.CARRIER, Scope.PATH, Verdict.DEGRADED,
        "Call set-up is slow: {measured} ms from dialling to ringing (limit {limit} ms).",
        "Raise a ticket with the carrier about post-dial delay on this route."),
    # -- hotline server / PBX -----------------------------------------------------------------
    "hotline.server_error": CauseSpec(
        "server", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DOWN,
        "The hotline's server refuses calls with an error ({code} {reason}).",
        "IT: check the PBX / IVR server and its logs."),
    "hotline.unavailable": CauseSpec(
        "server", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DOWN,
        "The hotline's destination is unavailable ({code} {reason}).",
        "IT: check that the hotline's queue or extension is registered and in service."),
    "hotline.no_media": CauseSpec(
        "server", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DOWN,
        "The hotline answers but sends no audio.",
        "IT: check the media server / IVR and the firewall's RTP ports."),
    "hotline.dead_air": CauseSpec(
        "server", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DOWN,
        "The hotline answers with silence: no greeting, nobody speaking.",
        "IT: check the IVR and its prompts; check the agents' phones."),
    "hotline.busy": CauseSpec(
        "overload", Actor.CONTACT_CENTRE, Scope.HOTLINE, Verdict.DOWN,
        "The hotline is busy: callers get a busy signal.",
        "Add operators or lines; enable overflow routing or a queue."),
    "hotline.no_answer": CauseSpec(
        "overload", Actor.CONTACT_CENTRE, Scope.HOTLINE, Verdict.DOWN,
        "The hotline rings without answer (over {limit_s} s).",
        "Check that operators are logged in and staffing matches the schedule; add an IVR "
        "or voicemail fallback."),
    "hotline.queue_full_prompt": CauseSpec(
        "overload", Actor.CONTACT_CENTRE, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline answers with its \"all operators are busy\" message ({prompt}).",
        "Add operators at this hour; offer call-back or self-service in the IVR."),
    "hotline.closed_prompt": CauseSpec(
        "overload", Actor.CONTACT_CENTRE, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline answers with its \"we are closed\" message ({prompt}).",
        "Check the opening-hours schedule of the IVR against the published hours."),
    "hotline.slow_answer": CauseSpec(
        "overload", Actor.CONTACT_CENTRE, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline answers slowly: {measured} ms of ringing (limit {limit} ms).",
        "Add operators at this hour or answer with an IVR first."),
    # -- service quality ------------------------------------------------------------------------
    "quality.low_mos": CauseSpec(
        "quality", Actor.NETWORK, Scope.PATH, Verdict.DEGRADED,
        "Poor audio quality: MOS {mos} ({method}).",
        "Check the network path for loss and jitter, and the codec in use."),
    "quality.packet_loss": CauseSpec(
        "quality", Actor.NETWORK, Scope.PATH, Verdict.DEGRADED,
        "Audio packets are lost: {loss_percent} % of RTP.",
        "Check the network path between the office and the SIP provider (bandwidth, QoS)."),
    "quality.high_jitter": CauseSpec(
        "quality", Actor.NETWORK, Scope.PATH, Verdict.DEGRADED,
        "Audio arrives unevenly: jitter {jitter_ms} ms.",
        "Check the network path for congestion; enable QoS for voice."),
    "quality.one_way_audio": CauseSpec(
        "quality", Actor.NETWORK, Scope.PATH, Verdict.DOWN,
        "One-way audio: the call is answered but no sound comes back.",
        "Check NAT and firewall rules for RTP, and the codec negotiation."),
    "quality.clipping": CauseSpec(
        "quality", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline's audio is clipped (too loud: {clipping_percent} % of samples).",
        "Lower the level of the prompts or the gain of the media server."),
    "quality.low_level": CauseSpec(
        "quality", Actor.HOTLINE_IT, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline's audio is very quiet ({rms_dbfs} dBFS).",
        "Raise the level of the prompts or the gain of the media server."),
    # -- configuration --------------------------------------------------------------------------
    "config.auth_failed": CauseSpec(
        "configuration", Actor.ADMIN, Scope.PATH, Verdict.DOWN,
        "The SIP server rejects the probe's credentials ({code} {reason}).",
        "Check the SIP username and password in the probe's configuration and on the server."),
    "config.number_not_found": CauseSpec(
        "configuration", Actor.ADMIN, Scope.HOTLINE, Verdict.DOWN,
        "The network says the hotline's number does not exist ({evidence}).",
        "Check the dial plan and the number routing for the hotline; check the number "
        "configured in the probe."),
    "config.number_changed": CauseSpec(
        "configuration", Actor.ADMIN, Scope.HOTLINE, Verdict.DOWN,
        "The network intercepts the call: the hotline's number has changed or is "
        "disconnected ({evidence}).",
        "Listen to the announcement in the recording for the new number; update the "
        "published number and the probe's target; ask the carrier if the number should "
        "still be in service."),
    "config.number_intercepted": CauseSpec(
        "configuration", Actor.ADMIN, Scope.HOTLINE, Verdict.DOWN,
        "The network answers with a special information tone and an announcement instead "
        "of the hotline ({evidence}).",
        "Listen to the announcement in the recording (number changed or not in service, "
        "line out of order); check the hotline's number with its carrier and the dial plan."),
    "config.dialling_refused": CauseSpec(
        "configuration", Actor.ADMIN, Scope.PATH, Verdict.DOWN,
        "The {channel} network cannot complete the call as dialled: a dialling error, a "
        "barring on the office's line or another refusal ({evidence}).",
        "Check the number's format and prefix in the probe's target and the call barring "
        "of the office's line; the announcement in the recording says which."),
    "config.rejected": CauseSpec(
        "configuration", Actor.ADMIN, Scope.HOTLINE, Verdict.DOWN,
        "Calls to the hotline are refused ({evidence}).",
        "Check the PBX's call-admission rules, blacklists and the dial plan."),
    "config.unexpected_greeting": CauseSpec(
        "configuration", Actor.ADMIN, Scope.HOTLINE, Verdict.DEGRADED,
        "The hotline answers with a greeting that matches none of the known prompts.",
        "Check whether the IVR's prompts were changed on purpose; record the new greeting "
        "as a reference."),
    # -- about the diagnosis --------------------------------------------------------------------
    "diagnosis.transient": CauseSpec(
        "meta", Actor.ADMIN, Scope.META, Verdict.DEGRADED,
        "A single failure, not yet confirmed ({failed} of the last {window} cycles).",
        "No action yet: the probe reports an outage if it repeats."),
    "diagnosis.conflicting_evidence": CauseSpec(
        "meta", Actor.ADMIN, Scope.META, Verdict.DEGRADED,
        "The paths disagree: {detail}.",
        "Compare the paths by hand: a routing difference between carriers is likely."),
}

CAUSE_CODES = tuple(CAUSES)

# Modem / Q.850 causes (3GPP TS 24.008 annex H) → cause code.
Q850 = {
    1: "config.number_not_found", 3: "config.number_not_found", 22: "config.number_not_found",
    28: "config.number_not_found",
    17: "hotline.busy", 18: "hotline.no_answer", 19: "hotline.no_answer",
    21: "config.rejected", 27: "hotline.server_error",
    34: "carrier.congestion", 38: "carrier.congestion", 41: "carrier.congestion",
    42: "carrier.congestion", 44: "carrier.congestion", 47: "carrier.congestion",
}
# Special information tone -> cause code, for every code probe/audio/sit.py names.  The North
# American codes follow the categories of Telcordia GR-1162 / ANSI T1.209: IC "customer
# irregularity" (number changed, disconnected, non-working station), VC "vacant code" (the
# number or prefix is not assigned), RO' / RO'' "equipment irregularity" (reorder: blocked
# switching, no wink, partial digits; intra- and inter-LATA), NC' / NC'' "trunk blockage" (no
# circuit, network management controls: try again later), IO "ineffective other" (misdialled,
# restricted, other failure).  An ITU-T Q.35 tone (or the code reserved for future use) only
# says that the call cannot be completed for a reason other than busy or congestion: the
# announcement that follows names it.
SIT_CAUSES: dict[str, str] = {
    "IC": "config.number_changed", "VC": "config.number_not_found",
    "RO'": "carrier.reorder", "RO''": "carrier.reorder",
    "NC'": "carrier.congestion", "NC''": "carrier.congestion",
    "IO": "config.dialling_refused", "FU": "config.number_intercepted",
    "ITU": "config.number_intercepted", "SIT": "config.number_intercepted",
}


@dataclass(frozen=True)
class Thresholds:
    """Per-target thresholds (``[targets.diagnose]``), with defaults an ops team can live with."""

    min_mos: float = 3.5
    max_loss_percent: float = 2.0
    max_jitter_ms: float = 40.0
    weak_signal_dbm: float = -100.0
    slow_answer_ms: int | None = None  # None: half of the ring limit
    min_level_dbfs: float = -40.0
    max_clipping_percent: float = 1.0
    down_after: int = 2  # failures needed ...
    down_window: int = 3  # ... among this many latest cycles before "down"
    queue_prompts: tuple[str, ...] = ("all-operators-busy", "queue-full", "busy")
    closed_prompts: tuple[str, ...] = ("closed", "we-are-closed", "after-hours")


@dataclass(frozen=True)
class Finding:
    code: str
    channel: str | None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> CauseSpec:
        return CAUSES[self.code]


@dataclass(frozen=True)
class ProbeFacts:
    """The probe's own state when the cycle ran."""

    line: dict[str, Any] | None = None  # probe.board.line snapshot
    broker_reachable: bool | None = None
    sip_registration: dict[str, Any] | None = None  # {"code", "reason"} when a registrar is set
    modems: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel -> health
    board_fault: str | None = None  # why the board's line cannot be read (probe/board/pins.py)


@dataclass
class Diagnosis:
    verdict: Verdict
    causes: list[dict[str, Any]]
    summary: str
    remedy: str | None
    probe_ok: bool
    history: dict[str, int]
    channels: dict[str, str]  # channel -> outcome considered

    def as_json(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "causes": self.causes, "summary": self.summary,
                "remedy": self.remedy, "probe_ok": self.probe_ok, "history": self.history,
                "channels": self.channels}


# ---------------------------------------------------------------- step 1: each path on its own

class _Findings(list[Finding]):
    """The findings of one path; ``add(code, **evidence)`` stamps them with the channel."""

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel = channel

    def add(self, cause: str, /, **evidence: Any) -> None:
        self.append(Finding(cause, self.channel, {"channel": self.channel, **evidence}))


def path_findings(doc: dict[str, Any], limits: dict[str, Any], th: Thresholds) -> list[Finding]:
    """What one result says, before any cross-path reasoning.  ``limits``: the target's
    expectations (max_post_dial_delay_ms, max_ring_s)."""
    channel = doc["channel"]
    outcome = doc["outcome"]
    sip = doc.get("sip") or {}
    modem = doc.get("modem") or {}
    analysis = doc.get("analysis") or {}
    found = _Findings(channel)
    add = found.add

    code, reason = sip.get("final_code"), sip.get("final_reason")
    cause = modem.get("cause")
    sit = _sit(analysis)
    heard = {t["kind"] for t in analysis.get("tones") or []}

    if outcome == "answered" and sit is not None:
        # "Answered" by the network's announcement machine, not by the hotline: the tone says
        # why the call failed; prompt and greeting findings would be about the announcement.
        add(SIT_CAUSES.get(sit, "config.number_intercepted"),
            evidence=_evidence(code, reason, cause, sit), code=code, sit=sit)
        found += [f for f in _answered_findings(doc, analysis, limits, th)
                  if f.code not in ANNOUNCEMENT_NOISE]
    elif outcome == "answered":
        found += _answered_findings(doc, analysis, limits, th)
    elif outcome == "busy":
        if "congestion" in heard:
            add("carrier.congestion", evidence="congestion tone", outcome=outcome)
        else:
            add("hotline.busy", code=code, cause=cause)
    elif outcome == "no_answer":
        add("hotline.no_answer", limit_s=limits.get("max_ring_s"), code=code)
    elif outcome in ("congestion", "unassigned_number") and sit is not None:
        # the outcome came from the tone (the modem said only NO CARRIER): its code is precise
        add(SIT_CAUSES.get(sit, "config.number_intercepted"),
            evidence=_evidence(code, reason, cause, sit), code=code, sit=sit)
    elif outcome == "congestion":
        add("carrier.congestion", evidence=_evidence(code, reason, cause, sit), code=code,
            reason=reason)
    elif outcome in ("server_error",):
        add("hotline.server_error", code=code, reason=reason)
    elif outcome == "unavailable":
        add("hotline.unavailable", code=code, reason=reason)
    elif outcome in ("not_found", "unassigned_number"):
        add("config.number_not_found", evidence=_evidence(code, reason, cause, sit), code=code)
    elif outcome == "rejected":
        mapped = Q850.get(cause) if cause is not None else None
        if mapped and mapped != "config.rejected":
            add(mapped, evidence=_evidence(code, reason, cause, sit), code=code, reason=reason,
                limit_s=limits.get("max_ring_s"))
        else:
            add("config.rejected", evidence=_evidence(code, reason, cause, sit), code=code)
    elif outcome == "auth_failed":
        add("config.auth_failed", code=code, reason=reason)
    elif outcome == "unreachable":
        add("carrier.path_failure", outcome=outcome)
    elif outcome == "no_dial_tone":
        add("line.no_dial_tone")
    elif outcome == "no_carrier":
        mapped = Q850.get(cause) if cause is not None else None
        if sit is not None:  # the announcement's tone is more precise than the clearing
            mapped = SIT_CAUSES.get(sit, "config.number_intercepted")
        if mapped:
            add(mapped, evidence=_evidence(code, reason, cause, sit), code=code, reason=reason,
                limit_s=limits.get("max_ring_s"))
        else:
            add("carrier.path_failure", outcome=outcome, cause=cause)
    elif outcome == "not_registered":
        add("modem.not_registered", registration=modem.get("registration_state"))
    elif outcome == "no_sim":
        add("modem.no_sim", sim=modem.get("sim"))
    elif outcome == "modem_error":
        error = modem.get("error") or "error"
        if error == "modem.port_missing":  # not the modem's fault: nothing at that path
            add("modem.port_missing", port=modem.get("port"))
        else:
            add("modem.unresponsive" if "respon" in error else "modem.error", error=error)
    elif outcome == "failed":
        add("probe.error", reason=sip.get("final_reason") or modem.get("error"))
    # "aborted": the probe stopped its own call (shutdown): no finding at all.
    return found


def _answered_findings(doc: dict[str, Any], analysis: dict[str, Any], limits: dict[str, Any],
                       th: Thresholds) -> list[Finding]:
    channel = doc["channel"]
    found = _Findings(channel)
    add = found.add

    rtp = doc.get("rtp")
    timings = doc.get("timings_ms") or {}
    if channel == "sip" and rtp is not None and rtp.get("packets_received") == 0:
        add("hotline.no_media")
    elif analysis.get("one_way_audio"):
        add("quality.one_way_audio")
    elif analysis.get("dead_air"):
        add("hotline.dead_air")
    prompts = analysis.get("prompts") or {}
    names = [m["name"] for m in prompts.get("matched") or []]
    queue = [n for n in names if n in th.queue_prompts]
    closed = [n for n in names if n in th.closed_prompts]
    if queue:
        add("hotline.queue_full_prompt", prompt=queue[0])
    elif closed:
        add("hotline.closed_prompt", prompt=closed[0])
    if prompts.get("unknown_greeting") or prompts.get("unexpected"):
        add("config.unexpected_greeting", greeting=prompts.get("greeting"), matched=names)
    quality = analysis.get("quality") or {}
    for method_key in ("full_reference", "emodel"):
        score = quality.get(method_key) or {}
        mos = score.get("mos")
        if mos is not None and mos < th.min_mos:
            add("quality.low_mos", mos=round(mos, 2), method=score.get("method"))
            break
    if rtp:
        received, lost = rtp.get("packets_received") or 0, rtp.get("packets_lost") or 0
        if received + lost and 100 * lost / (received + lost) > th.max_loss_percent:
            add("quality.packet_loss", loss_percent=round(100 * lost / (received + lost), 2))
        if (rtp.get("jitter_mean_ms") or 0) > th.max_jitter_ms:
            add("quality.high_jitter", jitter_ms=rtp["jitter_mean_ms"])
    level = analysis.get("level") or {}
    if level.get("clipped") and 100 * (level.get("clipping_ratio") or 0) > \
            th.max_clipping_percent:
        add("quality.clipping", clipping_percent=round(100 * level["clipping_ratio"], 2))
    rms = level.get("rms_dbfs")
    speech = (analysis.get("speech") or {}).get("present")
    if rms is not None and speech and rms < th.min_level_dbfs:
        add("quality.low_level", rms_dbfs=round(rms, 1))
    pdd, pdd_limit = timings.get("post_dial_delay"), limits.get("max_post_dial_delay_ms")
    if pdd is not None and pdd_limit is not None and pdd > pdd_limit:
        add("carrier.slow_setup", measured=pdd, limit=pdd_limit)
    ring = timings.get("ring_duration")
    slow = th.slow_answer_ms
    if slow is None and limits.get("max_ring_s") is not None:
        slow = round(limits["max_ring_s"] * 500)
    if ring is not None and slow is not None and ring > slow:
        add("hotline.slow_answer", measured=ring, limit=slow)
    return found


#: What an answered call's recording says about the hotline's own audio: meaningless when the
#: network's intercept announcement played instead.
ANNOUNCEMENT_NOISE = {"hotline.queue_full_prompt", "hotline.closed_prompt",
                      "config.unexpected_greeting", "hotline.dead_air", "quality.low_level",
                      "hotline.slow_answer"}


def _sit(analysis: dict[str, Any]) -> str | None:
    for tone in analysis.get("tones") or []:
        if tone.get("kind") == "sit":
            return tone.get("sit_code") or "SIT"
    return None


def _evidence(code: Any, reason: Any, cause: Any, sit: str | None) -> str:
    parts = []
    if code:
        parts.append(f"SIP {code} {reason or ''}".strip())
    if cause is not None:
        parts.append(f"cause {cause}")
    if sit:
        parts.append(f"SIT {sit}")
    return ", ".join(parts) or "no cause given"


# ---------------------------------------------------------------- step 2: the probe's own state

def probe_findings(facts: ProbeFacts, channels: Iterable[str], th: Thresholds
                   ) -> list[Finding]:
    found: list[Finding] = []
    line = facts.line or {}
    state = line.get("state")
    if facts.board_fault is not None:  # the line cannot be read: its readings mean nothing
        found.append(Finding("probe.board_fault", "analog", {"reason": facts.board_fault}))
    elif "analog" in channels or line:
        if state == "no_voltage":
            found.append(Finding("line.no_voltage", "analog", {"dc_volts": line.get("dc_volts")}))
        elif state == "low_voltage":
            found.append(Finding("line.low_voltage", "analog", {"dc_volts": line.get("dc_volts")}))
        elif state == "interface_fault":
            found.append(Finding("probe.board_fault", "analog", {}))
    for channel, modem in facts.modems.items():
        signal = modem.get("signal_dbm")
        if signal is not None and signal < th.weak_signal_dbm:
            found.append(Finding("modem.weak_signal", channel, {"signal_dbm": signal,
                                                                "channel": channel}))
    reg = facts.sip_registration
    if reg is not None and reg.get("code") not in (200, None):
        found.append(Finding("sip.not_registered", "sip", dict(reg)))
    if facts.broker_reachable is False:
        found.append(Finding("network.broker_unreachable", None, {}))
    return found


# ---------------------------------------------------------------- step 3: across paths

#: Probe-scoped findings that mean the path could not test the hotline at all.
BLOCKING = {"line.no_voltage", "line.no_dial_tone", "probe.board_fault", "modem.unresponsive",
            "modem.port_missing", "modem.not_registered", "modem.no_sim", "modem.error",
            "probe.error", "sip.not_registered", "network.sip_unreachable", "line.in_use"}
LINE_BLOCKS = {"line.no_voltage", "probe.board_fault"}


def diagnose(results: Sequence[dict[str, Any]], facts: ProbeFacts, limits: dict[str, Any],
             th: Thresholds = Thresholds(), history: Sequence[bool] = (),
             language: str = "en") -> Diagnosis:
    """The verdict on one target from its latest cycle (one result per channel).

    ``history``: for the previous cycles of this target, oldest first, whether the hotline
    failed (True) — the N-of-M rule decides between a transient failure and an outage.
    """
    _ = translator(language)
    results = [r for r in results if r["outcome"] != "aborted"]
    channels = [r["channel"] for r in results]
    per_path = {r["channel"]: path_findings(r, limits, th) for r in results}
    own = probe_findings(facts, channels, th)
    findings: list[Finding] = [*own]

    # A path is blocked when the probe's own equipment stopped it from testing the hotline.
    blocked: set[str] = set()
    for channel, items in per_path.items():
        if any(f.code in BLOCKING for f in items):
            blocked.add(channel)
    if "analog" in per_path and any(f.code in LINE_BLOCKS for f in own):
        blocked.add("analog")
        per_path["analog"] = [f for f in per_path["analog"] if f.code in BLOCKING]
    if facts.broker_reachable is False and _outcome_of(results, "sip") == "unreachable":
        # The office network is down: SIP's silence is the office's, not the carrier's.
        blocked.add("sip")
        per_path["sip"] = [Finding("network.sip_unreachable", "sip", {})
                           if f.code == "carrier.path_failure" else f
                           for f in per_path["sip"]]

    testing = [c for c in per_path if c not in blocked]
    # Paths that reached the hotline: answered, and not by an intercept announcement (SIT).
    answered = [c for c in testing if _outcome_of(results, c) == "answered"
                and not any(f.evidence.get("sit") for f in per_path[c])]
    failing = [c for c in testing if _all_failed(per_path[c])]

    for channel, items in per_path.items():
        for f in items:
            if channel in blocked or f.code in BLOCKING:
                findings.append(f)
            elif f.spec.scope == Scope.HOTLINE and f.spec.severity == Verdict.DOWN and answered:
                # One path fails at the hotline while another is answered: the paths disagree
                # (a routing difference), or the failure belongs to that path's carrier.
                if f.code in ("config.number_not_found", "config.rejected",
                              "config.number_changed", "config.number_intercepted"):
                    findings.append(Finding("diagnosis.conflicting_evidence", channel, {
                        "detail": f"{channel} says {f.code}, {', '.join(answered)} answered",
                        "path": f.code}))
                    findings.append(f)
                elif f.code in ("hotline.server_error", "hotline.unavailable"):
                    code = "carrier.sip_trunk" if channel == "sip" else "carrier.path_failure"
                    outcome = _outcome_of(results, channel)
                    findings.append(Finding(code, channel, {**f.evidence, "outcome": outcome}))
                else:
                    findings.append(f)
            elif f.code == "carrier.congestion" and channel == "sip" and answered:
                findings.append(Finding("carrier.sip_trunk", channel, f.evidence))
            else:
                findings.append(f)

    failed_now = bool(testing) and len(failing) == len(testing)
    window = [*history, failed_now][-th.down_window:]
    failures = sum(window)
    if not testing:
        verdict = Verdict.UNKNOWN
    elif failed_now and failures >= th.down_after:
        verdict = Verdict.DOWN
    elif failed_now:
        verdict = Verdict.DEGRADED
        findings.append(Finding("diagnosis.transient", None,
                                {"failed": failures, "window": len(window)}))
    elif failing or any(f.spec.scope in (Scope.HOTLINE, Scope.PATH) for f in findings
                        if f.channel in testing):
        verdict = Verdict.DEGRADED  # a path down, or the hotline answers but not as it should
    else:
        verdict = Verdict.OK

    causes = _render(_dedupe(findings), _)
    probe_ok = not any(CAUSES[f.code].scope == Scope.PROBE for f in findings)
    top = _top_cause(causes, verdict)
    if top is not None:
        summary, remedy = top["summary"], top["remedy"]
    elif verdict == Verdict.OK:
        summary, remedy = _("The hotline works on every path tested."), None
    else:
        summary, remedy = _("The hotline's state cannot be told: no path could test it."), None
    return Diagnosis(verdict, causes, summary, remedy, probe_ok,
                     {"failed": failures, "window": len(window)},
                     {r["channel"]: r["outcome"] for r in results})


def _outcome_of(results: Sequence[dict[str, Any]], channel: str) -> str | None:
    return next((r["outcome"] for r in results if r["channel"] == channel), None)


def _all_failed(items: list[Finding]) -> bool:
    """A path failed when one of its findings means the caller did not reach the hotline."""
    return any(f.spec.severity == Verdict.DOWN and f.spec.scope in (Scope.HOTLINE, Scope.PATH)
               for f in items)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    merged: dict[str, Finding] = {}
    for f in findings:
        if f.code in merged:
            first = merged[f.code]
            channels = sorted({*first.evidence.get("channels", [first.channel]), f.channel},
                              key=str)
            merged[f.code] = Finding(f.code, first.channel, {**first.evidence,
                                                             "channels": channels})
        else:
            merged[f.code] = f
    return list(merged.values())


def _render(findings: list[Finding], _: Any) -> list[dict[str, Any]]:
    causes = []
    for f in findings:
        spec = f.spec
        evidence = {k: v for k, v in f.evidence.items() if v is not None}
        causes.append({
            "code": f.code,
            "category": spec.category,
            "actor": str(spec.actor),
            "scope": str(spec.scope),
            "severity": str(spec.severity),
            "channels": [c for c in evidence.pop("channels", [f.channel]) if c],
            "evidence": evidence,
            "summary": _format(_(spec.summary), f.evidence),
            "remedy": _format(_(spec.remedy), f.evidence),
        })
    order = {Scope.HOTLINE: 0, Scope.PATH: 1, Scope.PROBE: 2, Scope.META: 3}
    causes.sort(key=lambda c: (c["severity"] != "down", order[Scope(str(c["scope"]))]))
    return causes


def _top_cause(causes: list[dict[str, Any]], verdict: Verdict) -> dict[str, Any] | None:
    if not causes:
        return None
    if verdict == Verdict.UNKNOWN:
        probe = [c for c in causes if c["scope"] == "probe"]
        return probe[0] if probe else causes[0]
    return causes[0]


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _format(text: str, evidence: dict[str, Any]) -> str:
    values = _Blank({k: ("?" if v is None else v) for k, v in evidence.items()})
    return text.format_map(values)


def causes_markdown() -> str:
    """docs/causes.md: the table of cause codes.

    ``python -m probe.diagnosis.rules > docs/causes.md`` rebuilds it."""
    rows = ["# Diagnosis cause codes", "",
            "Generated from `probe/diagnosis/rules.py` "
            "(`python -m probe.diagnosis.rules > docs/causes.md`). "
            "Codes are stable; summaries and remedies are translated (`[probe] language`).", "",
            "Scope `probe` means the probe's own equipment: such a cause never makes the "
            "hotline `down` (its verdict is then `unknown` when no path could test it).", "",
            "| code | category | who acts | scope | severity | summary | remedy |",
            "|---|---|---|---|---|---|---|"]
    for code, spec in CAUSES.items():
        rows.append(f"| `{code}` | {spec.category} | {spec.actor} | {spec.scope} | "
                    f"{spec.severity} | {spec.summary} | {spec.remedy} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(causes_markdown(), end="")
