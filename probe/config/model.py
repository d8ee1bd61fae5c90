"""The probe's configuration: one TOML file -> frozen, validated objects.

:func:`load_config` reads the file, :func:`parse_config` validates an already-parsed dict.  Both
return a :class:`Config` or raise :class:`~probe.errors.ConfigError` listing *every* problem at
once, each as ``(key path, reason)``::

    probe.id: must be 1-64 characters: ..., got "branch/17"
    targets[1].expect.max_ring_s: must be a number greater than 0 and at most 600 (seconds), \
got 900 (target "sales")

Unknown keys are errors at every level, so a typo never silently falls back to a default.
The annotated reference is ``examples/probe.toml``; the minimal file is::

    [probe]
    id = "branch-017"
    site = "Lyon Part-Dieu"

    [[targets]]
    name = "support"
    number = "+33123456789"
    channels = ["gsm"]
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.config.secrets import Secret, describe_type, resolve_secret, secret_keys
from probe.diagnosis.i18n import LANGUAGES
from probe.diagnosis.rules import Thresholds
from probe.errors import ConfigError

__all__ = [
    "CHANNELS",
    "Config",
    "ConfigError",
    "Expectations",
    "IndicatorConfig",
    "LineConfig",
    "ModemConfig",
    "MqttConfig",
    "ProbeIdentity",
    "Secret",
    "SipAccount",
    "Target",
    "load_config",
    "parse_config",
    "sip_uri_problem",
]

CHANNELS = ("sip", "gsm", "analog")
TRANSPORTS = ("udp", "tcp")
DEFAULT_STATE_DIR = Path("/var/lib/hotline-probe")

Problem = tuple[str, str]


# --------------------------------------------------------------------------- the objects


@dataclass(frozen=True)
class ProbeIdentity:
    id: str
    site: str
    state_dir: Path = DEFAULT_STATE_DIR
    # Each scheduled call starts up to this much late (and at most 10 % of its interval), so a
    # fleet of probes does not call the hotline in lock step.  0 = exactly on the grid.
    max_jitter_s: float = 60.0
    language: str = "en"  # diagnosis summaries and remedies: "en" or "ru" (gettext catalogs)
    # The daemon's local control socket (probe/daemon/control.py): None = <state_dir>/control.sock
    control_socket: Path | None = None

    @property
    def control_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"


@dataclass(frozen=True)
class MqttTls:
    ca_file: Path  # the CA that signed the broker's certificate
    cert_file: Path  # this probe's client certificate (CN = probe id)
    key_file: Path  # its private key (keep it 0600)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = 1883
    keepalive_s: int = 30
    username: str | None = None
    password: Secret | None = None
    session_expiry_s: int = 86400
    tls: MqttTls | None = None  # [mqtt.tls]: always verified; there is no "insecure" switch
    outbox_max_results: int = 10_000
    outbox_max_mib: int = 50
    drain_rate_per_s: float = 20.0
    recording_max_kib: int = 1024  # a failed call's recording, to ops; 0: none (probe/recording)


@dataclass(frozen=True)
class SipAccount:
    transport: str = "udp"  # "udp" | "tcp"
    local_address: str = "0.0.0.0"  # IPv4/IPv6 literal address to bind
    local_port: int = 5060  # 0 = any free port
    rtp_port: int = 4000  # first RTP port; 0 = any; 1024..65534 otherwise
    identity: str | None = None  # SIP URI put in From, e.g. "sip:probe-17@pbx.example.com"
    registrar: str | None = None  # SIP URI of the registrar; None = no registration
    username: str | None = None  # digest auth user
    realm: str = "*"
    password: Secret | None = None
    register_timeout_s: float = 10.0


@dataclass(frozen=True)
class Expectations:
    max_post_dial_delay_ms: int = 5000  # INVITE -> first 18x
    max_ring_s: float = 30.0  # ringing longer -> the probe hangs up, outcome no_answer
    hold_s: float = 10.0  # how long to stay on the line after answer, then hang up
    require_media: bool = True  # answered calls must deliver RTP audio


@dataclass(frozen=True)
class Target:
    name: str
    sip_uri: str | None
    number: str | None
    channels: tuple[str, ...]
    interval_s: int = 900
    expect: Expectations = field(default_factory=Expectations)
    dtmf: str | None = None  # digits sent after answer (IVR navigation), e.g. "1" or "2#"
    dtmf_after_s: float = 2.0  # seconds after answer before the digits are sent
    zone: str | None = None  # audio: tone plan (ISO 3166 code) of this target's network
    expected_prompts: tuple[str, ...] = ()  # audio: names of the prompts that should play
    diagnose: Thresholds = field(default_factory=Thresholds)  # [targets.diagnose]


@dataclass(frozen=True)
class LineConfig:
    """[line]: the analog line read through the probe board (see probe/board/line.py)."""

    adc_channel: int = 0  # MCP3008 channel of the tip-ring front end
    reference_channel: int = 1  # MCP3008 channel wired to the 1.5 V mid reference (self-test)
    sample_rate_hz: int = 200
    window_s: float = 0.2  # analysis window: DC level, AC (ringing) RMS and frequency
    zero_code: float = 511.5  # calibration: ADC code of 0 V on the line
    volts_per_count: float = 0.4840775  # calibration: line volts per ADC count
    no_voltage_below_v: float = 2.5  # |V| below: no voltage (cut line, unplugged)
    off_hook_below_v: float = 15.0  # |V| below (and above no_voltage): off-hook, in use
    idle_above_v: float = 36.0  # |V| above: on-hook idle; between: low voltage
    ringing_above_vrms: float = 20.0  # AC RMS at 14-70 Hz above: ringing
    hysteresis_v: float = 1.5  # thresholds move by this much away from the current state
    settle_s: float = 0.4  # a new state must last this long before it is reported
    fault_settle_s: float = 2.0  # ... and this long for low_voltage / no_voltage / faults
    ring_hold_s: float = 6.0  # ringing persists across cadence gaps this long
    reference_tolerance_counts: int = 16  # reference channel must read 512 +- this


ALARM_STATUSES = ("down", "degraded", "fault_line", "fault_modem", "fault_probe",
                  "broker_unreachable")
LED_KINDS = ("rgb", "single", "none")


@dataclass(frozen=True)
class IndicatorConfig:
    """[indicator]: status LED and buzzer on the probe board (see probe/board/indicator.py)."""

    led: str = "rgb"  # "rgb" | "single" | "none"
    red_pin: int = 22  # BCM GPIO numbers; defaults are hardware/pinmap.toml's
    green_pin: int = 23
    blue_pin: int = 24
    led_pin: int = 23  # the single LED (led = "single")
    buzzer_pin: int | None = 18  # None: no buzzer (buzzer = false)
    button_pin: int | None = 27  # None: no silence button (button = false)
    quiet_hours: tuple[str, str] | None = None  # ("22:00", "07:00"): buzzer silent, local time
    alarm_on: tuple[str, ...] = ("down", "fault_line", "fault_modem", "fault_probe")
    alarm_repeat_s: int = 1800  # repeat the alarm this often while it lasts; 0 = once
    alarm_repeat_max: int = 3  # at most this many repeats per episode; 0 = no limit


MODEM_KINDS = ("gsm", "analog")
MODEM_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


@dataclass(frozen=True)
class ModemConfig:
    """[modems.gsm] / [modems.analog]: a voice modem (see probe/dial/modem.py)."""

    kind: str  # "gsm" | "analog": the table's name, the channel it serves
    port: str  # pyserial URL: "/dev/serial/by-id/usb-SimTech...-if02-port0", "rfc2217://h:p"
    model: str = "auto"  # "auto" (AT+CGMI/AT+CGMM/ATI pick the profile) or a profile name
    baud: int = 115200
    audio_port: str | None = None  # gsm: pyserial URL of the PCM voice port (SIMCom if04...)
    power_pin: int | None = None  # BCM GPIO driving the power key (through a transistor)
    power_pulse_s: float = 1.2  # power key press; SIM800 toggles on a press of >= 1 s
    status_pin: int | None = None  # BCM GPIO reading the modem's STATUS output (high = on)
    reset_pin: int | None = None  # BCM GPIO driving RESET (used before the power key)
    sim_pin: Secret | None = None  # gsm: entered when the SIM asks for it (never logged)
    ringback_silence_s: float = 7.0  # analog: answer declared this long after ringback stops
    boot_wait_s: float = 15.0  # after a power cycle, how long AT may take to answer
    # ALSA capture device ("hw:1,0", "plughw:CARD=Device,DEV=0") recording the call when the
    # modem offers no audio of its own (SIM800 or generic modem wired to a USB sound card)
    alsa_device: str | None = None
    register_wait_s: float = 30.0  # gsm: wait this long for a modem still searching (+CREG 2)


@dataclass(frozen=True)
class AudioConfig:
    """[audio]: how recorded calls are heard (see probe/audio/)."""

    zone: str | None = None  # tone plan (ISO 3166 alpha-2); None = name what is unambiguous
    prompts_dir: Path | None = None  # reference prompts (<name>.wav); None = <state_dir>/prompts
    quality: str = "visqol"  # full-reference score of the matched prompt: visqol | pesq | off
    vad_model: bool = True  # Silero VAD on what the energy gate and tone mask leave
    jitter_buffer_ms: float = 60.0  # E-model: receive buffer depth (late packets beyond it)


@dataclass(frozen=True)
class HomeAssistantConfig:
    """[homeassistant]: MQTT discovery for Home Assistant (see probe/uplink/homeassistant.py)."""

    enabled: bool = False  # off by default: a fleet's central broker has no Home Assistant
    discovery_prefix: str = "homeassistant"  # Home Assistant's own default


@dataclass(frozen=True)
class Config:
    probe: ProbeIdentity
    mqtt: MqttConfig | None
    sip: SipAccount | None
    targets: tuple[Target, ...]
    source: str = "<memory>"
    line: LineConfig | None = None  # [line]: the probe board's line interface; None = no board
    indicator: IndicatorConfig | None = None  # [indicator]: None = log the status only
    modems: Mapping[str, ModemConfig] = field(default_factory=dict)  # [modems.gsm|analog]
    audio: AudioConfig = field(default_factory=lambda: AudioConfig())  # [audio]
    homeassistant: HomeAssistantConfig = field(
        default_factory=lambda: HomeAssistantConfig())  # [homeassistant]

    def modem(self, channel: str) -> ModemConfig | None:
        """The modem serving ``channel`` ("gsm"/"analog"), None when not configured."""
        return self.modems.get(channel)

    def target(self, name: str) -> Target:
        """The target called ``name``; :class:`ConfigError` (key ``targets``) if there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        names = [t.name for t in self.targets]
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError([("targets", f"no target named {name!r} ({hint}known: "
                            f"{', '.join(names)})")], self.source)


