"""The probe's configuration: one TOML file -> frozen, validated objects.

:func:`load_config` reads the file, :func:`parse_config` validates an already-parsed dict.  Both
return a :class:`Config` or raise :class:`~probe.errors.ConfigError` listing *every* problem at
once, each as ``(key path, reason)``::

    probe.id: must be 1-64 characters: ..., got "branch/17"
    targets[1].expect.max_ring_s: must be a number greater than 0 and at most 600 (seconds), \
got 900 (target "sales")

Unknown keys are errors at every level, so a typo never silently falls back to a default.
Each key is declared once, on the dataclass field below that holds it (name, type, default;
its range, reason and description in :func:`~probe.config.keys.key`): the reader and the JSON
Schema (:func:`config_schema`, ``probe config-schema``, probe/schema/config-v1.json) both come
from those declarations.  The annotated reference is ``examples/probe.toml``; the minimal file
is::

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
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from probe.config.keys import (
    MAX_SOCKET_PATH,
    Bool,
    Checked,
    Choice,
    Ctx,
    FilePath,
    Int,
    Key,
    Kind,
    Matching,
    Number,
    OwnReader,
    SecretKind,
    Table,
    Text,
    Variants,
    declare,
    default_of,
    key,
    keys_of,
    table,
    table_schema,
    toml_names,
)
from probe.config.keys import Bad as _Bad
from probe.config.keys import show as _show
from probe.config.secrets import Secret, resolve_secret
from probe.diagnosis.i18n import LANGUAGES
from probe.diagnosis.rules import Thresholds
from probe.errors import ConfigError

__all__ = [
    "CHANNELS",
    "MAX_SOCKET_PATH",
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
    "config_schema",
    "load_config",
    "parse_config",
    "sip_uri_problem",
]

CHANNELS = ("sip", "gsm", "analog")
TRANSPORTS = ("udp", "tcp")
DEFAULT_STATE_DIR = Path("/var/lib/hotline-probe")
LANGUAGE_CODES = tuple(LANGUAGES)
ALARM_STATUSES = ("down", "degraded", "fault_line", "fault_modem", "fault_probe",
                  "broker_unreachable")
LED_KINDS = ("rgb", "single", "none")
MODEM_KINDS = ("gsm", "analog")
MODEM_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
QUALITY_METHODS = ("visqol", "pesq", "off")

PROBE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NUMBER_RE = re.compile(r"\+?[0-9*#]{2,32}")
DTMF_RE = re.compile(r"[0-9*#A-D]{1,32}")
PROMPT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Home Assistant's discovery topics are <prefix>/<component>/<node id>/<object id>/config and
#: it reads node and object ids of [a-zA-Z0-9_-] only; the prefix is kept to the same letters
#: (levels of them), so it can never hold a wildcard or reach into the probe's own tree.
HA_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
HA_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

Problem = tuple[str, str]


# --------------------------------------------------------------------------- checks


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


def _alsa_device(value: Any) -> str:
    ok = isinstance(value, str) and value and re.fullmatch(r"[A-Za-z0-9_.:,=/-]+", value)
    if not ok:
        raise _Bad('must be an ALSA PCM name ("hw:1,0", "plughw:CARD=Device,DEV=0", '
                   f'"default"), got {_show(value)}')
    return str(value)


def _serial_url(value: Any) -> str:
    ok = isinstance(value, str) and value.strip() == value and value and (
        value.startswith("/") or re.fullmatch(r"[a-z0-9+]+://\S*", value))
    if not ok:
        raise _Bad('must be a device path or a pyserial URL ("/dev/serial/by-id/...", '
                   f'"rfc2217://host:port", "loop://"), got {_show(value)}')
    return str(value)


def _baud(value: Any) -> int:
    if isinstance(value, bool) or value not in MODEM_BAUDS:
        raise _Bad(f"must be one of {', '.join(map(str, MODEM_BAUDS))}, got {_show(value)}")
    return int(value)


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


@dataclass(frozen=True)
class _ModemModel(Kind):
    """"auto" or a profile (probe/at/profiles.py) of the modem's channel."""

    def models(self, variant: str | None) -> tuple[str, ...]:
        from probe.at.profiles import PROFILES  # declarative data, no hardware

        return ("auto", *(name for name, p in PROFILES.items() if p.channel == variant))

    def check(self, value: Any, ctx: Ctx) -> str:
        return Choice(self.models(ctx.variant)).check(value, ctx)

    def schema(self, variant: str | None) -> dict[str, Any]:
        return {"enum": list(self.models(variant))}


