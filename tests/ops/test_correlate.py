"""Correlation as a pure function: hand-made rounds of votes in, judgements out."""

from __future__ import annotations

import pytest

from probe.ops.config import Correlation
from probe.ops.correlate import Vote, conditions, judge, judge_local, rounds

R = 300.0
C = Correlation(round_s=R, min_sites=2, min_percent=0, rounds_required=2, rounds_window=3,
                recover_rounds=2)


def v(probe: str, vote: str, *, rnd: int = 0, channel: str = "sip", path: str | None = None,
      cause: str | None = None, final: str | None = None, at: float = 1.0) -> Vote:
    cause = cause or {"fail": "hotline.busy", "local": "line.no_voltage"}.get(vote)
    return Vote(f"{probe}-{channel}-{rnd}-{at}", probe, f"Office {probe}", channel,
                path or channel, vote, cause, 1000 * R + rnd * R + at, final)


def keys(conds: list) -> list[str]:
    return [c.key for c in conds]


def cell(*votes: Vote) -> dict:
    return next(iter(rounds(votes, R).values()))


def test_every_site_failing_is_the_hotline() -> None:
    found = conditions("support", cell(v("a", "fail"), v("b", "fail"), v("c", "fail")), C)
    assert keys(found) == ["hotline:support"]
    assert found[0].cause == "hotline.busy" and found[0].severity == "down"
    assert found[0].sites == ("a", "b", "c")


def test_one_site_failing_is_that_site_not_the_hotline() -> None:
    found = conditions("support", cell(v("a", "fail"), v("b", "ok"), v("c", "ok")), C)
    assert keys(found) == ["site:support:a"]
    assert found[0].detail["others_ok"] == 2 and found[0].severity == "down"


def test_a_round_still_filling_does_not_call_the_hotline_down_on_one_site() -> None:
    """Three sites are known from earlier rounds; in the newest only one has reported yet."""
    older = [v(p, "ok", rnd=0) for p in "abc"]
    newest = [v("a", "fail", rnd=1)]
    judgements = judge("support", older + newest, C)
    assert [j.key for j in judgements] == []


def test_a_lone_site_target_is_judged_by_its_only_site() -> None:
    judgements = judge("support", [v("a", "fail", rnd=r) for r in range(2)], C)
    assert [(j.key, j.should_open) for j in judgements] == [("hotline:support", True)]


def test_path_failure_needs_the_other_paths_to_work() -> None:
    votes = [v("a", "fail", channel="gsm", path="gsm:Orange"),
             v("b", "fail", channel="gsm", path="gsm:Orange"),
             v("a", "ok"), v("b", "ok")]
    found = conditions("support", cell(*votes), C)
    assert keys(found) == ["path:support:gsm:Orange"]
    assert found[0].cause == "carrier.path_failure" and found[0].detail["channel"] == "Orange"


def test_sip_trunk_names_the_network_answer() -> None:
    votes = [v(p, "fail", cause="carrier.congestion", final="503 Service Unavailable")
             for p in "ab"] + [v(p, "ok", channel="gsm", path="gsm:X") for p in "ab"]
    found = conditions("support", cell(*votes), C)
    assert keys(found) == ["path:support:sip"]
    assert found[0].cause == "carrier.sip_trunk"
    assert found[0].detail["code"] == "503 Service Unavailable"


def test_one_site_alone_on_a_shared_operator_is_the_site() -> None:
    """Orange works at b, fails at a: a's own cell or modem, not Orange."""
    votes = [v("a", "fail", channel="gsm", path="gsm:Orange"), v("a", "ok"),
             v("b", "ok", channel="gsm", path="gsm:Orange"), v("b", "ok")]
    found = conditions("support", cell(*votes), C)
    assert keys(found) == ["site:support:a"]
    assert found[0].severity == "degraded"  # SIP still works there
    assert found[0].detail["channels"] == ["gsm"]


def test_local_faults_and_absent_probes_do_not_vote() -> None:
    votes = [v("a", "local", channel="analog"), v("b", "fail"), v("c", "fail"), v("d", "ok")]
    # b and c fail, d works: with a out of the vote that is 2 of 3 -> the hotline
    assert keys(conditions("support", cell(*votes), C)) == ["hotline:support"]
    # d offline: b and c are every voter
    found = conditions("support", cell(*votes), C, excluded={"b"})
    assert keys(found) == ["site:support:c"]


def test_min_percent_is_of_the_sites_that_reported() -> None:
    c = Correlation(round_s=R, min_sites=1, min_percent=50)
    votes = [v("a", "fail")] + [v(p, "ok") for p in "bcd"]
    assert keys(conditions("support", cell(*votes), c)) == ["site:support:a"]
    votes = [v("a", "fail"), v("b", "fail")] + [v(p, "ok") for p in "cd"]
    assert keys(conditions("support", cell(*votes), c)) == ["hotline:support"]


def test_degraded_everywhere_is_a_degraded_hotline() -> None:
    votes = [v(p, "degraded", cause="quality.low_mos") for p in "abc"]
    found = conditions("support", cell(*votes), C)
    assert [(c.key, c.severity, c.cause) for c in found] == [
        ("hotline:support", "degraded", "quality.low_mos")]


def test_n_of_m_rounds_and_recovery() -> None:
    down = [v(p, "fail", rnd=0) for p in "ab"]
    up = [v(p, "ok", rnd=1) for p in "ab"]
    again = [v(p, "fail", rnd=2) for p in "ab"]
    (j,) = judge("support", down, C)
    assert (j.violating_rounds, j.should_open) == (1, False)
    (j,) = judge("support", down + up + again, C)
    assert (j.violating_rounds, j.should_open, j.good_rounds) == (2, True, 0)
    later = [v(p, "ok", rnd=r) for p in "ab" for r in (3, 4)]
    (j,) = judge("support", down + up + again + later, C, open_keys={"hotline:support"})
    assert (j.good_rounds, j.may_resolve, j.holds_now) == (2, True, False)


def test_latest_result_per_probe_and_channel_wins_in_a_round() -> None:
    votes = [v("a", "fail", at=1), v("a", "ok", at=200), v("b", "fail", at=1)]
    assert keys(conditions("support", cell(*votes), C)) == ["site:support:b"]


@pytest.mark.parametrize(("sequence", "opens", "resolves"), [
    (["local", "local", "ok"], True, False),
    (["ok", "ok", "local"], False, True),
    (["local", "ok", "local"], False, False),
])
def test_probe_local_fault_needs_consecutive_results(sequence: list[str], opens: bool,
                                                    resolves: bool) -> None:
    newest_first = [v("a", s, channel="analog", at=10 - i) for i, s in enumerate(sequence)]
    j = judge_local("a", "analog", newest_first, C)
    assert (j.should_open, j.may_resolve) == (opens, resolves)
    assert j.key == "probe:a:analog"