# --------------------------------------------------------------------------- entry points


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``.

    Relative ``*_file`` paths are resolved against the file's directory; ``password_env``
    variables are looked up in ``environ`` (default ``os.environ``).
    """
    file = Path(path)
    source = str(file)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(file)", f"TOML syntax error: {exc}")], source) from None
    except UnicodeDecodeError:
        raise ConfigError([("(file)", "is not UTF-8 text (TOML must be UTF-8)")], source) from None
    except OSError as exc:
        reason = f"cannot read the configuration file: {exc.strerror or exc}"
        raise ConfigError([("(file)", reason)], source) from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError([("(file)", "nested too deeply to be a configuration")],
                          source) from None
    except Exception as exc:  # whatever else the parser trips on: an invalid file, no crash
        reason = f"TOML parser failed: {type(exc).__name__}: {exc}"
        raise ConfigError([("(file)", reason)], source) from exc
    try:
        return parse_config(data, source, base_dir=file.absolute().parent, environ=environ)
    except RecursionError:  # dotted keys nest without bound, and parse fine
        raise ConfigError([("(file)", "nested too deeply to be a configuration")],
                          source) from None


def parse_config(
    data: dict[str, Any],
    source: str = "<memory>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate an already-parsed TOML document (same rules as :func:`load_config`).

    ``base_dir`` resolves relative ``*_file`` paths and ``probe.state_dir`` (default: the
    current directory).
    """
    ctx = _Context(
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        environ=os.environ if environ is None else environ,
    )
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError([("(file)", "the top level must be a table")], source)
    top = _Table(data, "", ("probe", "mqtt", "sip", "targets", "line", "indicator", "modems",
                            "audio", "homeassistant"), problems)

    probe = mqtt = sip = None
    if not top.has("probe"):
        top.problem("probe", "missing (required: a [probe] table with id and site)")
    elif section := top.section("probe", "[probe]"):
        probe = _probe(section, ctx)
    if top.has("mqtt") and (section := top.section("mqtt", "[mqtt]")):
        mqtt = _mqtt(section, ctx)
    if top.has("sip") and (section := top.section("sip", "[sip]")):
        sip = _sip(section, ctx)
    line = indicator = None
    if top.has("line") and (section := top.section("line", "[line]")):
        line = _line(section)
    if top.has("indicator") and (section := top.section("indicator", "[indicator]")):
        indicator = _indicator(section)
    modems: dict[str, ModemConfig] = {}
    if top.has("modems") and (section := top.section("modems", "[modems.gsm]")):
        modems = _modems(section, ctx)
    audio = AudioConfig()
    if top.has("audio") and (section := top.section("audio", "[audio]")):
        audio = _audio(section, ctx) or audio
    homeassistant = HomeAssistantConfig()
    if top.has("homeassistant") and (section := top.section("homeassistant",
                                                            "[homeassistant]")):
        homeassistant = _homeassistant(section, probe, mqtt) or homeassistant
    targets = _targets(top, problems)

    sip_users = _sip_users(top.data.get("targets"))
    if sip_users and not top.has("sip"):
        who = ", ".join(sip_users)
        verb = "targets {} use" if len(sip_users) > 1 else "target {} uses"
        top.problem("sip", f'missing: required because {verb.format(who)} channel "sip"')
    for kind in MODEM_KINDS:
        users = _channel_users(top.data.get("targets"), kind)
        modems_table = top.data.get("modems")
        if users and not (isinstance(modems_table, dict) and kind in modems_table):
            verb = "targets {} use" if len(users) > 1 else "target {} uses"
            problems.append((f"modems.{kind}", f"missing: required because "
                             f'{verb.format(", ".join(users))} channel "{kind}"'))

    _pins_across_sections(top, indicator, modems)

    if problems:
        raise ConfigError(problems, source)
    assert probe is not None
    return Config(probe=probe, mqtt=mqtt, sip=sip, targets=tuple(targets), source=source,
                  line=line, indicator=indicator, modems=modems, audio=audio,
                  homeassistant=homeassistant)


