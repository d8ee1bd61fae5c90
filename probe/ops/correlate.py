"""Correlation: the sites' results of one target, round by round, into judgements.

A pure function of its inputs (no database, no clock), so three instances given the same rows
reach the same judgements, and the tests drive it with hand-made rounds.

A **round** is a slice of ``round_s`` seconds of call start times; in each round every probe's
latest result per channel counts once.  Per round, over the probes that vote (not offline, not
silent; a channel whose result is ``local`` — the probe's own line, modem or SIM stopped it — is
kept out of the vote):

- **hotline-wide**: at least ``min_sites`` sites (or every site known in the window, when the
  target has fewer) and ``min_percent`` of the round's voting sites fail on every channel they
  tried.  Cause: the cause most of
  the failing results name (busy -> overload, rings out -> staffing, 5xx -> the server...).
  Sites whose calls got through but poorly (``degraded``) count for a *degraded* hotline-wide
  condition by the same thresholds.
- **path-specific** (when not hotline-wide): every result over one path fails — one GSM operator,
  the SIP trunk, the analog lines — while some other path reaches the hotline in the same round.
- **path-specific** needs as many failing sites as hotline-wide does (capped by the sites that
  use the path): one office alone failing over an operator the others use is that office.
- **site-local** (when not hotline-wide): a site fails on a channel while other sites get
  through, and its failure is not explained by a failing path; ``down`` when every channel
  fails there, ``degraded`` when another channel still works.

A condition becomes a judgement that an incident should be open when it holds in
``rounds_required`` of the latest ``rounds_window`` rounds that have results (the ThousandEyes
``roundsViolatingRequired`` of ``roundsViolatingOutOf`` model), and a judgement that it may be
resolved after ``recover_rounds`` rounds with results in a row where it did not hold.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from probe.diagnosis.rules import CAUSES, Verdict
from probe.ops.config import Correlation

EVIDENCE_MAX = 50


@dataclass(frozen=True)
class Vote:
    """One result, reduced to what correlation needs (see :mod:`probe.ops.messages`)."""

    result_id: str
    probe_id: str
    site: str | None
    channel: str
    path: str
    vote: str  # ok / degraded / fail / local
    cause: str | None
    started_at: float  # epoch seconds
    final: str | None = None  # the network's final answer ("503 Service Unavailable")
    cause_detail: Mapping[str, Any] | None = None  # the probe's evidence for ``cause``


@dataclass(frozen=True)
class Condition:
    """What one round says about one key."""

    key: str
    scope: str  # hotline / path / site
    subject: str
    severity: str  # down / degraded
    cause: str
    sites: tuple[str, ...]
    evidence: tuple[str, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """A key across the window: whether an incident should be open, and the latest evidence."""

    key: str
    target: str
    scope: str
    subject: str
    severity: str
    cause: str
    sites: tuple[str, ...]
    evidence: tuple[str, ...]
    detail: Mapping[str, Any]
    violating_rounds: int  # of the latest rounds_window rounds with results
    good_rounds: int  # rounds with results in a row, newest first, where it did not hold
    holds_now: bool  # it holds in the newest round with results
    latest_round: int
    should_open: bool
    may_resolve: bool


def round_of(started_at: float, round_s: float) -> int:
    return math.floor(started_at / round_s)


def rounds(votes: Iterable[Vote], round_s: float) -> dict[int, dict[tuple[str, str], Vote]]:
    """round -> (probe, channel) -> that probe's latest result on that channel in the round."""
    out: dict[int, dict[tuple[str, str], Vote]] = {}
    for v in votes:
        cell = out.setdefault(round_of(v.started_at, round_s), {})
        key = (v.probe_id, v.channel)
        if key not in cell or (cell[key].started_at, cell[key].result_id) < (v.started_at,
                                                                           v.result_id):
            cell[key] = v
    return out


@dataclass(frozen=True)
class Known:
    """The sites that voted anywhere in the window: overall and per path.  A round still
    filling up must not call the hotline down on the first site that reports, so the
    threshold is ``min(min_sites, sites known in the window)``, not the round's count."""

    sites: int = 0
    per_path: Mapping[str, int] = field(default_factory=dict)


def known_sites(cells: Iterable[Mapping[tuple[str, str], Vote]],
                excluded: Iterable[str] = ()) -> Known:
    skip = set(excluded)
    sites: set[str] = set()
    paths: dict[str, set[str]] = {}
    for cell in cells:
        for (probe, _), v in cell.items():
            if probe in skip or v.vote == "local":
                continue
            sites.add(probe)
            paths.setdefault(v.path, set()).add(probe)
    return Known(len(sites), {p: len(s) for p, s in paths.items()})


