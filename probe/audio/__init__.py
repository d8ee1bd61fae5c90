"""Hearing a telephone call: pure functions over 8 kHz sample arrays.

=====================  ==================================================================
module                 role
=====================  ==================================================================
``wavio``, ``g711``    WAV files (PCM, float, µ-law, A-law) to floats; G.711 companding
``frames``             the 40 ms / 10 ms spectra every detector shares, computed once
``tones``              steady-tone segments and their exact components
``plans``              call-progress tone plans of 45 countries (ITU-T E.180 supplement)
``cadence``            on/off pattern matching (busy vs congestion is a cadence question)
``progress``           tone segments -> named call-progress events, with or without a zone
``sit``                Special Information Tones, ITU and North American codes
``dtmf``               DTMF generation and a Q.24 detector
``speech``             energy gate + tone mask + a sampled Silero VAD
``levels``             RMS / peak, clipping, silence, dead air, one-way audio
``prompts``            known-prompt fingerprints with alignment (which, where, how much)
``quality``            full-reference MOS (ViSQOL by default, PESQ optional), dropouts
``emodel``             ITU-T G.107 R-factor and MOS from RTP statistics
``analysis``           all of the above for one call -> the result's ``analysis`` object
``call``               a recorded call (timeline + WAV + RTP stats) -> its analysis
``cli``                ``probe analyze`` and ``probe prompts add``
``synth``, ``corpus``  synthetic audio and scored corpora for tests, benchmarks, simulator
=====================  ==================================================================
"""

from typing import Any

__all__ = ["RtpFacts", "analyze", "analyze_file"]


def __getattr__(name: str) -> Any:
    # Imported on first use (PEP 562): the analysis pulls numpy, scipy and the models, and
    # every `probe` command builds its parser from probe.audio.cli (`probe --version` must not
    # pay for them).
    if name in __all__:
        from probe.audio import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module 'probe.audio' has no attribute {name!r}")