def _pins_across_sections(top: _Table, indicator: IndicatorConfig | None,
                          modems: Mapping[str, ModemConfig]) -> None:
    """Every GPIO claimed once across all sections: each section checks its own pins, this
    catches a pin two sections both claim (a modem's power_pin on the buzzer, a reset_pin on
    the MCP3008's SPI0 while [line] reads it), naming the later key and the one holding it."""
    from probe.board.pins import SYSTEM_PINS

    claims: dict[int, str] = {}  # GPIO -> who holds it, as the message says it
    if top.has("line") and isinstance(top.data["line"], dict):
        # [line] reads the MCP3008 over SPI0 (hardware/pinmap.toml's reserved SPI0 pins)
        for gpio, why in SYSTEM_PINS.items():
            if why.startswith("SPI0"):
                bus_pin, _, use = why.partition(": ")
                claims[gpio] = f"[line]'s {bus_pin} ({use})"
    if indicator is not None:
        leds = {"rgb": ("red_pin", "green_pin", "blue_pin"), "single": ("led_pin",),
                "none": ()}[indicator.led]
        for key in (*leds, "buzzer_pin", "button_pin"):
            pin = getattr(indicator, key)
            if pin is not None:
                claims.setdefault(pin, f"indicator.{key}")
    for kind, modem in modems.items():
        mine: dict[int, str] = {}  # a modem's own pins are checked in its section
        for key in ("power_pin", "status_pin", "reset_pin"):
            pin = getattr(modem, key)
            if pin is None:
                continue
            if pin in claims:
                top.problems.append((f"modems.{kind}.{key}",
                                     f"GPIO {pin} is already {claims[pin]}"))
            mine.setdefault(pin, f"modems.{kind}.{key}")
        for pin, who in mine.items():
            claims.setdefault(pin, who)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class _Context:
    base_dir: Path
    environ: Mapping[str, str]


PROBE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NUMBER_RE = re.compile(r"\+?[0-9*#]{2,32}")
DTMF_RE = re.compile(r"[0-9*#A-D]{1,32}")


def _probe(t: _Table, ctx: _Context) -> ProbeIdentity | None:
    t.allow("id", "site", "state_dir", "max_jitter_s", "language", "control_socket")
    probe_id = t.get(
        "id",
        _matching(
            PROBE_ID_RE,
            'must be 1-64 characters: letters, digits, ".", "_" or "-", starting with a letter '
            'or digit (it is an MQTT topic level and a certificate CN: no "/", "+", "#" or '
            "spaces)",
        ),
        required=True,
    )
    site = t.get("site", _string(), required=True)
    state_dir = t.get("state_dir", _path(ctx.base_dir), DEFAULT_STATE_DIR)
    max_jitter_s = t.get("max_jitter_s", _number(0, 3600, "seconds"), 60.0)
    language = t.get("language", _choice(LANGUAGES), "en")
    control_socket = t.get("control_socket", _socket_path(ctx.base_dir), None)
    if not t.valid:
        return None
    return ProbeIdentity(id=probe_id, site=site, state_dir=state_dir, max_jitter_s=max_jitter_s,
                         language=language, control_socket=control_socket)


#: sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


def _socket_path(base_dir: Path) -> Check:
    path = _path(base_dir)

    def check(value: Any) -> Path:
        socket_path = path(value)
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            raise _Bad(f"a Unix socket path holds at most {MAX_SOCKET_PATH} bytes, got "
                       f"{len(os.fsencode(socket_path))}: {str(socket_path)!r}")
        return socket_path

    return check