def conditions(target: str, cell: Mapping[tuple[str, str], Vote], c: Correlation,
               excluded: Iterable[str] = (), known: Known | None = None) -> list[Condition]:
    """Every condition one round shows for ``target`` (see the module docstring)."""
    skip = set(excluded)
    voting = [v for (probe, _), v in sorted(cell.items())
              if probe not in skip and v.vote != "local"]
    by_site: dict[str, list[Vote]] = {}
    for v in voting:
        by_site.setdefault(v.probe_id, []).append(v)
    if not by_site:
        return []
    failing = sorted(s for s, vs in by_site.items() if all(v.vote == "fail" for v in vs))
    poor = sorted(s for s, vs in by_site.items()
                  if s not in failing and all(v.vote in ("fail", "degraded") for v in vs))
    reporting = len(by_site)
    known = known or known_sites([cell], skip)
    found: list[Condition] = []
    wide = _hotline_wide(target, failing, poor, by_site, reporting, max(known.sites, reporting),
                         c)
    if wide is not None:
        return [wide]
    failing_paths = _paths(target, voting, known, c)
    found.extend(failing_paths)
    explained = {p.subject for p in failing_paths}
    succeeding = [s for s, vs in by_site.items() if any(v.vote in ("ok", "degraded")
                                                        for v in vs)]
    for site, votes in sorted(by_site.items()):
        bad = [v for v in votes if v.vote == "fail" and v.path not in explained]
        if not bad or not [s for s in succeeding if s != site]:
            continue
        whole = len(bad) == len(votes)  # every channel fails there: callers there are cut off
        found.append(Condition(
            key=f"site:{target}:{site}", scope="site", subject=site,
            severity=Verdict.DOWN.value if whole else Verdict.DEGRADED.value,
            cause="site.local_failure", sites=(site,), evidence=tuple(v.result_id for v in bad),
            detail={"site": votes[0].site or site, "probe": site, "seen_cause": _leading(bad),
                    "channels": sorted({v.channel for v in bad}),
                    "others_ok": len([s for s in succeeding if s != site])}))
    return found


def _hotline_wide(target: str, failing: list[str], poor: list[str],
                  by_site: Mapping[str, list[Vote]], reporting: int, known: int,
                  c: Correlation) -> Condition | None:
    need = min(c.min_sites, known)

    def enough(n: int) -> bool:
        return n >= max(need, 1) and 100.0 * n / reporting >= c.min_percent

    if enough(len(failing)):
        sites, severity = failing, Verdict.DOWN.value
    elif enough(len(failing) + len(poor)) and poor:
        sites, severity = sorted(failing + poor), Verdict.DEGRADED.value
    else:
        return None
    votes = [v for s in sites for v in by_site[s] if v.vote in ("fail", "degraded")]
    cause = _leading(votes)
    # The placeholders of the cause's own text ("{channel}", "{code} {reason}"), from one of
    # the results that name it.
    evidence = next((dict(v.cause_detail) for v in votes
                     if v.cause == cause and v.cause_detail), {})
    if severity == Verdict.DOWN.value:
        spec = CAUSES.get(cause)
        severity = spec.severity.value if spec is not None else severity
    return Condition(
        key=f"hotline:{target}", scope="hotline", subject="*", severity=severity, cause=cause,
        sites=tuple(sites), evidence=tuple(v.result_id for v in votes)[:EVIDENCE_MAX],
        detail={**evidence, "failing_sites": len(sites), "reporting_sites": reporting,
                "causes": dict(Counter(v.cause or "?" for v in votes).most_common()),
                "min_sites": c.min_sites, "min_percent": c.min_percent})


def _paths(target: str, voting: Sequence[Vote], known: Known,
           c: Correlation) -> list[Condition]:
    by_path: dict[str, list[Vote]] = {}
    for v in voting:
        by_path.setdefault(v.path, []).append(v)
    working = {p for p, vs in by_path.items() if any(v.vote in ("ok", "degraded") for v in vs)}
    found = []
    for path, votes in sorted(by_path.items()):
        if any(v.vote != "fail" for v in votes) or not (working - {path}):
            continue
        sites = {v.probe_id for v in votes}
        if len(sites) < min(c.min_sites, known.per_path.get(path, len(sites))):
            continue  # one site alone on a path used by several: that site, not the path
        channel, _, operator = path.partition(":")
        cause = "carrier.sip_trunk" if channel == "sip" else "carrier.path_failure"
        outcomes = Counter(v.cause or "?" for v in votes).most_common(1)[0][0]
        final = Counter(v.final or "?" for v in votes).most_common(1)[0][0]
        found.append(Condition(
            key=f"path:{target}:{path}", scope="path", subject=path,
            severity=Verdict.DOWN.value, cause=cause,
            sites=tuple(sorted({v.probe_id for v in votes})),
            evidence=tuple(v.result_id for v in votes)[:EVIDENCE_MAX],
            detail={"channel": operator or _channel_name(channel), "path": path,
                    "outcome": outcomes, "code": final, "reason": "",
                    "working_paths": sorted(working - {path})}))
    return found


