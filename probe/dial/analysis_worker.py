"""The call's analysis in a short-lived process, so the daemon never holds the analysis stack.

Hearing a call loads numpy, scipy, the Silero model and the prompt library: about 85 MiB that
the daemon would keep for the rest of its life, between calls that are minutes apart (a 1 GB
Pi also runs the modem, pjsip and the broker client).  The daemon instead starts a Python
running :func:`serve` here: the request (the call record and the analysis
options) goes in pickled on stdin, the analysis and the worker's log records come back pickled
on stdout, and the memory is the kernel's again when it exits.  The price is the start of one
interpreter and those imports for every call, which the daemon's in-process analysis paid only
once (tests/benchmarks/bench_footprint.py prints both).

Only the probe's own daemon talks to this module, through a pipe to its own child: pickle is
used for that reason (the record and the analysis are plain data, and come back as they were).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from probe.results.timeline import CallRecord

log = logging.getLogger(__name__)

# Under the daemon's watchdog (a worker silent for 3 minutes is restarted): a stuck analysis
# is killed first, and the call's result is kept with analysis null.
TIMEOUT_S = 150.0
# By import, not ``-m``: the Reply it pickles must be this module's class, not ``__main__``'s
SERVE = f"import sys; from {__name__} import serve; sys.exit(serve())"


@dataclass(frozen=True)
class Reply:
    """What the worker sends back: the analysis (or why there is none) and what it logged."""

    analysis: dict[str, Any] | None
    error: str | None = None  # the exception and its traceback, when analyze_record raised
    logs: list[tuple[str, int, str]] = field(default_factory=list)  # (logger, level, text)


def analyze_in_worker(record: CallRecord, options: dict[str, Any],
                      timeout_s: float = TIMEOUT_S) -> dict[str, Any] | None:
    """``analyze_record(record, **options)`` in a child process.  A failure there is logged
    here and gives None, as a failure of the in-process analysis does: the result is kept."""
    # The observer watches the live call (progress lines): it stays with the daemon
    request = pickle.dumps((dataclasses.replace(record, observer=None), options))
    try:
        # stderr is the daemon's (the journal): a crash of native code there still says why
        done = subprocess.run([sys.executable, "-c", SERVE], input=request,
                              stdout=subprocess.PIPE, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.error("audio analysis of %s took over %.0f s: stopped, analysis left null",
                  record.audio_path, timeout_s)
        return None
    except OSError as exc:  # no interpreter to start (fork refused, out of memory)
        log.error("audio analysis of %s: cannot start its worker: %s", record.audio_path, exc)
        return None
    try:
        reply = pickle.loads(done.stdout)
    except Exception:  # nothing or half a reply: the worker died
        log.error("audio analysis worker for %s ended with exit code %s and no answer",
                  record.audio_path, done.returncode)
        return None
    for name, level, text in reply.logs:  # its lines go out as the daemon's own
        logging.getLogger(name).log(level, "%s", text)
    if reply.error is not None:
        log.error("audio analysis of %s failed: %s", record.audio_path, reply.error)
    return reply.analysis


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append((record.name, record.levelno, text))


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers: unpickling one would load numpy into
    the daemon, the very thing the worker is for (the result is JSON either way)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # scalar or array
        return value.tolist()
    return value


def serve() -> int:
    """The worker: one request on stdin, one :class:`Reply` on stdout."""
    import traceback

    # The reply gets stdout to itself: whatever else prints there (native code too) goes to
    # stderr, the journal, instead of into the pickle
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.INFO)
    record, options = pickle.loads(sys.stdin.buffer.read())
    try:
        from probe.audio.call import analyze_record

        reply = Reply(_plain(analyze_record(record, **options)), logs=collect.lines)
    except Exception as exc:
        reply = Reply(None, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                      logs=collect.lines)
    with os.fdopen(reply_fd, "wb") as out:
        out.write(pickle.dumps(reply))
    return 0