def _mqtt(t: _Table, ctx: _Context) -> MqttConfig:
    t.allow("host", "port", "keepalive_s", "username", *secret_keys(), "session_expiry_s", "tls",
            "outbox_max_results", "outbox_max_mib", "drain_rate_per_s", "recording_max_kib")
    tls = None
    if t.has("tls"):
        section = t.section("tls", "[mqtt.tls]")
        tls = _mqtt_tls(section, ctx) if section else None
    mqtt = MqttConfig(
        host=t.get("host", _host, required=True),
        port=t.get("port", _int(1, 65535), 1883),
        keepalive_s=t.get("keepalive_s", _int(5, 3600, "seconds"), 30),
        username=t.get("username", _string(), None),
        password=t.secret("password", ctx),
        session_expiry_s=t.get("session_expiry_s", _int(0, 2**32 - 1, "seconds"), 86400),
        tls=tls,
        outbox_max_results=t.get("outbox_max_results", _int(10, 10_000_000, "results"), 10_000),
        outbox_max_mib=t.get("outbox_max_mib", _int(1, 100_000, "MiB"), 50),
        drain_rate_per_s=t.get("drain_rate_per_s", _number(0, 10_000, "messages per second",
                                                           exclusive_low=True), 20.0),
        recording_max_kib=t.get("recording_max_kib", _int(0, 65_536, "KiB; 0: no uploads"),
                                1024),
    )
    _require_username(t, "password", "password_file", "password_env")
    _recording_fits_outbox(t, mqtt)
    return mqtt


def _recording_fits_outbox(t: _Table, mqtt: MqttConfig) -> None:
    """A recording larger than the whole outbox could never be queued: say so now."""
    kib, mib = mqtt.recording_max_kib, mqtt.outbox_max_mib
    if isinstance(kib, int) and isinstance(mib, int) and kib > mib * 1024:
        t.problem("recording_max_kib", f"must not exceed outbox_max_mib ({mib} MiB = "
                  f"{mib * 1024} KiB), got {kib}")


def _mqtt_tls(t: _Table, ctx: _Context) -> MqttTls:
    t.allow("ca_file", "cert_file", "key_file")
    files = {key: t.get(key, _readable_file(ctx.base_dir), required=True)
             for key in ("ca_file", "cert_file", "key_file")}
    return MqttTls(**files)


def _readable_file(base_dir: Path) -> Check:
    as_path = _path(base_dir)

    def check(value: Any) -> Path:
        path = as_path(value)
        if not path.is_file():
            raise _Bad(f"no such file: {path}")
        if not os.access(path, os.R_OK):
            raise _Bad(f"not readable by this user: {path}")
        return path

    return check


def _require_username(t: _Table, *needing: str) -> None:
    """A digest/MQTT password (or a registrar) means nothing without a username."""
    if not t.has("username"):
        needs = [k for k in needing if t.has(k)]
        if needs:
            t.problem("username", f"missing: required when {' and '.join(needs)} is set")


def _sip(t: _Table, ctx: _Context) -> SipAccount:
    t.allow(
        "transport",
        "local_address",
        "local_port",
        "rtp_port",
        "identity",
        "registrar",
        "username",
        "realm",
        *secret_keys(),
        "register_timeout_s",
    )
    account = SipAccount(
        transport=t.get("transport", _choice(TRANSPORTS), "udp"),
        local_address=t.get("local_address", _ip_literal, "0.0.0.0"),
        local_port=t.get("local_port", _int(0, 65535, "0 = any free port"), 5060),
        rtp_port=t.get("rtp_port", _rtp_port, 4000),
        identity=t.get("identity", _sip_uri, None),
        registrar=t.get("registrar", _sip_uri, None),
        username=t.get("username", _string(), None),
        realm=t.get("realm", _string(), "*"),
        password=t.secret("password", ctx),
        register_timeout_s=t.get(
            "register_timeout_s", _number(0, 120, "seconds", exclusive_low=True), 10.0
        ),
    )
    _require_username(t, "registrar", "password", "password_file", "password_env")
    return account


def _line(t: _Table) -> LineConfig | None:
    d = LineConfig()
    t.allow(*(f.name for f in dataclasses.fields(LineConfig)))
    volts = _number(0, 250, "volts", exclusive_low=True)
    seconds = _number(0, 60, "seconds")
    line = LineConfig(
        adc_channel=t.get("adc_channel", _int(0, 7, "MCP3008 channel"), d.adc_channel),
        reference_channel=t.get("reference_channel", _int(0, 7, "MCP3008 channel"),
                                d.reference_channel),
        sample_rate_hz=t.get("sample_rate_hz", _int(50, 2000, "samples per second"),
                             d.sample_rate_hz),
        window_s=t.get("window_s", _number(0.05, 2, "seconds"), d.window_s),
        zero_code=t.get("zero_code", _number(0, 1023, "ADC counts"), d.zero_code),
        volts_per_count=t.get("volts_per_count", _number(0, 5, "volts", exclusive_low=True),
                              d.volts_per_count),
        no_voltage_below_v=t.get("no_voltage_below_v", volts, d.no_voltage_below_v),
        off_hook_below_v=t.get("off_hook_below_v", volts, d.off_hook_below_v),
        idle_above_v=t.get("idle_above_v", volts, d.idle_above_v),
        ringing_above_vrms=t.get("ringing_above_vrms", volts, d.ringing_above_vrms),
        hysteresis_v=t.get("hysteresis_v", _number(0, 20, "volts"), d.hysteresis_v),
        settle_s=t.get("settle_s", seconds, d.settle_s),
        fault_settle_s=t.get("fault_settle_s", seconds, d.fault_settle_s),
        ring_hold_s=t.get("ring_hold_s", seconds, d.ring_hold_s),
        reference_tolerance_counts=t.get("reference_tolerance_counts",
                                         _int(1, 256, "ADC counts"),
                                         d.reference_tolerance_counts),
    )
    if not t.valid:
        return None
    if line.adc_channel == line.reference_channel:
        t.problem("reference_channel", f"must differ from adc_channel ({line.adc_channel})")
    # The magnitude bands must be in order, with room for the hysteresis on both sides.
    bands = [("no_voltage_below_v", line.no_voltage_below_v),
             ("off_hook_below_v", line.off_hook_below_v), ("idle_above_v", line.idle_above_v)]
    for (low_key, low), (key, value) in itertools.pairwise(bands):
        if value - low <= 2 * line.hysteresis_v:
            t.problem(key, f"must be more than {t.key(low_key)} ({low:g}) plus twice "
                           f"hysteresis_v ({line.hysteresis_v:g}), got {value:g}")
    if line.window_s * line.sample_rate_hz < 10:
        t.problem("window_s", f"must hold at least 10 samples at sample_rate_hz "
                              f"{line.sample_rate_hz}, got {line.window_s:g}")
    for key in ("settle_s", "fault_settle_s"):
        if getattr(line, key) < line.window_s:
            t.problem(key, f"must be at least window_s ({line.window_s:g}), "
                           f"got {getattr(line, key):g}")
    return line if t.valid else None


