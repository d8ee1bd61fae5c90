"""The memory behind the diagnosis: each target's latest result per channel, and its history.

A *cycle* of a target is one result per channel (SIP, GSM, analog run side by side).  Each
result is diagnosed as it arrives, together with the other channels' results of the same cycle
(or of the previous one, while still recent), so every published result carries the cross-path
verdict known at that moment.  When the cycle is complete (or a channel reports again before the
others did), whether the hotline failed in it is appended to the target's history, which the
N-of-M rule reads.  History survives restarts (``<state_dir>/verdicts.json``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.config.model import Target
from probe.diagnosis.rules import Diagnosis, ProbeFacts, Verdict, diagnose

log = logging.getLogger("probe.diagnosis.history")

HISTORY_KEEP = 20


@dataclass
class _TargetState:
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # this cycle, by channel
    last: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # (mono, doc)
    history: list[bool] = field(default_factory=list)
    verdict: dict[str, Any] | None = None  # the latest diagnosis, for the retained status


class VerdictBook:
    def __init__(self, path: Path | None, language: str = "en",
                 clock=time.monotonic) -> None:
        self.path = path
        self.language = language
        self.clock = clock
        self.lock = threading.Lock()
        self.targets: dict[str, _TargetState] = {}
        self.save_error: str | None = None  # the last failed save, until one works
        self._load()

    def assess(self, doc: dict[str, Any], target: Target, facts: ProbeFacts) -> Diagnosis:
        """Diagnose ``doc`` (a fresh result of ``target``) in the light of the other channels."""
        with self.lock:
            state = self.targets.setdefault(target.name, _TargetState())
            channel = doc["channel"]
            if channel in state.pending:  # the previous cycle never completed: close it
                self._close(state, self._diagnose(list(state.pending.values()), target,
                                                  facts, state))
            state.pending[channel] = doc
            now = self.clock()
            state.last[channel] = (now, doc)
            recent = now - 2 * target.interval_s
            cycle = [state.pending.get(c) or _recent(state.last.get(c), recent)
                     for c in target.channels]
            results = [d for d in cycle if d is not None]
            result = self._diagnose(results, target, facts, state)
            state.verdict = {"verdict": str(result.verdict), "summary": result.summary,
                             "causes": [c["code"] for c in result.causes],
                             "at": doc.get("ended_at"), "channels": result.channels,
                             "last_call": last_call(doc)}
            if set(state.pending) >= set(target.channels):
                self._close(state, result)  # complete: this diagnosis is the cycle's own
            return result

    def status(self) -> dict[str, dict[str, Any]]:
        """target -> its latest verdict (for the retained status message)."""
        with self.lock:
            return {name: s.verdict for name, s in self.targets.items() if s.verdict}

    def _diagnose(self, results: list[dict[str, Any]], target: Target, facts: ProbeFacts,
                  state: _TargetState) -> Diagnosis:
        limits = {"max_post_dial_delay_ms": target.expect.max_post_dial_delay_ms,
                  "max_ring_s": target.expect.max_ring_s}
        return diagnose(results, facts, limits, target.diagnose, state.history, self.language)

    def _close(self, state: _TargetState, result: Diagnosis) -> None:
        """End the cycle: whether the hotline failed in it joins the history."""
        if result.verdict != Verdict.UNKNOWN:  # a cycle the probe could not test says nothing
            failed = result.verdict == Verdict.DOWN or any(
                c["code"] == "diagnosis.transient" for c in result.causes)
            state.history = [*state.history, failed][-HISTORY_KEEP:]
        state.pending = {}
        self._save()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            for name, history in data.get("history", {}).items():
                self.targets[name] = _TargetState(history=[bool(x) for x in history])
        except (ValueError, AttributeError, OSError) as exc:
            log.error("ignoring unreadable verdict history %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"history": {name: s.history for name, s in self.targets.items()}}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as exc:  # disk full, read-only: the history lives on in memory, the
            # result that brought it here is kept, and the next save tries again
            self.save_error = f"{type(exc).__name__}: {exc}"
            log.error("verdict history not saved to %s: %s", self.path, exc,
                      extra={"event": "storage_error", "path": str(self.path),
                             "error": self.save_error})
            tmp.unlink(missing_ok=True)
            return
        self.save_error = None


def last_call(doc: dict[str, Any]) -> dict[str, Any]:
    """The figures of a result that the retained status carries for its target: a glance at
    the last call for whoever reads only the status (Home Assistant's sensors,
    probe/uplink/homeassistant.py), the result itself being on the result topic."""
    quality = (doc.get("analysis") or {}).get("quality") or {}
    # A measured prompt beats the E-model estimate (as the ops service ranks them).
    mos = next((score["mos"] for key in ("full_reference", "emodel")
                if isinstance(score := quality.get(key), dict)
                and isinstance(score.get("mos"), int | float)), None)
    return {"id": doc.get("id"), "at": doc.get("ended_at"), "channel": doc.get("channel"),
            "outcome": doc.get("outcome"),
            "met": (doc.get("expectations") or {}).get("met"),
            "post_dial_delay_ms": (doc.get("timings_ms") or {}).get("post_dial_delay"),
            "mos": mos}


def _recent(entry: tuple[float, dict[str, Any]] | None, since: float) -> dict[str, Any] | None:
    if entry is None or entry[0] < since:
        return None
    return entry[1]