SIP_URI = Checked(_sip_uri, {"type": "string", "pattern": "^[Ss][Ii][Pp][Ss]?:"})
SERIAL_URL = Checked(_serial_url, {"type": "string", "pattern": r"^(/|[a-z0-9+]+://\S*$)"})
ZONE = Checked(_zone, {"type": "string", "pattern": r"\S"})
PROMPT_NAMES = Checked(_prompt_names, {
    "type": "array", "items": {"type": "string", "pattern": f"^(?:{PROMPT_NAME_RE.pattern})$"}})
SECONDS_60 = Number(0, 60, "seconds")
VOLTS = Number(0, 250, "volts", exclusive_low=True)
LED_GPIO = Int(2, 27, "BCM GPIO number")
MODEM_GPIO = Int(0, 27, "BCM GPIO number")
MCP3008_CHANNEL = Int(0, 7, "MCP3008 channel")


# --------------------------------------------------------------------------- the objects


@table
class ProbeIdentity:
    """[probe]: who this probe is and where it keeps its state."""

    id: str = key(Matching(
        PROBE_ID_RE,
        'must be 1-64 characters: letters, digits, ".", "_" or "-", starting with a letter '
        'or digit (it is an MQTT topic level and a certificate CN: no "/", "+", "#" or '
        "spaces)"), "the probe's name: an MQTT topic level and its certificate's CN")
    site: str = key(Text(), "where the probe is, for people")
    state_dir: Path = key(FilePath(), "outbox, history, prompts (relative: to this file)",
                          default=DEFAULT_STATE_DIR)
    # Each scheduled call starts up to this much late (and at most 10 % of its interval), so a
    # fleet of probes does not call the hotline in lock step.  0 = exactly on the grid.
    max_jitter_s: float = key(Number(0, 3600, "seconds"),
                              "each scheduled call starts up to this much late (at most 10 % "
                              "of its interval); 0 = on the grid", default=60.0)
    language: str = key(Choice(LANGUAGE_CODES), "language of diagnosis summaries and remedies",
                        default="en")
    # The daemon's local control socket (probe/daemon/control.py): None = <state_dir>/control.sock
    control_socket: Path | None = key(FilePath(socket=True),
                                      "the daemon's control socket; absent: "
                                      "<state_dir>/control.sock", default=None)

    @property
    def control_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"


@table
class MqttTls:
    """[mqtt.tls]: always verified; there is no "insecure" switch."""

    ca_file: Path = key(FilePath(readable=True), "the CA that signed the broker's certificate")
    cert_file: Path = key(FilePath(readable=True), "this probe's client certificate (CN = id)")
    key_file: Path = key(FilePath(readable=True), "its private key (keep it 0600)")


@table
class MqttConfig:
    """[mqtt]: the broker results are published to."""

    host: str = key(Checked(_host, {"type": "string", "pattern": r"^[^\s:/]+$|^[0-9A-Fa-f:.]+$"}),
                    "broker hostname or IP address (no scheme, no port)")
    port: int = key(Int(1, 65535), "broker port", default=1883)
    keepalive_s: int = key(Int(5, 3600, "seconds"), "MQTT keepalive", default=30)
    username: str | None = key(Text(), "MQTT username", default=None)
    password: Secret | None = key(SecretKind(), "MQTT password (needs username)", default=None)
    session_expiry_s: int = key(Int(0, 2**32 - 1, "seconds"),
                                "how long the broker keeps the session", default=86400)
    tls: MqttTls | None = key(Table(MqttTls), "TLS to the broker", default=None)
    outbox_max_results: int = key(Int(10, 10_000_000, "results"),
                                  "results held while the broker is away", default=10_000)
    outbox_max_mib: int = key(Int(1, 100_000, "MiB"), "outbox size on disk", default=50)
    drain_rate_per_s: float = key(Number(0, 10_000, "messages per second", exclusive_low=True),
                                  "held results sent at most this fast", default=20.0)
    recording_max_kib: int = key(Int(0, 65_536, "KiB; 0: no uploads"),
                                 "a failed call's recording, to ops; 0: none", default=1024)