_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _quiet_hours(value: Any) -> tuple[str, str]:
    rule = 'must be "HH:MM-HH:MM" in local time (e.g. "22:00-07:00"; may span midnight)'
    if not isinstance(value, str):
        raise _Bad(f"{rule}, got {_show(value)}")
    start, sep, end = value.partition("-")
    if not sep or not _HHMM_RE.fullmatch(start) or not _HHMM_RE.fullmatch(end):
        raise _Bad(f"{rule}, got {_show(value)}")
    if start == end:
        raise _Bad(f"start and end must differ, got {_show(value)}")
    return start, end


def _alarm_on(value: Any) -> tuple[str, ...]:
    allowed = ", ".join(f'"{s}"' for s in ALARM_STATUSES)
    if not isinstance(value, list) or any(v not in ALARM_STATUSES for v in value):
        raise _Bad(f"must be an array of {allowed} (empty: never sound), got {_show(value)}")
    if len(set(value)) != len(value):
        raise _Bad(f"must not list a status twice, got {_show(value)}")
    return tuple(value)


def _indicator(t: _Table) -> IndicatorConfig | None:
    from probe.board.pins import DEFAULT_PINS, SYSTEM_PINS

    d = IndicatorConfig()
    t.allow("led", "red_pin", "green_pin", "blue_pin", "led_pin", "buzzer", "buzzer_pin",
            "button", "button_pin", "quiet_hours", "alarm_on", "alarm_repeat_s",
            "alarm_repeat_max")
    gpio = _int(2, 27, "BCM GPIO number")
    led = t.get("led", _choice(LED_KINDS), d.led)
    pins = {key: t.get(key, gpio, getattr(d, key))
            for key in ("red_pin", "green_pin", "blue_pin", "led_pin", "buzzer_pin",
                        "button_pin")}
    buzzer = t.get("buzzer", _bool, True)
    button = t.get("button", _bool, True)
    indicator = IndicatorConfig(
        led=led, **pins,
        quiet_hours=t.get("quiet_hours", _quiet_hours, None),
        alarm_on=t.get("alarm_on", _alarm_on, d.alarm_on),
        alarm_repeat_s=t.get("alarm_repeat_s", _int(0, 86400, "seconds; 0 = once"),
                             d.alarm_repeat_s),
        alarm_repeat_max=t.get("alarm_repeat_max", _int(0, 1000, "0 = no limit"),
                               d.alarm_repeat_max),
    )
    if not t.valid:
        return None
    # Only the pins in use must be free: no pin twice, none of the board's system pins,
    # none the board wires to the modem.
    used = {"rgb": ["red_pin", "green_pin", "blue_pin"], "single": ["led_pin"], "none": []}[led]
    used += (["buzzer_pin"] if buzzer else []) + (["button_pin"] if button else [])
    board = {gpio: f"the board's {name}" for name, gpio in DEFAULT_PINS.items()
             if name.startswith("modem_")}
    seen: dict[int, str] = {}
    for key in used:
        pin = pins[key]
        if pin in SYSTEM_PINS:
            t.problem(key, f"GPIO{pin} is reserved ({SYSTEM_PINS[pin]})")
        elif pin in board:
            t.problem(key, f"GPIO{pin} is {board[pin]}")
        elif pin in seen:
            t.problem(key, f"GPIO{pin} is already {t.key(seen[pin])}")
        seen.setdefault(pin, key)
    if not t.valid:
        return None
    return dataclasses.replace(indicator, buzzer_pin=pins["buzzer_pin"] if buzzer else None,
                               button_pin=pins["button_pin"] if button else None)


def _targets(top: _Table, problems: list[Problem]) -> list[Target]:
    if not top.has("targets"):
        top.problem("targets", "missing (required: at least one [[targets]] table)")
        return []
    raw = top.data["targets"]
    if not isinstance(raw, list):
        top.problem("targets", f"must be an array of tables ([[targets]]), got {_show(raw)}")
        return []
    if not raw:
        top.problem("targets", "must contain at least one target ([[targets]])")
        return []

    targets: list[Target] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"targets[{i}]"
        if not isinstance(item, dict):
            problems.append((path, f"must be a table ([[targets]]), got {_show(item)}"))
            continue
        own: list[Problem] = []
        target = _target(_Table(item, path, None, own))
        name = item.get("name")
        if isinstance(name, str) and TARGET_NAME_RE.fullmatch(name):
            if name in first_index:
                own.append(
                    (
                        f"{path}.name",
                        f'duplicate target name "{name}" '
                        f"(already used by targets[{first_index[name]}])",
                    )
                )
            else:
                first_index[name] = i
            # Say which target, for long files where indexes are hard to count.
            own = [
                (key, reason if key == f"{path}.name" else f'{reason} (target "{name}")')
                for key, reason in own
            ]
        problems.extend(own)
        if target is not None:
            targets.append(target)
    return targets


def _modems(t: _Table, ctx: _Context) -> dict[str, ModemConfig]:
    t.allow(*MODEM_KINDS)
    modems: dict[str, ModemConfig] = {}
    for kind in MODEM_KINDS:
        if t.has(kind) and (section := t.section(kind, f"[modems.{kind}]")):
            modem = _modem(section, kind, ctx)
            if modem is not None:
                modems[kind] = modem
    return modems