def _channel_name(channel: str) -> str:
    return {"sip": "SIP", "gsm": "GSM", "analog": "the analog lines"}.get(channel, channel)


def _leading(votes: Sequence[Vote]) -> str:
    """The cause most of these results name (ties: the catalogue's order, so it is stable)."""
    counts = Counter(v.cause for v in votes if v.cause)
    if not counts:
        return "hotline.unavailable"
    order = {code: i for i, code in enumerate(CAUSES)}
    return min(counts, key=lambda code: (-counts[code], order.get(code, len(order)), code))


def judge(target: str, votes: Iterable[Vote], c: Correlation, *,
          excluded: Iterable[str] = (), open_keys: Iterable[str] = ()) -> list[Judgement]:
    """Judgements for every key that holds in some round of the window or has an open
    incident (``open_keys``: so an open incident learns it may resolve)."""
    skip = set(excluded)
    by_round = rounds(votes, c.round_s)
    lookback = max(c.rounds_window, c.recover_rounds)
    # Newest first; only rounds in which someone voted count (a round of local faults alone,
    # or of excluded probes, says nothing: neither violating nor good).
    seen = sorted((r for r, cell in by_round.items()
                   if any(p not in skip and v.vote != "local" for (p, _), v in cell.items())),
                  reverse=True)[:lookback]
    if not seen:
        return []
    known = known_sites((by_round[r] for r in seen), skip)
    per_round = {r: {cond.key: cond for cond in conditions(target, by_round[r], c, skip, known)}
                 for r in seen}
    keys = {k for conds in per_round.values() for k in conds} | set(open_keys)
    window = seen[:c.rounds_window]
    out = []
    for key in sorted(keys):
        holding = [r for r in window if key in per_round[r]]
        good = 0
        for r in seen:
            if key in per_round[r]:
                break
            good += 1
        latest = next((per_round[r][key] for r in seen if key in per_round[r]), None)
        violating = len(holding)
        scope, subject = _scope_subject(key)
        out.append(Judgement(
            key=key, target=target, scope=latest.scope if latest else scope,
            subject=latest.subject if latest else subject,
            severity=latest.severity if latest else Verdict.DOWN.value,
            cause=latest.cause if latest else "",
            sites=latest.sites if latest else (), evidence=_evidence(per_round, holding, key),
            detail=dict(latest.detail) if latest else {}, violating_rounds=violating,
            good_rounds=good, holds_now=key in per_round[seen[0]], latest_round=seen[0],
            should_open=violating >= c.rounds_required,
            may_resolve=good >= c.recover_rounds))
    return out


def _evidence(per_round: Mapping[int, Mapping[str, Condition]], holding: Sequence[int],
              key: str) -> tuple[str, ...]:
    ids: list[str] = []
    for r in holding:
        ids.extend(i for i in per_round[r][key].evidence if i not in ids)
    return tuple(ids[:EVIDENCE_MAX])


def _scope_subject(key: str) -> tuple[str, str]:
    scope, _, rest = key.partition(":")
    _, _, subject = rest.partition(":")
    return scope, subject or "*"


# --------------------------------------------------------------------------- probe-local


@dataclass(frozen=True)
class LocalJudgement:
    """A probe's own fault on one channel, from its latest results on that channel (any
    target): open after ``rounds_required`` local results in a row, resolvable after
    ``recover_rounds`` results in a row that were not local."""

    key: str
    probe_id: str
    channel: str
    cause: str
    evidence: tuple[str, ...]
    should_open: bool
    may_resolve: bool


def judge_local(probe_id: str, channel: str, newest_first: Sequence[Vote],
                c: Correlation) -> LocalJudgement:
    local_run = 0
    for v in newest_first:
        if v.vote != "local":
            break
        local_run += 1
    good_run = 0
    for v in newest_first:
        if v.vote == "local":
            break
        good_run += 1
    latest_local = next((v for v in newest_first if v.vote == "local"), None)
    return LocalJudgement(
        key=f"probe:{probe_id}:{channel}", probe_id=probe_id, channel=channel,
        cause=(latest_local.cause if latest_local and latest_local.cause else "probe.error"),
        evidence=tuple(v.result_id for v in newest_first[:local_run])[:EVIDENCE_MAX],
        should_open=local_run >= c.rounds_required, may_resolve=good_run >= c.recover_rounds)
