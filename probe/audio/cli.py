"""``probe analyze WAV`` and ``probe prompts add|list|show|remove``: the audio analysis by hand.

    probe analyze call.wav --zone DE --prompts /var/lib/hotline-probe/prompts --json
    probe prompts add welcome welcome.wav -c /etc/hotline-probe/probe.toml
    probe prompts list -c /etc/hotline-probe/probe.toml
    probe prompts show welcome
    probe prompts remove welcome

Exit codes follow the ``probe`` command (probe/exitcodes.py): 0 done, 2 usage error
(unreadable WAV, unknown zone, no such prompt), 70 a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from probe.exitcodes import ANALYZE_EPILOG, EXIT_OK, EXIT_USAGE, USAGE_EPILOG
from probe.human import show

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def add_parsers(sub: Any, default_config: str) -> None:
    """Register ``analyze`` and ``prompts`` on the ``probe`` command's sub-parsers."""
    raw = argparse.RawDescriptionHelpFormatter
    an = sub.add_parser("analyze", help="hear a recorded call: tones, speech, prompts, quality",
                        description="Hear a recorded call: tones, SIT, DTMF, speech, level, "
                        "known prompts and quality scores.", epilog=ANALYZE_EPILOG,
                        formatter_class=raw)
    an.add_argument("wav", help="the recording (any WAV: PCM, float, µ-law, A-law; any rate)")
    an.add_argument("--zone", help="tone plan: ISO 3166 country code in any case, or a name or "
                    "alias such as UK (default: none, name only unambiguous patterns)")
    an.add_argument("--prompts", type=Path, help="directory of reference prompts <name>.wav")
    an.add_argument("--answer-at", type=float, metavar="S",
                    help="seconds into the recording where the call was answered")
    an.add_argument("--quality", choices=("visqol", "pesq", "off"), default="visqol",
                    help="full-reference score of the matched prompt (default visqol)")
    an.add_argument("--no-vad-model", action="store_true",
                    help="energy gate only (no Silero VAD)")
    an.add_argument("--json", action="store_true", help="print the analysis as JSON")
    an.set_defaults(func=cmd_analyze)
    _add_prompt_parsers(sub, default_config, raw)