def _modem(t: _Table, kind: str, ctx: _Context) -> ModemConfig | None:
    from probe.at.profiles import PROFILES  # declarative data, no hardware

    common = ("port", "model", "baud", "power_pin", "power_pulse_s", "status_pin", "reset_pin",
              "boot_wait_s")
    if kind == "gsm":
        t.allow(*common, "audio_port", "alsa_device", "register_wait_s", *secret_keys("sim_pin"))
    else:
        t.allow(*common, "ringback_silence_s")
    models = ("auto", *(name for name, p in PROFILES.items() if p.channel == kind))
    pin = _int(0, 27, "BCM GPIO number")
    modem = ModemConfig(
        kind=kind,
        port=t.get("port", _serial_url, required=True),
        model=t.get("model", _choice(models), "auto"),
        baud=t.get("baud", _baud, 115200),
        audio_port=t.get("audio_port", _serial_url, None) if kind == "gsm" else None,
        power_pin=t.get("power_pin", pin, None),
        power_pulse_s=t.get("power_pulse_s", _number(0, 10, "seconds", exclusive_low=True),
                            1.2),
        status_pin=t.get("status_pin", pin, None),
        reset_pin=t.get("reset_pin", pin, None),
        sim_pin=t.secret("sim_pin", ctx) if kind == "gsm" else None,
        ringback_silence_s=t.get("ringback_silence_s", _number(0.5, 25.5, "seconds"), 7.0)
        if kind == "analog" else 7.0,
        boot_wait_s=t.get("boot_wait_s", _number(1, 120, "seconds"), 15.0),
        alsa_device=t.get("alsa_device", _alsa_device, None) if kind == "gsm" else None,
        register_wait_s=t.get("register_wait_s", _number(0, 600, "seconds"), 30.0)
        if kind == "gsm" else 30.0,
    )
    pins: dict[int, str] = {}
    for key in ("power_pin", "status_pin", "reset_pin"):
        value = getattr(modem, key)
        if value is not None and value in pins:
            t.problem(key, f"GPIO {value} is already the {pins[value]}")
        elif value is not None:
            pins[value] = key
    if modem.sim_pin is not None and not re.fullmatch(r"[0-9]{4,8}", modem.sim_pin.reveal()):
        t.problem("sim_pin", "must be 4 to 8 digits (the value is not shown)")
    if modem.status_pin is not None and modem.power_pin is None:
        t.problem("status_pin", "needs power_pin: the status is read to drive the power key")
    return modem if t.valid else None


def _alsa_device(value: Any) -> str:
    ok = isinstance(value, str) and value and re.fullmatch(r"[A-Za-z0-9_.:,=/-]+", value)
    if not ok:
        raise _Bad('must be an ALSA PCM name ("hw:1,0", "plughw:CARD=Device,DEV=0", '
                   f'"default"), got {_show(value)}')
    return value


def _serial_url(value: Any) -> str:
    ok = isinstance(value, str) and value.strip() == value and value and (
        value.startswith("/") or re.fullmatch(r"[a-z0-9+]+://\S*", value))
    if not ok:
        raise _Bad('must be a device path or a pyserial URL ("/dev/serial/by-id/...", '
                   f'"rfc2217://host:port", "loop://"), got {_show(value)}')
    return value


def _baud(value: Any) -> int:
    if isinstance(value, bool) or value not in MODEM_BAUDS:
        raise _Bad(f"must be one of {', '.join(map(str, MODEM_BAUDS))}, got {_show(value)}")
    return value


def _channel_users(raw: Any, channel: str) -> list[str]:
    """Who lists ``channel`` (even in an otherwise broken target): '"name"' or 'targets[i]'."""
    users: dict[str, None] = {}
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        channels = item.get("channels") if isinstance(item, dict) else None
        if isinstance(channels, list) and channel in channels:
            name = item.get("name")
            users[f'"{name}"' if isinstance(name, str) else f"targets[{i}]"] = None
    return list(users)


def _sip_users(raw: Any) -> list[str]:
    """Who lists channel "sip" (even in an otherwise broken target): '"name"' or 'targets[i]'."""
    users: dict[str, None] = {}
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        channels = item.get("channels") if isinstance(item, dict) else None
        if isinstance(channels, list) and "sip" in channels:
            name = item.get("name")
            users[f'"{name}"' if isinstance(name, str) else f"targets[{i}]"] = None
    return list(users)


def _target(t: _Table) -> Target | None:
    t.allow("name", "sip_uri", "number", "channels", "interval_s", "expect", "dtmf",
            "dtmf_after_s", "zone", "expected_prompts", "diagnose")
    name = t.get(
        "name",
        _matching(
            TARGET_NAME_RE,
            'must be 1-63 characters: lowercase letters, digits, "_" or "-", starting with a '
            "letter or digit",
        ),
        required=True,
    )
    sip_uri = t.get("sip_uri", _sip_uri, None)
    number = t.get(
        "number",
        _matching(
            NUMBER_RE,
            'must be 2 to 32 of the digits 0-9, "*" and "#", optionally after a leading "+" '
            "(no spaces or dashes)",
        ),
        None,
    )
    channels = _channels(t)
    interval_s = t.get("interval_s", _int(30, 86400, "seconds"), 900)
    dtmf = t.get("dtmf", _matching(DTMF_RE, 'must be 1 to 32 of the DTMF digits 0-9 * # A-D'), None)
    dtmf_after_s = t.get("dtmf_after_s", _number(0, 600, "seconds"), 2.0)
    zone = t.get("zone", _zone, None)
    expected_prompts = t.get("expected_prompts", _prompt_names, ())
    expect: Expectations | None = Expectations()
    if t.has("expect"):
        section = t.section("expect", "[targets.expect]")
        expect = _expect(section) if section else None
    thresholds: Thresholds | None = Thresholds()
    if t.has("diagnose"):
        section = t.section("diagnose", "[targets.diagnose]")
        thresholds = _thresholds(section) if section else None

    if "sip" in channels and not t.has("sip_uri"):
        t.problem("sip_uri", 'missing: required because channels include "sip"')
    pstn = [c for c in channels if c in ("gsm", "analog")]
    if pstn and not t.has("number"):
        which = " and ".join(f'"{c}"' for c in pstn)
        t.problem("number", f"missing: required because channels include {which}")

    if not t.valid or expect is None or thresholds is None:
        return None
    return Target(name, sip_uri, number, channels, interval_s, expect, dtmf, dtmf_after_s,
                  zone, expected_prompts, thresholds)


def _thresholds(t: _Table) -> Thresholds | None:
    d = Thresholds()
    t.allow("min_mos", "max_loss_percent", "max_jitter_ms", "weak_signal_dbm", "slow_answer_ms",
            "min_level_dbfs", "max_clipping_percent", "down_after", "down_window",
            "queue_prompts", "closed_prompts")
    values = dict(
        min_mos=t.get("min_mos", _number(1, 5, "MOS"), d.min_mos),
        max_loss_percent=t.get("max_loss_percent", _number(0, 100, "percent"),
                               d.max_loss_percent),
        max_jitter_ms=t.get("max_jitter_ms", _number(0, 10_000, "milliseconds"),
                            d.max_jitter_ms),
        weak_signal_dbm=t.get("weak_signal_dbm", _number(-150, 0, "dBm"), d.weak_signal_dbm),
        slow_answer_ms=t.get("slow_answer_ms", _int(1, 600_000, "milliseconds"),
                             d.slow_answer_ms),
        min_level_dbfs=t.get("min_level_dbfs", _number(-100, 0, "dBFS"), d.min_level_dbfs),
        max_clipping_percent=t.get("max_clipping_percent", _number(0, 100, "percent"),
                                   d.max_clipping_percent),
        down_after=t.get("down_after", _int(1, 100, "cycles"), d.down_after),
        down_window=t.get("down_window", _int(1, 100, "cycles"), d.down_window),
        queue_prompts=t.get("queue_prompts", _prompt_names, d.queue_prompts),
        closed_prompts=t.get("closed_prompts", _prompt_names, d.closed_prompts),
    )
    if t.valid and values["down_after"] > values["down_window"]:
        t.problem("down_after", f"must be at most down_window ({values['down_window']}), "
                                f"got {values['down_after']}")
    return Thresholds(**values) if t.valid else None


