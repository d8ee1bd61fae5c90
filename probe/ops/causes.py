"""Causes only ops can name, and the text of any cause in the reader's language.

The probe's catalogue (:data:`probe.diagnosis.rules.CAUSES`) names what one probe can tell.  Across
sites ops can tell more: that one office fails while the others get through, that a probe went
quiet.  Those causes are declared here in the same shape, and their English texts are msgids in
the same gettext catalogs (``probe/locale/<lang>/LC_MESSAGES/probe.po``), so a remedy reads the
same in a notification, the console and the probe's own result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probe.diagnosis.i18n import translator
from probe.diagnosis.rules import CAUSES, Actor, CauseSpec, Scope, Verdict

OPS_CAUSES: dict[str, CauseSpec] = {
    "site.local_failure": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "Only {site} cannot reach the hotline ({seen_cause}) while {others_ok} other site(s) "
        "get through: the office's own line, equipment or local carrier.",
        "Check the office's line, router and the probe there; if they are fine, raise a "
        "ticket with that office's carrier."),
    "probe.offline": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The probe at {site} is offline ({reason}): the hotline is not being watched from "
        "there.",
        "Check the probe's power and the office's network; the probe keeps its results and "
        "sends them when it is back."),
    "probe.silent": CauseSpec(
        "local", Actor.BRANCH, Scope.PROBE, Verdict.DOWN,
        "The probe at {site} has sent no result for {silent_min} minutes although it is "
        "connected.",
        "Look at the probe's health page and its journal (journalctl -u hotline-probe); "
        "restart it if it is stuck."),
}

ALL_CAUSES: Mapping[str, CauseSpec] = {**CAUSES, **OPS_CAUSES}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def describe(code: str, detail: Mapping[str, Any], language: str = "en") -> tuple[str, str]:
    """(summary, remedy) of ``code`` in ``language``, placeholders filled from ``detail``
    ("?" for what the evidence lacks)."""
    spec = ALL_CAUSES.get(code)
    if spec is None:
        return code, ""
    _ = translator(language)
    return _fill(_(spec.summary), detail), _fill(_(spec.remedy), detail)


def _fill(template: str, detail: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Blank(detail))
    except (ValueError, IndexError, AttributeError, KeyError):
        # A malformed placeholder ("{a.b}", "{0}") must not stop a notification or a page.
        return template
