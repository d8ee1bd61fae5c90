"""``probe analyze WAV`` and ``probe prompts add NAME WAV``: the audio analysis by hand.

    probe analyze call.wav --zone DE --prompts /var/lib/hotline-probe/prompts --json
    probe prompts add welcome welcome.wav -c /etc/hotline-probe/probe.toml

Exit codes follow the ``probe`` command: 0 done, 2 usage error (unreadable WAV, unknown zone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2


def add_parsers(sub: Any, default_config: str) -> None:
    """Register ``analyze`` and ``prompts`` on the ``probe`` command's sub-parsers."""
    an = sub.add_parser("analyze", help="hear a recorded call: tones, speech, prompts, quality")
    an.add_argument("wav", help="the recording (any WAV: PCM, float, µ-law, A-law; any rate)")
    an.add_argument("--zone", help="tone plan: ISO 3166 country code (default: none, name only "
                    "unambiguous patterns)")
    an.add_argument("--prompts", type=Path, help="directory of reference prompts <name>.wav")
    an.add_argument("--answer-at", type=float, metavar="S",
                    help="seconds into the recording where the call was answered")
    an.add_argument("--quality", choices=("visqol", "pesq", "off"), default="visqol",
                    help="full-reference score of the matched prompt (default visqol)")
    an.add_argument("--no-vad-model", action="store_true",
                    help="energy gate only (no Silero VAD)")
    an.add_argument("--json", action="store_true", help="print the analysis as JSON")
    an.set_defaults(func=cmd_analyze)

    pr = sub.add_parser("prompts", help="manage reference prompts")
    prsub = pr.add_subparsers(dest="prompts_command", required=True)
    add = prsub.add_parser("add", help="register a reference prompt (stored 8 kHz 16-bit)")
    add.add_argument("name", help="prompt name (letters, digits, '.', '_', '-')")
    add.add_argument("wav", help="the reference recording")
    add.add_argument("--prompts", type=Path, help="prompt directory (default: [audio] "
                     "prompts_dir, else <state_dir>/prompts of the configuration)")
    add.add_argument("-c", "--config", default=os.environ.get("PROBE_CONFIG", default_config),
                     help="configuration (only to find the prompt directory)")
    add.set_defaults(func=cmd_prompts_add)


def cmd_analyze(args: argparse.Namespace) -> int:
    from probe.audio.analysis import analyze
    from probe.audio.plans import countries
    from probe.audio.prompts import PromptLibrary
    from probe.audio.wavio import WavError, load_for_analysis

    zone = args.zone.upper() if args.zone else None
    if zone and zone not in countries():
        print(f"probe: --zone: no tone plan for {args.zone!r} (known: "
              f"{', '.join(countries())})", file=sys.stderr)
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
    import re

    from probe.audio.prompts import add_prompt
    from probe.audio.wavio import WavError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", args.name):
        print(f"probe: prompt name {args.name!r}: 1-64 letters, digits, '.', '_' or '-'",
              file=sys.stderr)
        return EXIT_USAGE
    directory = args.prompts
    if directory is None:
        from probe.config import load_config

        config = load_config(args.config)
        directory = config.audio.prompts_dir or config.probe.state_dir / "prompts"
    try:
        path = add_prompt(directory, args.name, args.wav)
    except (OSError, WavError, ValueError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"prompt {args.name!r} stored as {path}")
    return EXIT_OK


def summarize(doc: dict[str, Any]) -> str:
    """The analysis as a few human lines."""
    lines = [f"{doc['duration_s']:.1f} s of audio, zone {doc['zone'] or 'none'}"]
    for t in doc["tones"]:
        extra = f" code {t['sit_code']} ({t['sit_meaning']})" if t["sit_code"] else ""
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
    lines.append(f"  speech: {sp['total_s']} s in {len(sp['segments'])} segments "
                 f"({sp['method']})")
    lv = doc["level"]
    lines.append(f"  level {lv['rms_dbfs']} dBFS RMS, peak {lv['peak_dbfs']} dBFS, silence "
                 f"{lv['silence_ratio']:.0%}{', CLIPPED' if lv['clipped'] else ''}")
    pr = doc["prompts"]
    if pr:
        for m in pr["matched"]:
            cut = ", truncated" if m["truncated"] else ""
            lines.append(f"  prompt {m['name']!r} at {m['start_s']} s, score {m['score']}, "
                         f"heard {m['coverage']:.0%}{cut}")
        if pr["unknown_greeting"]:
            lines.append("  greeting matches no known prompt")
    fr = doc["quality"]["full_reference"]
    if fr:
        lines.append(f"  quality {fr['mos']} MOS-LQO ({fr['method']}) on {fr['prompt']!r}"
                     + (f": {fr['error']}" if fr["error"] else ""))
    return "\n".join(lines)