QUALITY_METHODS = ("visqol", "pesq", "off")
PROMPT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _audio(t: _Table, ctx: _Context) -> AudioConfig | None:
    t.allow("zone", "prompts_dir", "quality", "vad_model", "jitter_buffer_ms")
    audio = AudioConfig(
        zone=t.get("zone", _zone, None),
        prompts_dir=t.get("prompts_dir", _path(ctx.base_dir), None),
        quality=t.get("quality", _choice(QUALITY_METHODS), "visqol"),
        vad_model=t.get("vad_model", _bool, True),
        jitter_buffer_ms=t.get("jitter_buffer_ms", _number(0, 1000, "milliseconds"), 60.0),
    )
    return audio if t.valid else None


#: Home Assistant's discovery topics are <prefix>/<component>/<node id>/<object id>/config and
#: it reads node and object ids of [a-zA-Z0-9_-] only; the prefix is kept to the same letters
#: (levels of them), so it can never hold a wildcard or reach into the probe's own tree.
HA_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
HA_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")


def _homeassistant(t: _Table, probe: ProbeIdentity | None,
                   mqtt: MqttConfig | None) -> HomeAssistantConfig | None:
    t.allow("enabled", "discovery_prefix")
    ha = HomeAssistantConfig(
        enabled=t.get("enabled", _bool, False),
        discovery_prefix=t.get("discovery_prefix", _matching(
            HA_PREFIX_RE, 'must be one or more topic levels of letters, digits, "_" or "-" '
            '(e.g. "homeassistant"), without wildcards or empty levels'), "homeassistant"),
    )
    if ha.enabled is True:
        if mqtt is None:
            t.problem("enabled", "needs an [mqtt] section: discovery is published to its broker")
        if probe is not None and not HA_ID_RE.fullmatch(probe.id):
            # The node id of every discovery topic is the probe id (the broker's ACL matches
            # it as %u); Home Assistant ignores a node id with a "."
            t.problem("enabled", f"probe.id {probe.id!r} is not a Home Assistant node id "
                      '(letters, digits, "_" or "-" only): rename the probe or leave '
                      "discovery off")
        if isinstance(ha.discovery_prefix, str) and \
                ha.discovery_prefix.split("/")[0] == "hotline-probe":
            t.problem("discovery_prefix", "must not be inside the probe's own topic tree "
                      "(hotline-probe/...)")
    return ha if t.valid else None


def _zone(value: Any) -> str:
    from probe.audio.plans import UnknownZone, resolve_zone

    if not isinstance(value, str):
        raise _Bad(f"must be a string naming a tone plan (an ISO 3166 code such as \"DE\"), got "
                   f"{_show(value)}")
    try:
        return resolve_zone(value)
    except UnknownZone as exc:
        raise _Bad(str(exc)) from None


def _prompt_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and PROMPT_NAME_RE.fullmatch(v) for v in value):
        raise _Bad('must be an array of prompt names (1-64 letters, digits, ".", "_" or "-"), '
                   f"got {_show(value)}")
    return tuple(value)


def _channels(t: _Table) -> tuple[str, ...]:
    allowed = ", ".join(f'"{c}"' for c in CHANNELS)
    if not t.has("channels"):
        t.problem("channels", f"missing (required: a non-empty array of {allowed})")
        return ()
    raw = t.data["channels"]
    if not isinstance(raw, list) or not raw:
        t.problem("channels", f"must be a non-empty array of {allowed}, got {_show(raw)}")
        return ()
    channels: list[str] = []
    for j, channel in enumerate(raw):
        key = f"{t.key('channels')}[{j}]"
        if channel not in CHANNELS:
            t.problems.append((key, f"unknown channel {_show(channel)} (allowed: {allowed})"))
        elif channel in channels:
            t.problems.append((key, f'duplicate channel "{channel}" (each channel at most once)'))
        else:
            channels.append(channel)
    return tuple(channels)


def _expect(t: _Table) -> Expectations | None:
    t.allow("max_post_dial_delay_ms", "max_ring_s", "hold_s", "require_media")
    expect = Expectations(
        max_post_dial_delay_ms=t.get(
            "max_post_dial_delay_ms", _int(1, 120_000, "milliseconds"), 5000
        ),
        max_ring_s=t.get("max_ring_s", _number(0, 600, "seconds", exclusive_low=True), 30.0),
        hold_s=t.get("hold_s", _number(0, 3600, "seconds"), 10.0),
        require_media=t.get("require_media", _bool, True),
    )
    return expect if t.valid else None


# --------------------------------------------------------------------------- the table reader


class _Bad(Exception):
    """A value failed its check; the argument is the reason."""


Check = Callable[[Any], Any]
_REQUIRED: Any = object()


