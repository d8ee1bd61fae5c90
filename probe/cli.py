"""The ``probe`` command.

Exit codes (probe/exitcodes.py): 0 the hotline met the target's expectations, 1 the hotline
failed, 2 usage or configuration error (every problem is printed with its key path), 3 the probe
could not judge (verdict unknown, probe-side fault), 70 the probe crashed (one line; the
traceback with ``-v``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from probe import __version__
from probe.errors import ConfigError, DialerError
from probe.exitcodes import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_UNJUDGED,
    EXIT_USAGE,
    USAGE_EPILOG,
    result_exit_code,
)
from probe.human import show, words

if TYPE_CHECKING:  # heavy or seldom needed: imported where used, so --version stays quick
    import threading

    from probe.config.model import Config, LineConfig, Target
    from probe.dial.dialer import Dialer
    from probe.dial.progress import Progress, Step

DEFAULT_CONFIG = "/etc/hotline-probe/probe.toml"
LINE_EPILOG = """exit codes:
  0   the line is usable (idle, in use, ringing)
  1   a fault of the office's line or of the probe board
  2   usage or configuration error, no [line] section, or no board to read
  70  the probe crashed (one line on stderr; probe -v ... shows the traceback)"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:  # before logging and any probe module: a tenth of a second on a Pi
        print(f"hotline-probe {__version__} (pjproject {_pjproject_version()}, "
              f"Python {sys.version.split()[0]})")
        return EXIT_OK
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(f"{exc.source or 'config'}: {key}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C: the unwinding hung up any call; say so in one line
        print("probe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, its own exit code, the traceback with -v
        return crashed(exc, verbose=args.verbose)


def _pjproject_version() -> str:
    """pjproject's version from the bare library: probe.dial.sip would also load the config
    model and the diagnosis rules (half of ``--version``'s time).  Unless that module is
    loaded, no endpoint runs in this process, so a short-lived one may be made here (pjsua2
    allows one at a time)."""
    sip = sys.modules.get("probe.dial.sip")
    if sip is not None:  # main() called where a SIP stack may run: its copy, under its lock
        return str(sip.pjproject_version())
    import pjsua2

    return str(pjsua2.Endpoint().libVersion().full)


def crashed(exc: Exception, *, verbose: bool) -> int:
    """Report an unexpected exception in one line (the traceback only with ``-v``)."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if verbose else " (probe -v ... shows the traceback)"
    print(f"probe: internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
    return EXIT_SOFTWARE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probe", description="Test-call a customer hotline and "
                                "report whether it works, and if not, why.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print versions and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command")
    raw = argparse.RawDescriptionHelpFormatter

    def with_config(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("-c", "--config", default=os.environ.get("PROBE_CONFIG", DEFAULT_CONFIG),
                         help=f"TOML configuration (default: $PROBE_CONFIG or {DEFAULT_CONFIG})")

    check = sub.add_parser("check-config", help="validate a configuration file",
                           description="Validate a configuration file and print every problem "
                           "with its key path; warn (exit 0) about what this machine lacks "
                           "now, such as a modem port that does not exist.",
                           epilog=USAGE_EPILOG, formatter_class=raw)
    with_config(check)
    check.set_defaults(func=cmd_check_config)

    call = sub.add_parser("call", help="place one test call now and print its result",
                          description="Place one test call to a configured target now and print "
                          "its result (a summary, or the JSON document with --json), with one "
                          "line per step on stderr when that is a terminal. When the probe "
                          "daemon runs (it answers on probe.control_socket), the call is handed "
                          "to it: placed on its line after any call in progress, and published "
                          "like every result; the output and the exit code are the same. "
                          "Without a daemon, a SIP or modem port held by another process is "
                          "named (exit 3).",
                          epilog=EPILOG, formatter_class=raw)
    with_config(call)
    call.add_argument("target", help="target name from the configuration")
    call.add_argument("--channel", choices=("sip", "gsm", "analog"),
                      help="channel to call over (default: the target's first channel)")
    call.add_argument("--json", action="store_true", help="print the result as JSON")
    call.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="one line per step of the call on stderr (default: when stderr is "
                      "a terminal)")
    call.set_defaults(func=cmd_call)

    run = sub.add_parser("run", help="run the schedule and publish results (the daemon)",
                         description="Run the schedule and publish results over MQTT (the "
                         "daemon). With --once: call every target over every channel once, then "
                         "stop; the exit code covers all those calls (any failure: 1, else any "
                         "call not judged: 3). Without --once: 0 on a planned stop.",
                         epilog=EPILOG, formatter_class=raw)
    with_config(run)
    run.add_argument("--once", action="store_true",
                     help="call every target over every channel once, publish, then stop")
    run.add_argument("--log-format", choices=("json", "text"),
                     default="text" if sys.stdout.isatty() else "json",
                     help="log lines on stdout: JSON for journald (default when not a terminal)")
    run.set_defaults(func=cmd_run)

    schema = sub.add_parser("schema", help="print the result JSON Schema",
                            description="Print the result JSON Schema.", epilog=USAGE_EPILOG,
                            formatter_class=raw)
    schema.set_defaults(func=cmd_schema)

    config_schema = sub.add_parser(
        "config-schema", help="print the configuration's JSON Schema (for editors)",
        description="Print the JSON Schema of the TOML configuration: every key's type, range, "
        "default and description (probe/schema/config-v1.json). Point an editor's TOML "
        "support at it; check-config still has the last word (rules across keys, files, "
        "secrets).", epilog=USAGE_EPILOG, formatter_class=raw)
    config_schema.set_defaults(func=cmd_config_schema)

    demo = sub.add_parser("demo", help="run test calls against local stand-ins (make demo)",
                          description="Run test calls against local stand-ins (make demo).",
                          epilog=USAGE_EPILOG, formatter_class=raw)
    demo.set_defaults(func=cmd_demo)

    line = sub.add_parser("line", help="read the analog line through the probe board",
                          description="Read the analog line through the probe board: its state "
                          "(idle, in use, ringing, cut, low voltage, reversed), volts and "
                          "polarity.", epilog=LINE_EPILOG, formatter_class=raw)
    with_config(line)
    line.add_argument("--json", action="store_true", help="print the line facts as JSON")
    line.add_argument("--seconds", type=float, default=None,
                      help="how long to sample (default: enough to settle a fault, 2.5 s)")
    line.add_argument("--raw", action="store_true",
                      help="mean ADC codes instead of a state (calibration, hardware/README.md)")
    line.add_argument("--sim", metavar="SCENARIO",
                      choices=("idle", "off-hook", "ringing", "reversed", "cut", "low",
                               "dead-board"),
                      help="read a simulated board instead of the hardware: %(choices)s")
    line.set_defaults(func=cmd_line)

    from probe.audio.cli import add_parsers as add_audio_parsers

    add_audio_parsers(sub, DEFAULT_CONFIG)  # probe analyze, probe prompts add

    from probe.ops.cli import add_parsers as add_ops_parsers

    add_ops_parsers(sub)  # probe ops serve | check-config | migrate | user-add | config-schema
    return p


def cmd_check_config(args: argparse.Namespace) -> int:
    from probe.config.model import load_config
    from probe.dial.modem import port_missing

    config = load_config(args.config)
    channels = sorted({c for t in config.targets for c in t.channels})
    print(f"{config.source}: OK — probe {config.probe.id} at {config.probe.site!r}, "
          f"{len(config.targets)} target(s) over {', '.join(channels)}")
    # Valid, but not usable on this machine as it is now: warned, and still exit 0 (a modem
    # may be plugged in later; the daemon reopens its port before every call).
    for name, modem in config.modems.items():
        if (missing := port_missing(modem.port)) is not None:
            print(f"{config.source}: warning: modems.{name}.port: {missing}", file=sys.stderr)
    return EXIT_OK


def cmd_call(args: argparse.Namespace) -> int:
    """``probe call``: handed to the running daemon when one answers on the control socket
    (it holds the SIP port and the modems), else placed by this process."""
    from probe.config.model import load_config
    from probe.daemon import control

    config = load_config(args.config)
    target = config.target(args.target)
    channel = args.channel or target.channels[0]
    if channel not in target.channels:
        raise ConfigError([(f"targets.{target.name}.channels",
                            f"target has no {channel!r} channel (has: "
                            f"{', '.join(target.channels)})")], config.source)
    progress = _progress(args)
    socket_path = config.probe.control_path
    try:
        answer = control.request(socket_path, "run", {"target": target.name, "channel": channel},
                                 progress)
    except KeyboardInterrupt:  # the daemon owns the call: it goes on and is published
        print("probe: interrupted; the call goes on in the probe daemon, which publishes its "
              "result", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PermissionError:  # the socket, or the state directory it is in, is not ours
        print(f"probe: cannot reach the probe daemon's control socket {socket_path}: "
              "permission denied; run probe call as the probe's user or a member of its group "
              "(sudo -u hotline-probe probe call ...)", file=sys.stderr)
        return EXIT_USAGE
    if answer is None:
        return _call_here(args, config, target, channel, progress)
    doc = answer.get("document")
    if not answer.get("ok") or not isinstance(doc, dict):
        print(f"probe: the probe daemon could not place the call: "
              f"{answer.get('reason') or 'no reason given'}", file=sys.stderr)
        return EXIT_UNJUDGED
    print(json.dumps(doc, indent=2) if args.json else summarize(doc))
    return result_exit_code(doc)


def _call_here(args: argparse.Namespace, config: Config, target: Target, channel: str,
               progress: Progress | None) -> int:
    """The call placed by this process: no daemon answered on the control socket."""
    from probe.diagnosis.history import VerdictBook
    from probe.diagnosis.rules import ProbeFacts
    from probe.dial.busy import serial_port_busy, sip_port_busy
    from probe.dial.runner import prepare_state_dir, run_call, start_modem_dialer, start_sip_dialer

    audio_dir = prepare_state_dir(config)
    # Before the SIP stack or the modem is started: the daemon holds the port (or another
    # program does), and pjsip's "Address already in use" would not say who, nor what to do.
    modem = config.modem(channel)
    if channel == "sip":
        busy = sip_port_busy(config.sip) if config.sip is not None else None
    else:
        busy = serial_port_busy(modem.port, f"modems.{channel}.port") if modem else None
    if busy is not None:
        return _port_busy(busy, config)
    try:
        dialer: Dialer | None = (start_sip_dialer(config) if channel == "sip"
                                 else start_modem_dialer(config, channel))
        if dialer is None:
            raise ConfigError([(channel if channel == "sip" else f"modems.{channel}",
                                f"target {target.name!r} calls over {channel}, but no "
                                f"{channel} section is configured")], config.source)
        interrupted = _hang_up_on_ctrl_c(dialer)
        try:
            facts = ProbeFacts(sip_registration=dialer.facts().get("registration"))
            doc = run_call(config, target, channel, dialer, audio_dir, facts=facts,
                           verdicts=VerdictBook(config.probe.state_dir / "verdicts.json",
                                                config.probe.language),
                           progress=progress)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            dialer.close()
    except DialerError as exc:  # the SIP stack or the modem would not serve: a probe fault
        print(f"probe: could not place the call: {exc}", file=sys.stderr)
        return EXIT_UNJUDGED
    print(json.dumps(doc, indent=2) if args.json else summarize(doc))
    if interrupted.is_set():
        print("probe: interrupted: the call was hung up", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result_exit_code(doc)


def _hang_up_on_ctrl_c(dialer: Dialer) -> threading.Event:
    """The first Ctrl-C hangs the call up cleanly (it is still measured and shown, outcome
    ``aborted``); a second one stops at once.  A KeyboardInterrupt raised into the SIP stack's
    callbacks instead would be swallowed there and leave pjsip half torn down."""
    import threading

    interrupted = threading.Event()

    def hang_up(signum: int, frame: Any) -> None:
        interrupted.set()
        dialer.abort()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, hang_up)
    return interrupted


def _port_busy(busy: str, config: Config) -> int:
    print(f"probe: could not place the call: {busy}, and no probe daemon answered on "
          f"{config.probe.control_path} to take the call.\n"
          "  If that is the probe daemon, stop it (sudo systemctl stop hotline-probe) and call "
          "again, or run it with this configuration so that probe call hands the call to it; "
          "otherwise stop that process.", file=sys.stderr)
    return EXIT_UNJUDGED


def _progress(args: argparse.Namespace) -> Progress | None:
    """Where the call's steps go: stderr when asked, or by default when it is a terminal
    (a pipe or a log gets the summary alone)."""
    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    return print_step if wanted else None


def print_step(step: Step) -> None:
    print(step.text, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from probe.daemon.logs import configure_logging
    from probe.daemon.run import run_daemon

    configure_logging(args.log_format, verbose=args.verbose)
    return run_daemon(args.config, once=args.once)


def cmd_line(args: argparse.Namespace) -> int:
    """``probe line``: exit 0 the line is usable (idle, in use, ringing), 1 a local line or
    board fault, 2 no ``[line]`` section, a configuration error, or no board to read."""
    from probe.board.line import format_report, line_report
    from probe.config.model import load_config

    config = load_config(args.config)
    if config.line is None:
        raise ConfigError([("line", "no [line] section: this probe has no line interface "
                            "configured (see hardware/README.md)")], config.source)
    try:
        if args.sim is not None:
            doc, code = _simulated_line_report(config.line, args.seconds, args.sim, args.raw)
        else:
            doc, code = line_report(config.line, args.seconds, raw=args.raw)
    except Exception as exc:  # gpiozero: no pin factory, no spidev, permission denied
        if args.sim is not None:
            raise
        print(f"probe: cannot read the line interface: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(doc, indent=2) if args.json else format_report(doc))
    return code


def _simulated_line_report(cfg: LineConfig, seconds: float | None, scenario: str,
                           raw: bool) -> tuple[dict[str, Any], int]:
    """``probe line --sim SCENARIO``: the report read from a simulated board on a simulated
    clock.  The one place production code reaches into probe/sim (tests/test_layering.py)."""
    from probe.board.line import line_report
    from probe.sim.line import open_scenario

    board, clock = open_scenario(scenario)
    reader = board.reader(cfg.adc_channel, cfg.reference_channel)
    try:
        return line_report(cfg, seconds, raw=raw, reader=reader, clock=clock, sleep=clock.sleep)
    finally:
        reader.close()
        board.close()


def cmd_schema(args: argparse.Namespace) -> int:
    from probe.results.document import result_schema

    print(json.dumps(result_schema(), indent=2))
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    from probe.config.model import config_schema

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from probe.demo.script import run_demo

    return run_demo()


def summarize(doc: dict[str, Any]) -> str:
    """A result as a few human lines (the JSON carries everything); never ``None``/``False``."""
    t = doc["timings_ms"]
    verdict = "OK" if doc["expectations"]["met"] else "FAILED"
    lines = [
        f"{doc['target']} over {doc['channel']}: {doc['outcome']} — {verdict}",
        f"  post-dial delay {_ms(t['post_dial_delay'])}, answer after "
        f"{_ms(t['time_to_answer'])}, rang {_ms(t['ring_duration'])}, "
        f"talked {_ms(t['talk_duration'])}",
        *_sip_lines(doc.get("sip")), *_modem_lines(doc.get("modem")),
        *_rtp_lines(doc.get("rtp")), *_heard_lines(doc.get("analysis")),
    ]
    for check in doc["expectations"]["checks"]:
        if not check["met"]:
            lines.append(f"  failed {check['check']}: measured {show(check['measured'])}, "
                         f"limit {show(check['limit'], missing='none')}")
    lines += _diagnosis_lines(doc.get("diagnosis"))
    if doc.get("clock_synced") is False:
        lines.append("  clock not synchronised: timestamps may be off (durations are not)")
    return "\n".join(lines)


def _sip_lines(sip: dict[str, Any] | None) -> list[str]:
    if not sip:
        return []
    return [f"  SIP final {show(sip['final_code'], missing='none')} "
            f"{sip['final_reason'] or ''}".rstrip()]


def _modem_lines(modem: dict[str, Any] | None) -> list[str]:
    if not modem:
        return []
    cause = (f"cause {modem['cause']} {modem['cause_text'] or ''}".rstrip()
             if modem["cause"] is not None else "no end cause")
    line = (f"  modem {modem['profile']} ({modem['model'] or '?'}): "
            f"{modem['registration_state'] or '-'}, {modem['operator'] or '-'} "
            f"{modem['access_technology'] or ''}".rstrip()
            + f", signal {show(modem['signal_dbm'], 'dBm')}; "
            f"end {words(modem['result'])}, {cause}")
    return [line + (f"; error {modem['error']}" if modem["error"] else "")]


def _rtp_lines(rtp: dict[str, Any] | None) -> list[str]:
    if not rtp:
        return []
    return [f"  RTP {words(rtp['codec'])}: {show(rtp['packets_received'])} received, "
            f"{show(rtp['packets_lost'])} lost, jitter {show(rtp['jitter_mean_ms'], 'ms')} mean"]


def _heard_lines(analysis: dict[str, Any] | None) -> list[str]:
    """What was heard: tones, prompts, speech, MOS with its method."""
    if not analysis:
        return []
    tones = ", ".join(t["kind"] for t in analysis.get("tones", [])) or "no tones"
    speech = analysis.get("speech") or {}
    heard = (f"speech {show(speech.get('total_s'), 's')}" if speech.get("present")
             else "no speech")
    prompts = analysis.get("prompts") or {}
    matched = ", ".join(repr(m["name"]) for m in prompts.get("matched", []))
    if matched:
        heard += f", prompt {matched}"
    elif prompts.get("unknown_greeting"):
        heard += ", a greeting matching no known prompt"
    return [f"  heard: {tones}; {heard}{_mos(analysis.get('quality') or {})}"]


def _mos(quality: dict[str, Any]) -> str:
    for key in ("full_reference", "emodel"):
        score = quality.get(key)
        if score and score.get("mos") is not None:
            return f"; MOS {score['mos']} ({score.get('method') or key})"
    return ""


def _diagnosis_lines(diagnosis: dict[str, Any] | None) -> list[str]:
    if not diagnosis:
        return []
    lines = [f"  verdict {diagnosis['verdict'].upper()}: {diagnosis['summary']}"]
    for cause in diagnosis["causes"]:
        lines.append(f"    [{cause['code']}] {cause['summary']}")
        lines.append(f"      -> {cause['actor']}: {cause['remedy']}")
    return lines


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


if __name__ == "__main__":
    sys.exit(main())
