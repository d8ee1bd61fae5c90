"""The exit codes of ``probe call``, ``probe run --once`` and ``probe analyze``: one meaning each,
so that automation can tell a failing hotline from a probe that could not judge it.

=====  =====================================================================================
  0    the hotline met the target's expectations (``analyze``: the recording was analysed)
  1    the hotline failed: it was reached and did not meet them
  2    usage or configuration error (every problem printed with its key path)
  3    the probe could not judge: verdict ``unknown``, or a probe-side fault (SIP stack or modem
       would not start, the call could not be placed)
 70    the probe crashed (EX_SOFTWARE): an unexpected exception, one line on stderr; ``-v`` shows
       the traceback
130    interrupted (Ctrl-C, SIGINT: 128 + 2 as the shell reports it); a call in progress is
       hung up, one line on stderr, no traceback
=====  =====================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EXIT_OK = 0
EXIT_HOTLINE_FAILED = 1
EXIT_USAGE = 2
EXIT_UNJUDGED = 3
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell shows for a command stopped by Ctrl-C

EPILOG = """exit codes:
  0   the hotline met the target's expectations
  1   the hotline failed (reached, and did not meet them)
  2   usage or configuration error
  3   the probe could not judge (verdict unknown, or a probe-side fault)
  70  the probe crashed (one line on stderr; probe -v ... shows the traceback)
  130 interrupted (Ctrl-C)"""

ANALYZE_EPILOG = """exit codes:
  0   the recording was analysed
  2   usage error (unreadable WAV, unknown zone, no prompt directory)
  70  the probe crashed (one line on stderr; probe -v ... shows the traceback)
  (1 and 3 do not arise: a recording alone carries no expectations to fail)"""

USAGE_EPILOG = """exit codes:
  0   done
  2   usage or configuration error
  70  the probe crashed (one line on stderr; probe -v ... shows the traceback)
  130 interrupted (Ctrl-C)"""


def result_exit_code(doc: dict[str, Any]) -> int:
    """The exit code one result document stands for.

    >>> result_exit_code({"outcome": "failed", "expectations": {"met": False}})
    3
    """
    diagnosis = doc.get("diagnosis") or {}
    if diagnosis.get("verdict") == "unknown" or doc["outcome"] == "failed":
        return EXIT_UNJUDGED
    return EXIT_OK if doc["expectations"]["met"] else EXIT_HOTLINE_FAILED


def combined_exit_code(codes: Iterable[int]) -> int:
    """One code for several calls (``probe run --once``): any hotline failure wins, then any
    call the probe could not judge; no call at all is a probe that could not judge.

    >>> combined_exit_code([0, 3, 1]), combined_exit_code([0, 3]), combined_exit_code([])
    (1, 3, 3)
    """
    seen = set(codes)
    if not seen:
        return EXIT_UNJUDGED
    for code in (EXIT_HOTLINE_FAILED, EXIT_UNJUDGED):
        if code in seen:
            return code
    return EXIT_OK