@table
class SipAccount:
    """[sip]: the SIP account the probe calls from."""

    transport: str = key(Choice(TRANSPORTS), "SIP transport", default="udp")
    local_address: str = key(Checked(_ip_literal, {"type": "string"}),
                             "IPv4/IPv6 literal address to bind", default="0.0.0.0")
    local_port: int = key(Int(0, 65535, "0 = any free port"), "SIP port; 0 = any free port",
                          default=5060)
    rtp_port: int = key(Checked(_rtp_port, {"type": "integer", "anyOf": [
        {"const": 0}, {"minimum": 1024, "maximum": 65534}]}),
        "first RTP port; 0 = any", default=4000)
    identity: str | None = key(SIP_URI, 'SIP URI put in From, e.g. "sip:probe-17@pbx.example.com"',
                               default=None)
    registrar: str | None = key(SIP_URI, "SIP URI of the registrar; absent: no registration",
                                default=None)
    username: str | None = key(Text(), "digest auth user", default=None)
    realm: str = key(Text(), "digest auth realm", default="*")
    password: Secret | None = key(SecretKind(), "digest auth password (needs username)",
                                  default=None)
    register_timeout_s: float = key(Number(0, 120, "seconds", exclusive_low=True),
                                    "how long a registration may take", default=10.0)


@table
class Expectations:
    """[targets.expect]: what a working hotline does."""

    max_post_dial_delay_ms: int = key(Int(1, 120_000, "milliseconds"),
                                      "dial -> first ringback (INVITE -> first 18x)", default=5000)
    max_ring_s: float = key(Number(0, 600, "seconds", exclusive_low=True),
                            "ringing longer: the probe hangs up, outcome no_answer", default=30.0)
    hold_s: float = key(Number(0, 3600, "seconds"),
                        "how long to stay on the line after answer", default=10.0)
    require_media: bool = key(Bool(), "answered calls must deliver audio", default=True)


declare(Thresholds, {
    "min_mos": Key(Number(1, 5, "MOS"), "MOS below: degraded"),
    "max_loss_percent": Key(Number(0, 100, "percent"), "packet loss above: degraded"),
    "max_jitter_ms": Key(Number(0, 10_000, "milliseconds"), "jitter above: degraded"),
    "weak_signal_dbm": Key(Number(-150, 0, "dBm"), "GSM signal below: weak"),
    "slow_answer_ms": Key(Int(1, 600_000, "milliseconds"),
                          "answer later than this: slow; absent: half of the ring limit"),
    "min_level_dbfs": Key(Number(-100, 0, "dBFS"), "speech level below: too quiet"),
    "max_clipping_percent": Key(Number(0, 100, "percent"), "clipped samples above: degraded"),
    "down_after": Key(Int(1, 100, "cycles"), "failures needed ..."),
    "down_window": Key(Int(1, 100, "cycles"), '... among this many latest cycles: "down"'),
    "queue_prompts": Key(PROMPT_NAMES, "prompts that mean the hotline queues the call"),
    "closed_prompts": Key(PROMPT_NAMES, "prompts that mean the hotline is closed"),
})