class _Table:
    """One TOML table at key path ``path``: reads keys, records every problem in ``problems``."""

    def __init__(
        self,
        data: Any,
        path: str,
        allowed: Sequence[str] | None,
        problems: list[Problem],
    ) -> None:
        self.path = path
        self.problems = problems
        self._count = len(problems)
        if not isinstance(data, dict):
            problems.append((path, f"must be a table, got {_show(data)}"))
            data = {}
        self.data: dict[str, Any] = data
        if allowed is not None:
            self.allow(*allowed)

    @property
    def valid(self) -> bool:
        """No problem was recorded since this table was opened (its sub-tables included)."""
        return len(self.problems) == self._count

    def allow(self, *allowed: str) -> None:
        """Record every key not in ``allowed`` as a problem."""
        for key in self.data:
            if key not in allowed:
                reason = f"unknown key (allowed: {', '.join(allowed)})"
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    reason += f'; did you mean "{close[0]}"?'
                self.problem(key, reason)

    def key(self, key: str) -> str:
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def problem(self, key: str, reason: str) -> None:
        self.problems.append((self.key(key), reason))

    def get(
        self, key: str, check: Check, default: Any = _REQUIRED, *, required: bool = False
    ) -> Any:
        """The checked value of ``key``, its default when absent, None after a problem."""
        if key not in self.data:
            if required or default is _REQUIRED:
                self.problem(key, "missing (required)")
                return None
            return default
        try:
            return check(self.data[key])
        except _Bad as bad:
            self.problem(key, str(bad))
            return None

    def section(self, key: str, header: str) -> _Table | None:
        """The sub-table ``key`` (present); None, with a problem recorded, if not a table."""
        value = self.data[key]
        if not isinstance(value, dict):
            self.problem(key, f"must be a table ({header}), got {_show(value)}")
            return None
        return _Table(value, self.key(key), None, self.problems)

    def secret(self, name: str, ctx: _Context) -> Secret | None:
        secret, problems = resolve_secret(
            self.data, self.path, name, base_dir=ctx.base_dir, environ=ctx.environ
        )
        self.problems.extend(problems)
        return secret


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def _show(value: Any) -> str:
    """A value as the reader wrote it in TOML, shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    return describe_type(value)


# --------------------------------------------------------------------------- checks


def _int(low: int, high: int, unit: str = "") -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            suffix = f" ({unit})" if unit else ""
            raise _Bad(f"must be an integer from {low} to {high}{suffix}, got {_show(value)}")
        return value

    return check


def _number(low: float, high: float, unit: str, *, exclusive_low: bool = False) -> Check:
    def check(value: Any) -> float:
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (low < value if exclusive_low else low <= value)
            and value <= high
        )
        if not ok:
            span = (
                f"greater than {low} and at most {high}"
                if exclusive_low
                else f"from {low} to {high}"
            )
            raise _Bad(f"must be a number {span} ({unit}), got {_show(value)}")
        return float(value)

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_show(value)}")
    return value


def _string() -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Bad(f"must be a non-empty string, got {_show(value)}")
        return value

    return check


def _choice(choices: Sequence[str]) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            raise _Bad(f"must be one of {allowed}, got {_show(value)}")
        return value

    return check


def _matching(pattern: re.Pattern[str], rule: str) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _Bad(f"{rule}, got {_show(value)}")
        return value

    return check


def _path(base_dir: Path) -> Check:
    def check(value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise _Bad(f"must be a non-empty path string, got {_show(value)}")
        try:
            path = Path(value).expanduser()
        except RuntimeError as exc:  # "~nobody/x": no such user
            raise _Bad(f"cannot expand {value!r}: {exc}") from None
        return path if path.is_absolute() else base_dir / path

    return check


def _rtp_port(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == 0 or 1024 <= value <= 65534)
    ):
        raise _Bad(f"must be 0 (any) or an integer from 1024 to 65534, got {_show(value)}")
    return value


def _ip_literal(value: Any) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        raise _Bad(
            f'must be an IPv4 or IPv6 address to bind (e.g. "0.0.0.0", "::"), got {_show(value)}'
        ) from None
    return value


def _host(value: Any) -> str:
    if isinstance(value, str) and (_hostname_or_ipv4_problem(value) is None or _is_ipv6(value)):
        return value
    raise _Bad(f"must be a hostname or IP address (no scheme, no port), got {_show(value)}")


def _sip_uri(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f'must be a SIP URI string like "sip:1000@pbx.example.com", got {_show(value)}')
    detail = sip_uri_problem(value)
    if detail:
        raise _Bad(
            f'must be a SIP URI like "sip:1000@pbx.example.com" ({detail}), got {_show(value)}'
        )
    return value


# --------------------------------------------------------------------------- SIP URIs and hosts

# sip:[user@]host[:port][;param[=value]]... -- the shape first, then each part on its own.
_SIP_URI_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):"
    r"(?:(?P<user>[^@]*)@)?"
    r"(?P<host>\[[^\]]*\]|[^:;?\[\]]*)"
    r"(?::(?P<port>[^;?]*))?"
    r"(?P<params>(?:;[^;?]*)*)"
)
# RFC 3261 user: unreserved / escaped / user-unreserved
_SIP_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_SIP_PARAM_RE = re.compile(r"[A-Za-z0-9\-_.!~*'%]+(?:=[A-Za-z0-9\-_.!~*'%\[\]/:&+$]+)?")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def sip_uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as a ``sip:``/``sips:`` URI, or None if it is fine.

    Accepted: ``sip:`` or ``sips:``, an optional ``user@``, a host (hostname, IPv4 or
    ``[IPv6]``), an optional ``:port`` 1..65535 and optional ``;params``.

    >>> sip_uri_problem("sip:1000@pbx.example.com:5060;transport=tcp") is None
    True
    >>> sip_uri_problem("tel:+33123456789")
    'scheme must be sip: or sips:'
    """
    if not uri or any(c.isspace() for c in uri):
        return "no spaces allowed" if uri else "empty"
    m = _SIP_URI_RE.fullmatch(uri)
    if not m:
        if ":" not in uri:
            return "scheme must be sip: or sips:"
        if "?" in uri:
            return "headers (?...) are not supported"
        return "not of the form sip:[user@]host[:port][;params]"
    if m["scheme"].lower() not in ("sip", "sips"):
        return "scheme must be sip: or sips:"
    if m["user"] is not None and not _SIP_USER_RE.fullmatch(m["user"]):
        return "bad user part before @" if m["user"] else "empty user part before @"
    host = m["host"]
    if not host:
        return "host is missing"
    if host.startswith("["):
        if not _is_ipv6(host[1:-1]):
            return f"{host} is not an IPv6 address"
    else:
        problem = _hostname_or_ipv4_problem(host)
        if problem:
            return problem
    if m["port"] is not None:
        port = m["port"]
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return "port must be 1..65535"
    for param in m["params"].split(";")[1:]:
        if not _SIP_PARAM_RE.fullmatch(param):
            return f"bad parameter {json.dumps(';' + param)}"
    return None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _hostname_or_ipv4_problem(host: str) -> str | None:
    labels = host.split(".")
    if labels[-1].isascii() and labels[-1].isdigit():  # no top-level domain is numeric: IPv4
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address"
        return None
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return f"host {host} is not a valid hostname, IPv4 or [IPv6] address"
    return None