def _add_prompt_parsers(sub: Any, default_config: str, raw: type) -> None:
    pr = sub.add_parser("prompts", help="manage reference prompts: add, list, show, remove",
                        description="Manage the reference prompts the analysis recognises.",
                        epilog=USAGE_EPILOG, formatter_class=raw)
    prsub = pr.add_subparsers(dest="prompts_command", required=True)

    def common(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--prompts", type=Path, help="prompt directory (default: [audio] "
                         "prompts_dir, else <state_dir>/prompts of the configuration)")
        cmd.add_argument("-c", "--config", default=os.environ.get("PROBE_CONFIG",
                                                                  default_config),
                         help="configuration (only to find the prompt directory)")

    def command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        cmd = prsub.add_parser(name, help=help_text, description=help_text[0].upper()
                               + help_text[1:] + ".", epilog=USAGE_EPILOG, formatter_class=raw)
        common(cmd)
        cmd.set_defaults(func=func)
        return cmd

    add = command("add", "register a reference prompt (stored 8 kHz 16-bit)", cmd_prompts_add)
    add.add_argument("name", help="prompt name (letters, digits, '.', '_', '-')")
    add.add_argument("wav", help="the reference recording")
    command("list", "list the reference prompts with their durations", cmd_prompts_list)
    command("show", "show one prompt: file, duration, level",
            cmd_prompts_show).add_argument("name", help="prompt name")
    command("remove", "remove a reference prompt",
            cmd_prompts_remove).add_argument("name", help="prompt name")


def cmd_analyze(args: argparse.Namespace) -> int:
    from probe.audio.analysis import analyze
    from probe.audio.plans import UnknownZone, resolve_zone
    from probe.audio.prompts import PromptLibrary
    from probe.audio.wavio import WavError, load_for_analysis

    try:
        zone = resolve_zone(args.zone) if args.zone else None
    except UnknownZone as exc:
        print(f"probe: --zone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        audio = load_for_analysis(args.wav)
    except (OSError, WavError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.prompts is not None and not args.prompts.is_dir():
        print(f"probe: --prompts: {args.prompts} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    doc = analyze(audio.samples, zone=zone, prompts=PromptLibrary.load(args.prompts),
                  answer_at_s=args.answer_at,
                  quality_method=None if args.quality == "off" else args.quality,
                  use_vad_model=not args.no_vad_model)
    print(json.dumps(doc, indent=2, ensure_ascii=False) if args.json else summarize(doc))
    return EXIT_OK


def cmd_prompts_add(args: argparse.Namespace) -> int:
    from probe.audio.prompts import add_prompt
    from probe.audio.wavio import WavError

    if not _valid_name(args.name):
        return EXIT_USAGE
    try:
        path = add_prompt(_prompt_dir(args), args.name, args.wav)
    except (OSError, WavError, ValueError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"prompt {args.name!r} stored as {path}")
    return EXIT_OK


def cmd_prompts_list(args: argparse.Namespace) -> int:
    directory = _prompt_dir(args)
    paths = sorted(directory.glob("*.wav")) if directory.is_dir() else []
    if not paths:
        print(f"no reference prompts in {directory}")
        return EXIT_OK
    for path in paths:
        print(f"{path.stem:<24} {_describe(path)}")
    return EXIT_OK


def cmd_prompts_show(args: argparse.Namespace) -> int:
    path = _existing_prompt(args)
    if path is None:
        return EXIT_USAGE
    print(f"prompt {args.name!r}: {path}\n  {_describe(path)}")
    return EXIT_OK


def cmd_prompts_remove(args: argparse.Namespace) -> int:
    path = _existing_prompt(args)
    if path is None:
        return EXIT_USAGE
    path.unlink()
    print(f"prompt {args.name!r} removed ({path})")
    return EXIT_OK


def _valid_name(name: str) -> bool:
    import re

    if re.fullmatch(NAME_PATTERN, name):
        return True
    print(f"probe: prompt name {name!r}: 1-64 letters, digits, '.', '_' or '-'", file=sys.stderr)
    return False


def _prompt_dir(args: argparse.Namespace) -> Path:
    """``--prompts``, else the configuration's [audio] prompts_dir or <state_dir>/prompts."""
    if args.prompts is not None:
        return Path(args.prompts)
    from probe.config.model import load_config

    config = load_config(args.config)
    return Path(config.audio.prompts_dir or config.probe.state_dir / "prompts")


def _existing_prompt(args: argparse.Namespace) -> Path | None:
    """The prompt's file, or None (said on stderr, with the known names) when there is none."""
    import difflib

    if not _valid_name(args.name):
        return None
    directory = _prompt_dir(args)
    path = directory / f"{args.name}.wav"
    if path.is_file():
        return path
    known = sorted(p.stem for p in directory.glob("*.wav")) if directory.is_dir() else []
    near = difflib.get_close_matches(args.name, known, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    print(f"probe: no prompt named {args.name!r} in {directory} ({hint}known: "
          f"{', '.join(known) or 'none'})", file=sys.stderr)
    return None


def _describe(path: Path) -> str:
    """Duration and level of a stored prompt, or why it cannot be read."""
    import numpy as np

    from probe.audio.wavio import WavError, load_for_analysis

    try:
        audio = load_for_analysis(path)
    except (OSError, WavError) as exc:
        return f"unreadable: {exc}"
    peak = float(np.max(np.abs(audio.samples))) if audio.samples.size else 0.0
    level = f"peak {20 * np.log10(peak):.1f} dBFS" if peak > 0 else "silent"
    return f"{audio.duration_s:.2f} s, {level}"


def summarize(doc: dict[str, Any]) -> str:
    """The analysis as a few human lines."""
    lines = [f"{doc['duration_s']:.1f} s of audio, zone {doc['zone'] or 'none'}"]
    if not doc["tones"]:
        lines.append("  no tones")
    for t in doc["tones"]:
        extra = (f" code {t['sit_code']} ({t['sit_meaning'] or 'meaning unknown'})"
                 if t["sit_code"] else "")
        if t["cycles"]:
            extra += f", {t['cycles']} cycles"
        if t["candidates"]:
            extra += f", could also be {', '.join(t['candidates'])}"
        freqs = "+".join(f"{f:g}" for f in t["frequencies_hz"])
        lines.append(f"  {t['start_s']:7.2f}-{t['end_s']:7.2f} s  {t['kind']:<12} {freqs} Hz "
                     f"conf {t['confidence']:.2f}{extra}")
    if doc["dtmf"]:
        lines.append(f"  DTMF {''.join(d['digit'] for d in doc['dtmf'])}")
    sp = doc["speech"]
    lines.append(f"  speech: {show(sp['total_s'], 's')} in {len(sp['segments'])} segments "
                 f"({sp['method']})")
    lv = doc["level"]
    lines.append(f"  level {show(lv['rms_dbfs'], 'dBFS', missing='silent')} RMS, peak "
                 f"{show(lv['peak_dbfs'], 'dBFS', missing='silent')}, silence "
                 f"{lv['silence_ratio']:.0%}{', CLIPPED' if lv['clipped'] else ''}")
    pr = doc["prompts"]
    if pr:
        for m in pr["matched"]:
            cut = ", truncated" if m["truncated"] else ""
            lines.append(f"  prompt {m['name']!r} at {show(m['start_s'], 's')}, score "
                         f"{show(m['score'])}, heard {m['coverage']:.0%}{cut}")
        if pr["unknown_greeting"]:
            lines.append("  greeting matches no known prompt")
    fr = doc["quality"]["full_reference"]
    if fr:
        lines.append(f"  quality {show(fr['mos'], missing='not scored')} MOS-LQO "
                     f"({fr['method']}) on {fr['prompt']!r}"
                     + (f": {fr['error']}" if fr["error"] else ""))
    emodel = doc["quality"].get("emodel")
    if emodel and emodel.get("mos") is not None:
        lines.append(f"  quality {emodel['mos']} MOS ({emodel['method']})")
    return "\n".join(lines)