@table
class Target:
    """[[targets]]: one hotline number to test-call."""

    name: str = key(Matching(
        TARGET_NAME_RE,
        'must be 1-63 characters: lowercase letters, digits, "_" or "-", starting with a '
        "letter or digit"), "the target's name in results and commands")
    sip_uri: str | None = key(SIP_URI, 'the SIP URI called over channel "sip"', optional=True)
    number: str | None = key(Matching(
        NUMBER_RE,
        'must be 2 to 32 of the digits 0-9, "*" and "#", optionally after a leading "+" '
        "(no spaces or dashes)"), 'the number dialled over "gsm" and "analog"', optional=True)
    channels: tuple[str, ...] = key(OwnReader({
        "type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(CHANNELS)}}),
        "the channels to call over, each at most once")
    interval_s: int = key(Int(30, 86400, "seconds"), "one call this often", default=900)
    expect: Expectations = key(Table(Expectations), "what a working hotline does",
                               default_factory=Expectations)
    dtmf: str | None = key(Matching(DTMF_RE, 'must be 1 to 32 of the DTMF digits 0-9 * # A-D'),
                           'digits sent after answer (IVR navigation), e.g. "1" or "2#"',
                           default=None)
    dtmf_after_s: float = key(Number(0, 600, "seconds"),
                              "seconds after answer before the digits are sent", default=2.0)
    zone: str | None = key(ZONE, "tone plan (ISO 3166 code) of this target's network", default=None)
    expected_prompts: tuple[str, ...] = key(PROMPT_NAMES,
                                            "names of the prompts that should play", default=())
    diagnose: Thresholds = key(Table(Thresholds), "thresholds of the diagnosis",
                               default_factory=Thresholds)


@table
class LineConfig:
    """[line]: the analog line read through the probe board (see probe/board/line.py)."""

    adc_channel: int = key(MCP3008_CHANNEL, "MCP3008 channel of the tip-ring front end", default=0)
    reference_channel: int = key(MCP3008_CHANNEL,
                                 "MCP3008 channel wired to the 1.5 V mid reference (self-test)",
                                 default=1)
    sample_rate_hz: int = key(Int(50, 2000, "samples per second"), "line samples per second",
                              default=200)
    window_s: float = key(Number(0.05, 2, "seconds"),
                          "analysis window: DC level, AC (ringing) RMS and frequency", default=0.2)
    zero_code: float = key(Number(0, 1023, "ADC counts"),
                           "calibration: ADC code of 0 V on the line", default=511.5)
    volts_per_count: float = key(Number(0, 5, "volts", exclusive_low=True),
                                 "calibration: line volts per ADC count", default=0.4840775)
    no_voltage_below_v: float = key(VOLTS, "|V| below: no voltage (cut line, unplugged)",
                                    default=2.5)
    off_hook_below_v: float = key(VOLTS, "|V| below (and above no_voltage): off-hook, in use",
                                  default=15.0)
    idle_above_v: float = key(VOLTS, "|V| above: on-hook idle; between: low voltage", default=36.0)
    ringing_above_vrms: float = key(VOLTS, "AC RMS at 14-70 Hz above: ringing", default=20.0)
    hysteresis_v: float = key(Number(0, 20, "volts"),
                              "thresholds move by this much away from the current state",
                              default=1.5)
    settle_s: float = key(SECONDS_60, "a new state must last this long before it is reported",
                          default=0.4)
    fault_settle_s: float = key(SECONDS_60, "... and this long for low_voltage / no_voltage",
                                default=2.0)
    ring_hold_s: float = key(SECONDS_60, "ringing persists across cadence gaps this long",
                             default=6.0)
    reference_tolerance_counts: int = key(Int(1, 256, "ADC counts"),
                                          "reference channel must read 512 +- this", default=16)


@table
class IndicatorConfig:
    """[indicator]: status LED and buzzer on the probe board (see probe/board/indicator.py)."""

    led: str = key(Choice(LED_KINDS), "the status LED fitted", default="rgb")
    # BCM GPIO numbers; defaults are hardware/pinmap.toml's
    red_pin: int = key(LED_GPIO, "BCM GPIO of the RGB LED's red", default=22)
    green_pin: int = key(LED_GPIO, "BCM GPIO of the RGB LED's green", default=23)
    blue_pin: int = key(LED_GPIO, "BCM GPIO of the RGB LED's blue", default=24)
    led_pin: int = key(LED_GPIO, 'BCM GPIO of the single LED (led = "single")', default=23)
    buzzer_pin: int | None = key(LED_GPIO, "BCM GPIO of the buzzer", default=18, switch="buzzer",
                                 switch_doc="false: no buzzer fitted")
    button_pin: int | None = key(LED_GPIO, "BCM GPIO of the silence button",
                                 default=27, switch="button",
                                 switch_doc="false: no silence button fitted")
    quiet_hours: tuple[str, str] | None = key(Checked(_quiet_hours, {
        "type": "string",
        "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"}),
        '"HH:MM-HH:MM", local time: the buzzer is silent', default=None)
    alarm_on: tuple[str, ...] = key(Checked(_alarm_on, {
        "type": "array", "uniqueItems": True, "items": {"enum": list(ALARM_STATUSES)}}),
        "statuses that sound the buzzer (empty: never)",
        default=("down", "fault_line", "fault_modem", "fault_probe"))
    alarm_repeat_s: int = key(Int(0, 86400, "seconds; 0 = once"),
                              "repeat the alarm this often while it lasts; 0 = once", default=1800)
    alarm_repeat_max: int = key(Int(0, 1000, "0 = no limit"),
                                "at most this many repeats per episode; 0 = no limit", default=3)


@table
class ModemConfig:
    """[modems.gsm] / [modems.analog]: a voice modem (see probe/dial/modem.py)."""

    kind: str  # "gsm" | "analog": the table's name, the channel it serves
    port: str = key(SERIAL_URL, 'pyserial URL: "/dev/serial/by-id/usb-SimTech...-if02-port0", '
                    '"rfc2217://h:p"')
    model: str = key(_ModemModel(), '"auto" (AT+CGMI/AT+CGMM/ATI pick the profile) or a profile',
                     default="auto")
    baud: int = key(Checked(_baud, {"enum": list(MODEM_BAUDS)}), "serial speed", default=115200)
    power_pin: int | None = key(MODEM_GPIO, "BCM GPIO driving the power key (via a transistor)",
                                default=None)
    power_pulse_s: float = key(Number(0, 10, "seconds", exclusive_low=True),
                               "power key press; SIM800 toggles on a press of >= 1 s", default=1.2)
    status_pin: int | None = key(MODEM_GPIO, "BCM GPIO reading the modem's STATUS (high = on)",
                                 default=None)
    reset_pin: int | None = key(MODEM_GPIO, "BCM GPIO driving RESET (used before the power key)",
                                default=None)
    boot_wait_s: float = key(Number(1, 120, "seconds"),
                             "after a power cycle, how long AT may take to answer", default=15.0)
    # [modems.gsm] only
    audio_port: str | None = key(SERIAL_URL, "pyserial URL of the PCM voice port (SIMCom if04)",
                                 default=None, only=("gsm",))
    # ALSA capture device ("hw:1,0", "plughw:CARD=Device,DEV=0") recording the call when the
    # modem offers no audio of its own (SIM800 or generic modem wired to a USB sound card)
    alsa_device: str | None = key(Checked(_alsa_device, {
        "type": "string", "pattern": "^[A-Za-z0-9_.:,=/-]+$"}),
        "ALSA capture device recording the call when the modem has no audio port", default=None,
        only=("gsm",))
    register_wait_s: float = key(Number(0, 600, "seconds"),
                                 "wait this long for a modem still searching (+CREG 2)",
                                 default=30.0,
                                 only=("gsm",))
    sim_pin: Secret | None = key(SecretKind(), "entered when the SIM asks for it (never logged)",
                                 default=None, only=("gsm",))
    # [modems.analog] only
    ringback_silence_s: float = key(Number(0.5, 25.5, "seconds"),
                                    "answer declared this long after ringback stops", default=7.0,
                                    only=("analog",))


@table
class AudioConfig:
    """[audio]: how recorded calls are heard (see probe/audio/)."""

    zone: str | None = key(ZONE, "tone plan (ISO 3166 alpha-2); absent: name what is "
                           "unambiguous", default=None)
    prompts_dir: Path | None = key(FilePath(), "reference prompts (<name>.wav); absent: "
                                   "<state_dir>/prompts", default=None)
    quality: str = key(Choice(QUALITY_METHODS), "full-reference score of the matched prompt",
                       default="visqol")
    vad_model: bool = key(Bool(), "Silero VAD on what the energy gate and tone mask leave",
                          default=True)
    jitter_buffer_ms: float = key(Number(0, 1000, "milliseconds"),
                                  "E-model: receive buffer depth", default=60.0)


@table
class HomeAssistantConfig:
    """[homeassistant]: MQTT discovery for Home Assistant (see probe/uplink/homeassistant.py)."""

    enabled: bool = key(Bool(), "off by default: a fleet's central broker has no Home Assistant",
                        default=False)
    discovery_prefix: str = key(Matching(
        HA_PREFIX_RE, 'must be one or more topic levels of letters, digits, "_" or "-" '
        '(e.g. "homeassistant"), without wildcards or empty levels'),
        "Home Assistant's discovery prefix", default="homeassistant")


@table
class Config:
    """A probe's configuration file."""

    probe: ProbeIdentity = key(Table(ProbeIdentity), "who this probe is")
    mqtt: MqttConfig | None = key(Table(MqttConfig), "the broker; absent: results stay local",
                                  optional=True)
    sip: SipAccount | None = key(Table(SipAccount), 'required when a target uses "sip"',
                                 optional=True)
    targets: tuple[Target, ...] = key(Table(Target, array=True), "the hotlines to test-call")
    source: str = "<memory>"
    line: LineConfig | None = key(Table(LineConfig), "the probe board's line interface",
                                  default=None)
    indicator: IndicatorConfig | None = key(Table(IndicatorConfig), "status LED and buzzer",
                                            default=None)
    modems: Mapping[str, ModemConfig] = key(
        Variants(ModemConfig, MODEM_KINDS), "the voice modems, by the channel they serve",
        default_factory=dict)
    audio: AudioConfig = key(Table(AudioConfig), "how recorded calls are heard",
                             default_factory=lambda: AudioConfig())
    homeassistant: HomeAssistantConfig = key(
        Table(HomeAssistantConfig), "MQTT discovery for Home Assistant",
        default_factory=lambda: HomeAssistantConfig())

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


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file (probe/schema/config-v1.json), generated from
    the declarations above: every key's type, range, default and description; no other key.
    Rules across keys (a channel needing [sip], bands in order, pins once) are the reader's."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://hotline-probe.invalid/schema/config-v1.json",
        "title": "hotline-probe configuration (probe.toml), version 1",
        **table_schema(Config),
    }


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
    ctx = Ctx(
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        environ=os.environ if environ is None else environ,
    )
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError([("(file)", "the top level must be a table")], source)
    top = _Table(data, "", [f.name for f, _ in keys_of(Config)], problems)

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
        line = _line(section, ctx)
    if top.has("indicator") and (section := top.section("indicator", "[indicator]")):
        indicator = _indicator(section, ctx)
    modems: dict[str, ModemConfig] = {}
    if top.has("modems") and (section := top.section("modems", "[modems.gsm]")):
        modems = _modems(section, ctx)
    audio = AudioConfig()
    if top.has("audio") and (section := top.section("audio", "[audio]")):
        audio = _audio(section, ctx) or audio
    homeassistant = HomeAssistantConfig()
    if top.has("homeassistant") and (section := top.section("homeassistant",
                                                            "[homeassistant]")):
        homeassistant = _homeassistant(section, ctx, probe, mqtt) or homeassistant
    targets = _targets(top, problems, ctx)

    sip_users = _channel_users(top.data.get("targets"), "sip")
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


def _sub(t: _Table, name: str, header: str, read: Callable[[_Table], Any], absent: Any) -> Any:
    """The sub-table ``name`` read by ``read``; ``absent`` when it is not there, None when it
    is not a table (a problem recorded) or ``read`` found problems."""
    if not t.has(name):
        return absent
    section = t.section(name, header)
    return read(section) if section else None


def _probe(t: _Table, ctx: Ctx) -> ProbeIdentity | None:
    values = t.read(ProbeIdentity, ctx)
    return ProbeIdentity(**values) if t.valid else None


def _mqtt(t: _Table, ctx: Ctx) -> MqttConfig:
    values = t.read(MqttConfig, ctx, own={
        "tls": lambda: _sub(t, "tls", "[mqtt.tls]", lambda s: _mqtt_tls(s, ctx), None)})
    mqtt = MqttConfig(**values)
    _require_username(t, "password", "password_file", "password_env")
    _recording_fits_outbox(t, mqtt)
    return mqtt


def _recording_fits_outbox(t: _Table, mqtt: MqttConfig) -> None:
    """A recording larger than the whole outbox could never be queued: say so now."""
    kib, mib = mqtt.recording_max_kib, mqtt.outbox_max_mib
    if isinstance(kib, int) and isinstance(mib, int) and kib > mib * 1024:
        t.problem("recording_max_kib", f"must not exceed outbox_max_mib ({mib} MiB = "
                  f"{mib * 1024} KiB), got {kib}")


def _mqtt_tls(t: _Table, ctx: Ctx) -> MqttTls:
    return MqttTls(**t.read(MqttTls, ctx))


def _require_username(t: _Table, *needing: str) -> None:
    """A digest/MQTT password (or a registrar) means nothing without a username."""
    if not t.has("username"):
        needs = [k for k in needing if t.has(k)]
        if needs:
            t.problem("username", f"missing: required when {' and '.join(needs)} is set")


def _sip(t: _Table, ctx: Ctx) -> SipAccount:
    account = SipAccount(**t.read(SipAccount, ctx))
    _require_username(t, "registrar", "password", "password_file", "password_env")
    return account


def _line(t: _Table, ctx: Ctx) -> LineConfig | None:
    values = t.read(LineConfig, ctx)
    if not t.valid:
        return None
    line = LineConfig(**values)
    if line.adc_channel == line.reference_channel:
        t.problem("reference_channel", f"must differ from adc_channel ({line.adc_channel})")
    # The magnitude bands must be in order, with room for the hysteresis on both sides.
    bands = [("no_voltage_below_v", line.no_voltage_below_v),
             ("off_hook_below_v", line.off_hook_below_v), ("idle_above_v", line.idle_above_v)]
    for (low_key, low), (name, value) in itertools.pairwise(bands):
        if value - low <= 2 * line.hysteresis_v:
            t.problem(name, f"must be more than {t.key(low_key)} ({low:g}) plus twice "
                            f"hysteresis_v ({line.hysteresis_v:g}), got {value:g}")
    if line.window_s * line.sample_rate_hz < 10:
        t.problem("window_s", f"must hold at least 10 samples at sample_rate_hz "
                              f"{line.sample_rate_hz}, got {line.window_s:g}")
    for name in ("settle_s", "fault_settle_s"):
        if getattr(line, name) < line.window_s:
            t.problem(name, f"must be at least window_s ({line.window_s:g}), "
                            f"got {getattr(line, name):g}")
    return line if t.valid else None


def _indicator(t: _Table, ctx: Ctx) -> IndicatorConfig | None:
    from probe.board.pins import DEFAULT_PINS, SYSTEM_PINS

    values = t.read(IndicatorConfig, ctx)
    buzzer, button = values.pop("buzzer"), values.pop("button")
    if not t.valid:
        return None
    indicator = IndicatorConfig(**values)
    # Only the pins in use must be free: no pin twice, none of the board's system pins,
    # none the board wires to the modem.
    used = {"rgb": ["red_pin", "green_pin", "blue_pin"], "single": ["led_pin"],
            "none": []}[indicator.led]
    used += (["buzzer_pin"] if buzzer else []) + (["button_pin"] if button else [])
    board = {gpio: f"the board's {name}" for name, gpio in DEFAULT_PINS.items()
             if name.startswith("modem_")}
    seen: dict[int, str] = {}
    for name in used:
        pin = getattr(indicator, name)
        if pin in SYSTEM_PINS:
            t.problem(name, f"GPIO{pin} is reserved ({SYSTEM_PINS[pin]})")
        elif pin in board:
            t.problem(name, f"GPIO{pin} is {board[pin]}")
        elif pin in seen:
            t.problem(name, f"GPIO{pin} is already {t.key(seen[pin])}")
        seen.setdefault(pin, name)
    if not t.valid:
        return None
    return dataclasses.replace(indicator, buzzer_pin=indicator.buzzer_pin if buzzer else None,
                               button_pin=indicator.button_pin if button else None)


def _targets(top: _Table, problems: list[Problem], ctx: Ctx) -> list[Target]:
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
        target = _target(_Table(item, path, None, own), ctx)
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


def _modems(t: _Table, ctx: Ctx) -> dict[str, ModemConfig]:
    t.allow(*MODEM_KINDS)
    modems: dict[str, ModemConfig] = {}
    for kind in MODEM_KINDS:
        if t.has(kind) and (section := t.section(kind, f"[modems.{kind}]")):
            modem = _modem(section, kind, dataclasses.replace(ctx, variant=kind))
            if modem is not None:
                modems[kind] = modem
    return modems


def _modem(t: _Table, kind: str, ctx: Ctx) -> ModemConfig | None:
    modem = ModemConfig(kind=kind, **t.read(ModemConfig, ctx))
    pins: dict[int, str] = {}
    for name in ("power_pin", "status_pin", "reset_pin"):
        value = getattr(modem, name)
        if value is not None and value in pins:
            t.problem(name, f"GPIO {value} is already the {pins[value]}")
        elif value is not None:
            pins[value] = name
    if modem.sim_pin is not None and not re.fullmatch(r"[0-9]{4,8}", modem.sim_pin.reveal()):
        t.problem("sim_pin", "must be 4 to 8 digits (the value is not shown)")
    if modem.status_pin is not None and modem.power_pin is None:
        t.problem("status_pin", "needs power_pin: the status is read to drive the power key")
    return modem if t.valid else None


def _channel_users(raw: Any, channel: str) -> list[str]:
    """Who lists ``channel`` (even in an otherwise broken target): '"name"' or 'targets[i]'."""
    users: dict[str, None] = {}
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        channels = item.get("channels") if isinstance(item, dict) else None
        if isinstance(channels, list) and channel in channels:
            name = item.get("name")
            users[f'"{name}"' if isinstance(name, str) else f"targets[{i}]"] = None
    return list(users)


def _target(t: _Table, ctx: Ctx) -> Target | None:
    values = t.read(Target, ctx, own={
        "channels": lambda: _channels(t),
        "expect": lambda: _sub(t, "expect", "[targets.expect]", lambda s: _expect(s, ctx),
                               Expectations()),
        "diagnose": lambda: _sub(t, "diagnose", "[targets.diagnose]",
                                 lambda s: _thresholds(s, ctx), Thresholds()),
    })
    channels = values["channels"]
    if "sip" in channels and not t.has("sip_uri"):
        t.problem("sip_uri", 'missing: required because channels include "sip"')
    pstn = [c for c in channels if c in ("gsm", "analog")]
    if pstn and not t.has("number"):
        which = " and ".join(f'"{c}"' for c in pstn)
        t.problem("number", f"missing: required because channels include {which}")

    if not t.valid or values["expect"] is None or values["diagnose"] is None:
        return None
    return Target(**values)


def _thresholds(t: _Table, ctx: Ctx) -> Thresholds | None:
    values = t.read(Thresholds, ctx)
    if t.valid and values["down_after"] > values["down_window"]:
        t.problem("down_after", f"must be at most down_window ({values['down_window']}), "
                                f"got {values['down_after']}")
    return Thresholds(**values) if t.valid else None


def _audio(t: _Table, ctx: Ctx) -> AudioConfig | None:
    audio = AudioConfig(**t.read(AudioConfig, ctx))
    return audio if t.valid else None


def _homeassistant(t: _Table, ctx: Ctx, probe: ProbeIdentity | None,
                   mqtt: MqttConfig | None) -> HomeAssistantConfig | None:
    ha = HomeAssistantConfig(**t.read(HomeAssistantConfig, ctx))
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


def _expect(t: _Table, ctx: Ctx) -> Expectations | None:
    expect = Expectations(**t.read(Expectations, ctx))
    return expect if t.valid else None


# --------------------------------------------------------------------------- the table reader


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
        for name in self.data:
            if name not in allowed:
                reason = f"unknown key (allowed: {', '.join(allowed)})"
                close = difflib.get_close_matches(name, allowed, n=1)
                if close:
                    reason += f'; did you mean "{close[0]}"?'
                self.problem(name, reason)

    def key(self, key: str) -> str:
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def problem(self, key: str, reason: str) -> None:
        self.problems.append((self.key(key), reason))

    def read(self, cls: type, ctx: Ctx,
             own: Mapping[str, Callable[[], Any]] | None = None) -> dict[str, Any]:
        """The keys ``cls`` declares (probe/config/keys.py), by field name: any other key
        refused, each value checked (None after a problem), an absent one its default.  A
        switch (``buzzer``) comes under its own name; ``own`` reads the keys its section
        reads itself (sub-tables, ``channels``)."""
        own = own or {}
        keys = keys_of(cls, ctx.variant)
        self.allow(*(name for f, k in keys for name in toml_names(f, k)))
        values: dict[str, Any] = {}
        for f, k in keys:
            if k.switch:
                values[k.switch] = self.get(k.switch, lambda v: Bool().check(v, ctx), True)
            if f.name in own:
                values[f.name] = own[f.name]()
            elif isinstance(k.kind, SecretKind):
                values[f.name] = self.secret(f.name, ctx)
            else:
                assert not isinstance(k.kind, Table | Variants | OwnReader), f.name
                values[f.name] = self.get(f.name, partial(k.kind.check, ctx=ctx),
                                          default_of(f, k))
        return values

    def get(
        self, key: str, check: Check, default: Any = _REQUIRED, *, required: bool = False
    ) -> Any:
        """The checked value of ``key``, its default when absent, None after a problem."""
        if key not in self.data:
            if required or default is _REQUIRED or default is dataclasses.MISSING:
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

    def secret(self, name: str, ctx: Ctx) -> Secret | None:
        secret, problems = resolve_secret(
            self.data, self.path, name, base_dir=ctx.base_dir, environ=ctx.environ
        )
        self.problems.extend(problems)
        return secret


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


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

